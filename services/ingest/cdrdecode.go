package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/cdr"
)

// decodeCdrArray reads a JSON array of CDR records. An element that is
// well-formed JSON but not a good record is one bad CDR (answered by its
// index); a body that is not well-formed JSON is refused whole, naming the
// index and the line where it breaks, since nothing after that point can
// be told apart.
func decodeCdrArray(body []byte) ([]cdrItem, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
		return nil, apierr.Invalid("body", "must be a JSON array of CDRs (one CDR per line is application/x-ndjson)")
	}
	var items []cdrItem
	for dec.More() {
		if len(items) == cdr.MaxBatch {
			return nil, errTooManyCdrs
		}
		start := dec.InputOffset()
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, syntaxError(body, start, len(items), err)
		}
		items = append(items, decodeRecord(raw))
	}
	if _, err := dec.Token(); err != nil {
		return nil, syntaxError(body, dec.InputOffset(), len(items), err)
	}
	if rest := bytes.TrimLeft(body[dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
		line, col := position(body, int64(len(body)-len(rest)))
		return nil, apierr.Invalid("body", "line %d, column %d: unexpected data after the array", line, col)
	}
	return items, nil
}

// decodeCdrLines reads NDJSON: one CDR record per line, blank lines
// skipped. Each line stands alone, so one that is not JSON is one bad CDR,
// answered by its index and naming its line.
func decodeCdrLines(body []byte) ([]cdrItem, error) {
	var items []cdrItem
	for line := 1; len(body) > 0; line++ {
		var text []byte
		text, body, _ = bytes.Cut(body, []byte{'\n'})
		text = bytes.TrimSpace(text)
		if len(text) == 0 {
			continue
		}
		if len(items) == cdr.MaxBatch {
			return nil, errTooManyCdrs
		}
		it := decodeRecord(text)
		if it.c == nil {
			it.bad[0].Reason = fmt.Sprintf("line %d: %s", line, it.bad[0].Reason)
		}
		items = append(items, it)
	}
	return items, nil
}

// decodeRecord reads one cdr.Record. Each field is decoded on its own, so
// a wrong type in one field does not hide the others' errors; validation
// then judges what did decode. accepted_at, which exports write, is read
// past: ingest sets it.
func decodeRecord(raw []byte) cdrItem {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return cdrItem{bad: []apierr.FieldViolation{{Field: fieldRecord, Reason: "must be a JSON object"}}}
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return cdrItem{bad: []apierr.FieldViolation{{Field: fieldRecord, Reason: fmt.Sprintf("is not valid JSON: %v", err)}}}
	}
	var r cdr.Record
	var bad []apierr.FieldViolation
	known := map[string]bool{"accepted_at": true}
	field := func(name string, target any, want string) {
		known[name] = true
		v, ok := fields[name]
		if !ok {
			return
		}
		if err := json.Unmarshal(v, target); err != nil {
			// Nothing half decoded stays for validation to judge.
			reflect.ValueOf(target).Elem().SetZero()
			bad = append(bad, apierr.FieldViolation{Field: name, Reason: "must be " + want})
		}
	}
	at := func(name string, target **time.Time) {
		var s *string
		field(name, &s, "an RFC 3339 time such as 2026-11-02T10:00:00Z")
		if s == nil || *s == "" {
			return
		}
		t, err := time.Parse(time.RFC3339Nano, *s)
		if err != nil {
			bad = append(bad, apierr.FieldViolation{Field: name, Reason: fmt.Sprintf("must be an RFC 3339 time such as 2026-11-02T10:00:00Z, not %q", *s)})
			return
		}
		*target = &t
	}
	// In the order of cdr.Record, which is the order validation reports.
	field("id", &r.ID, "a string")
	field("call_id", &r.CallID, "a string")
	field("reseller", &r.Reseller, "a string")
	field("domain", &r.Domain, "a string")
	field("user", &r.User, "a string")
	field("direction", &r.Direction, "a string")
	field("from", &r.From, "a string")
	field("to", &r.To, "a string")
	at("started_at", &r.StartedAt)
	at("answered_at", &r.AnsweredAt)
	at("ended_at", &r.EndedAt)
	field("duration_s", &r.DurationS, "a whole number of seconds")
	field("billable_s", &r.BillableS, "a whole number of seconds")
	field("disposition", &r.Disposition, "a string")
	field("recording_ids", &r.RecordingIDs, "an array of recording ids")
	var unknown []string
	for name := range fields {
		if !known[name] {
			unknown = append(unknown, name)
		}
	}
	slices.Sort(unknown)
	for _, name := range unknown {
		bad = append(bad, apierr.FieldViolation{Field: name, Reason: "is not a known field"})
	}
	return cdrItem{c: cdr.FromRecord(r), bad: bad}
}

// syntaxError names where a JSON array stops being JSON: the index of the
// element being read and its line and column. The decoder's own offsets
// are approximate, so the rest of the body is scanned alone to find the
// offending byte.
func syntaxError(body []byte, start int64, index int, err error) error {
	field := fmt.Sprintf("cdrs[%d]", index)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		line, col := position(body, int64(len(body)))
		return apierr.Invalid(field, "line %d, column %d: the body ends before the array is closed", line, col)
	}
	// The element starts after blanks, one comma and blanks.
	off := start
	skip := func() {
		for off < int64(len(body)) && strings.ContainsRune(" \t\r\n", rune(body[off])) {
			off++
		}
	}
	skip()
	if off < int64(len(body)) && body[off] == ',' {
		off++
		skip()
	}
	var se *json.SyntaxError
	if uerr := json.Unmarshal(body[off:], new(json.RawMessage)); errors.As(uerr, &se) && !strings.Contains(se.Error(), "after top-level value") {
		off += se.Offset - 1
	}
	line, col := position(body, off)
	return apierr.Invalid(field, "line %d, column %d: %v", line, col, err)
}

// position is the 1-based line and byte column of offset off in body.
func position(body []byte, off int64) (line, col int) {
	off = min(max(off, 0), int64(len(body)))
	before := body[:off]
	return 1 + bytes.Count(before, []byte{'\n'}), len(before) - bytes.LastIndexByte(before, '\n')
}
