package cdr

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
)

// Exports write their rows through an Encoder, in one of three formats:
//
//   - CSV: a header row, then one row per CDR (RFC 4180 quoting, LF line
//     ends, times RFC 3339 UTC, recording ids joined with ";").
//   - NDJSON: one Record per line.
//   - JSON: one array of Records, closed by Close (an empty result is []).
//
// An encoder holds one row and one write buffer, however many rows pass
// through it, so an export of any size runs in constant memory.

// Encoder writes CDRs as the rows of one export document.
type Encoder interface {
	// Encode writes c as the next row.
	Encode(c *cdrv1.Cdr) error
	// Flush sends the buffered rows on to the writer, so a streaming
	// response can hand each batch to the client as it arrives.
	Flush() error
	// Close ends the document (the closing bracket of a JSON array) and
	// flushes. It does not close the writer. A document whose encoder was
	// never closed is visibly incomplete where its format allows it: a
	// JSON array lacks its closing bracket.
	Close() error
}

var errEncoderClosed = errors.New("cdr: encode after close")

// bufferSize is the write buffer of an encoder: large enough that a
// network write carries many rows, small enough to be no concern.
const bufferSize = 32 << 10

// csvColumns are the CSV columns, in order.
var csvColumns = []string{
	"id", "call_id", "reseller", "domain", "user", "direction", "from", "to",
	"started_at", "answered_at", "ended_at", "duration_s", "billable_s",
	"disposition", "recording_ids", "accepted_at",
}

// CSVHeader returns the CSV header row (a fresh copy).
func CSVHeader() []string { return append([]string(nil), csvColumns...) }

// CSVRecordingSeparator joins a CDR's recording ids in one CSV field.
const CSVRecordingSeparator = ";"

// ParseFormat reads the name of an export format: json, ndjson or csv
// (case-insensitive).
func ParseFormat(s string) (cdrv1.ExportFormat, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "json":
		return cdrv1.ExportFormat_EXPORT_FORMAT_JSON, nil
	case "ndjson":
		return cdrv1.ExportFormat_EXPORT_FORMAT_NDJSON, nil
	case "csv":
		return cdrv1.ExportFormat_EXPORT_FORMAT_CSV, nil
	}
	return cdrv1.ExportFormat_EXPORT_FORMAT_UNSPECIFIED, fmt.Errorf("must be json, ndjson or csv, not %q", s)
}

// FormatName is the name ParseFormat reads for f; empty for a format
// callvault does not write.
func FormatName(f cdrv1.ExportFormat) string {
	switch f {
	case cdrv1.ExportFormat_EXPORT_FORMAT_JSON:
		return "json"
	case cdrv1.ExportFormat_EXPORT_FORMAT_NDJSON:
		return "ndjson"
	case cdrv1.ExportFormat_EXPORT_FORMAT_CSV:
		return "csv"
	}
	return ""
}

// ContentType is the media type of a document in format f.
func ContentType(f cdrv1.ExportFormat) string {
	switch f {
	case cdrv1.ExportFormat_EXPORT_FORMAT_JSON:
		return "application/json"
	case cdrv1.ExportFormat_EXPORT_FORMAT_NDJSON:
		return "application/x-ndjson"
	case cdrv1.ExportFormat_EXPORT_FORMAT_CSV:
		return "text/csv; charset=utf-8; header=present"
	}
	return "application/octet-stream"
}

// Extension is the file name extension of format f, without its dot.
func Extension(f cdrv1.ExportFormat) string {
	if n := FormatName(f); n != "" {
		return n
	}
	return "bin"
}

// NewEncoder returns an encoder writing format f to w. Nothing reaches w
// before the first Flush or Close.
func NewEncoder(w io.Writer, f cdrv1.ExportFormat) (Encoder, error) {
	switch f {
	case cdrv1.ExportFormat_EXPORT_FORMAT_CSV:
		return newCSVEncoder(w)
	case cdrv1.ExportFormat_EXPORT_FORMAT_NDJSON:
		return newJSONEncoder(w, false), nil
	case cdrv1.ExportFormat_EXPORT_FORMAT_JSON:
		return newJSONEncoder(w, true), nil
	}
	return nil, fmt.Errorf("cdr: no encoder for export format %s", f)
}

type csvEncoder struct {
	w      *csv.Writer
	row    []string
	closed bool
}

func newCSVEncoder(w io.Writer) (*csvEncoder, error) {
	// csv.Writer adopts a large enough *bufio.Writer as its own buffer.
	e := &csvEncoder{w: csv.NewWriter(bufio.NewWriterSize(w, bufferSize)), row: make([]string, len(csvColumns))}
	if err := e.w.Write(csvColumns); err != nil {
		return nil, fmt.Errorf("cdr: csv header: %w", err)
	}
	return e, nil
}

func (e *csvEncoder) Encode(c *cdrv1.Cdr) error {
	if e.closed {
		return errEncoderClosed
	}
	if c == nil {
		return errors.New("cdr: encode a nil CDR")
	}
	r := e.row
	r[0], r[1], r[2], r[3], r[4] = c.GetId(), c.GetCallId(), c.GetReseller(), c.GetDomain(), c.GetUser()
	r[5], r[6], r[7] = c.GetDirection(), c.GetFrom(), c.GetTo()
	r[8], r[9], r[10] = csvTime(c.GetStartedAt()), csvTime(c.GetAnsweredAt()), csvTime(c.GetEndedAt())
	r[11] = strconv.FormatUint(uint64(c.GetDurationS()), 10)
	r[12] = strconv.FormatUint(uint64(c.GetBillableS()), 10)
	r[13] = c.GetDisposition()
	r[14] = strings.Join(c.GetRecordingIds(), CSVRecordingSeparator)
	r[15] = csvTime(c.GetAcceptedAt())
	if err := e.w.Write(r); err != nil {
		return fmt.Errorf("cdr: csv row %s: %w", c.GetId(), err)
	}
	return nil
}

func (e *csvEncoder) Flush() error {
	e.w.Flush()
	if err := e.w.Error(); err != nil {
		return fmt.Errorf("cdr: csv flush: %w", err)
	}
	return nil
}

func (e *csvEncoder) Close() error {
	if e.closed {
		return nil
	}
	e.closed = true
	return e.Flush()
}

// csvTime is t in RFC 3339 UTC, with a fraction only when it has one;
// empty for an unset time.
func csvTime(t *timestamppb.Timestamp) string {
	if t == nil {
		return ""
	}
	return t.AsTime().UTC().Format(time.RFC3339Nano)
}

// jsonEncoder writes Records one per line (NDJSON) or as the elements of
// one array (JSON). Each row is encoded into a reused buffer, without
// HTML escaping (a call id may hold < or &).
type jsonEncoder struct {
	w      *bufio.Writer
	row    bytes.Buffer
	enc    *json.Encoder
	array  bool
	rows   int64
	closed bool
}

func newJSONEncoder(w io.Writer, array bool) *jsonEncoder {
	e := &jsonEncoder{w: bufio.NewWriterSize(w, bufferSize), array: array}
	e.enc = json.NewEncoder(&e.row)
	e.enc.SetEscapeHTML(false)
	return e
}

func (e *jsonEncoder) Encode(c *cdrv1.Cdr) error {
	if e.closed {
		return errEncoderClosed
	}
	if c == nil {
		return errors.New("cdr: encode a nil CDR")
	}
	e.row.Reset()
	if err := e.enc.Encode(ToRecord(c)); err != nil {
		return fmt.Errorf("cdr: json row %s: %w", c.GetId(), err)
	}
	line := e.row.Bytes() // ends with the encoder's newline
	if e.array {
		sep := ",\n"
		if e.rows == 0 {
			sep = "[\n"
		}
		if _, err := e.w.WriteString(sep); err != nil {
			return fmt.Errorf("cdr: json row %s: %w", c.GetId(), err)
		}
		line = line[:len(line)-1]
	}
	if _, err := e.w.Write(line); err != nil {
		return fmt.Errorf("cdr: json row %s: %w", c.GetId(), err)
	}
	e.rows++
	return nil
}

func (e *jsonEncoder) Flush() error {
	if err := e.w.Flush(); err != nil {
		return fmt.Errorf("cdr: json flush: %w", err)
	}
	return nil
}

func (e *jsonEncoder) Close() error {
	if e.closed {
		return nil
	}
	e.closed = true
	if e.array {
		end := "\n]\n"
		if e.rows == 0 {
			end = "[]\n"
		}
		if _, err := e.w.WriteString(end); err != nil {
			return fmt.Errorf("cdr: json end: %w", err)
		}
	}
	return e.Flush()
}
