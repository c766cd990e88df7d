package cdr_test

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/cdr"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
)

// sampleCdrs covers what rows must carry intact: sub-second times, an
// unanswered call without user or recordings, and values bearing commas,
// quotes, semicolons and HTML characters.
func sampleCdrs() []*cdrv1.Cdr {
	start := time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(start.Add(d)) }
	return []*cdrv1.Cdr{
		{
			Id: "cdr-1", CallId: "call-1@pbx", Reseller: "r1", Domain: "a.example", User: "alice",
			Direction: "outbound", From: "+15551230001", To: "+15551230002",
			StartedAt: at(0), AnsweredAt: at(4500 * time.Millisecond), EndedAt: at(64500 * time.Millisecond),
			DurationS: 65, BillableS: 60, Disposition: "answered",
			RecordingIds: []string{"rec-1", "rec-2"}, AcceptedAt: at(time.Minute + 123456789),
		},
		{
			Id: "cdr-2", CallId: `x"y,z;<&>`, Reseller: "r1", Domain: "a.example",
			Direction: "inbound", From: "100", To: "*97",
			StartedAt: at(time.Hour), EndedAt: at(time.Hour + 20*time.Second),
			DurationS: 20, Disposition: "no_answer",
		},
		{
			Id: "cdr-3", CallId: `"quoted"`, Reseller: "r,1", Domain: "b.example", User: "bob+1@x",
			Direction: "internal", From: "ext-10", To: "ext.11",
			StartedAt: at(2 * time.Hour), AnsweredAt: at(2*time.Hour + time.Second), EndedAt: at(2*time.Hour + 3*time.Second),
			DurationS: 3, BillableS: 2, Disposition: "voicemail", RecordingIds: []string{"rec-3"},
		},
	}
}

func encode(t *testing.T, f cdrv1.ExportFormat, cdrs []*cdrv1.Cdr) string {
	t.Helper()
	var buf bytes.Buffer
	enc, err := cdr.NewEncoder(&buf, f)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cdrs {
		if err := enc.Encode(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func records(cdrs []*cdrv1.Cdr) []cdr.Record {
	out := make([]cdr.Record, 0, len(cdrs))
	for _, c := range cdrs {
		out = append(out, cdr.ToRecord(c))
	}
	return out
}

func TestCSVRoundTrips(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cdrs []*cdrv1.Cdr
	}{
		{"rows", sampleCdrs()},
		{"empty", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			body := encode(t, cdrv1.ExportFormat_EXPORT_FORMAT_CSV, tc.cdrs)
			rows, err := csv.NewReader(strings.NewReader(body)).ReadAll()
			if err != nil {
				t.Fatalf("csv: %v\n%s", err, body)
			}
			if len(rows) != len(tc.cdrs)+1 {
				t.Fatalf("%d rows, want a header and %d:\n%s", len(rows), len(tc.cdrs), body)
			}
			if !reflect.DeepEqual(rows[0], cdr.CSVHeader()) {
				t.Fatalf("header %q", rows[0])
			}
			for i, c := range tc.cdrs {
				if got, want := fromCSV(t, rows[0], rows[i+1]), cdr.ToRecord(c); !reflect.DeepEqual(got, want) {
					t.Errorf("row %d:\n got %+v\nwant %+v", i, got, want)
				}
			}
		})
	}
}

// fromCSV reads a row back by column name, as a consumer would.
func fromCSV(t *testing.T, header, row []string) cdr.Record {
	t.Helper()
	col := map[string]string{}
	for i, h := range header {
		col[h] = row[i]
	}
	at := func(name string) *time.Time {
		if col[name] == "" {
			return nil
		}
		v, err := time.Parse(time.RFC3339Nano, col[name])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return &v
	}
	n := func(name string) uint32 {
		v, err := strconv.ParseUint(col[name], 10, 32)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return uint32(v)
	}
	ids := []string{}
	if col["recording_ids"] != "" {
		ids = strings.Split(col["recording_ids"], cdr.CSVRecordingSeparator)
	}
	return cdr.Record{
		ID: col["id"], CallID: col["call_id"], Reseller: col["reseller"], Domain: col["domain"], User: col["user"],
		Direction: col["direction"], From: col["from"], To: col["to"],
		StartedAt: at("started_at"), AnsweredAt: at("answered_at"), EndedAt: at("ended_at"),
		DurationS: n("duration_s"), BillableS: n("billable_s"), Disposition: col["disposition"],
		RecordingIDs: ids, AcceptedAt: at("accepted_at"),
	}
}

// Times are UTC, with a fraction only when they have one.
func TestCSVTimes(t *testing.T) {
	t.Parallel()
	rows, err := csv.NewReader(strings.NewReader(encode(t, cdrv1.ExportFormat_EXPORT_FORMAT_CSV, sampleCdrs()[:1]))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for i, h := range rows[0] {
		got[h] = rows[1][i]
	}
	for col, want := range map[string]string{
		"started_at":    "2026-11-02T10:00:00Z",
		"answered_at":   "2026-11-02T10:00:04.5Z",
		"accepted_at":   "2026-11-02T10:01:00.123456789Z",
		"recording_ids": "rec-1;rec-2",
	} {
		if got[col] != want {
			t.Errorf("%s = %q, want %q", col, got[col], want)
		}
	}
}

func TestJSONArrayParses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cdrs []*cdrv1.Cdr
	}{
		{"rows", sampleCdrs()},
		{"one", sampleCdrs()[1:2]},
		{"empty", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			body := encode(t, cdrv1.ExportFormat_EXPORT_FORMAT_JSON, tc.cdrs)
			var got []cdr.Record
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("json: %v\n%s", err, body)
			}
			if want := records(tc.cdrs); !reflect.DeepEqual(got, want) {
				t.Errorf("got %+v\nwant %+v", got, want)
			}
			if len(tc.cdrs) == 0 && strings.TrimSpace(body) != "[]" {
				t.Errorf("empty export is %q, want []", body)
			}
			if strings.Contains(body, `\u003c`) {
				t.Errorf("HTML-escaped: %s", body)
			}
		})
	}
}

func TestNDJSONLines(t *testing.T) {
	t.Parallel()
	cdrs := sampleCdrs()
	body := encode(t, cdrv1.ExportFormat_EXPORT_FORMAT_NDJSON, cdrs)
	sc := bufio.NewScanner(strings.NewReader(body))
	var got []cdr.Record
	for sc.Scan() {
		var r cdr.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %d: %v: %s", len(got)+1, err, sc.Text())
		}
		got = append(got, r)
	}
	if !reflect.DeepEqual(got, records(cdrs)) {
		t.Errorf("got %+v\nwant %+v", got, records(cdrs))
	}
	if body := encode(t, cdrv1.ExportFormat_EXPORT_FORMAT_NDJSON, nil); body != "" {
		t.Errorf("empty NDJSON export is %q", body)
	}
}

// A JSON export whose encoder was never closed (the stream broke) does
// not parse: the array has no closing bracket.
func TestUnclosedJSONDoesNotParse(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	enc, err := cdr.NewEncoder(&buf, cdrv1.ExportFormat_EXPORT_FORMAT_JSON)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range sampleCdrs() {
		if err := enc.Encode(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	var v []cdr.Record
	if err := json.Unmarshal(buf.Bytes(), &v); err == nil {
		t.Errorf("an unclosed array parsed: %s", buf.String())
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := enc.Encode(sampleCdrs()[0]); err == nil {
		t.Error("Encode after Close succeeded")
	}
}

// countingWriter counts what reaches it.
type countingWriter struct{ n int }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

// Rows reach the writer as the buffer fills, not at Close: an encoder
// never holds more than its buffer.
func TestEncodersDoNotAccumulate(t *testing.T) {
	t.Parallel()
	for _, f := range []cdrv1.ExportFormat{cdrv1.ExportFormat_EXPORT_FORMAT_CSV, cdrv1.ExportFormat_EXPORT_FORMAT_NDJSON, cdrv1.ExportFormat_EXPORT_FORMAT_JSON} {
		t.Run(f.String(), func(t *testing.T) {
			t.Parallel()
			w := &countingWriter{}
			enc, err := cdr.NewEncoder(w, f)
			if err != nil {
				t.Fatal(err)
			}
			c := sampleCdrs()[0]
			const rows = 5000
			for i := range rows {
				c.Id = fmt.Sprintf("cdr-%d", i)
				if err := enc.Encode(c); err != nil {
					t.Fatal(err)
				}
			}
			before := w.n
			if err := enc.Close(); err != nil {
				t.Fatal(err)
			}
			if pending := w.n - before; pending > 64<<10 {
				t.Errorf("%d of %d bytes were held until Close", pending, w.n)
			}
		})
	}
}

func TestFormats(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in          string
		want        cdrv1.ExportFormat
		contentType string
		ext         string
	}{
		{"json", cdrv1.ExportFormat_EXPORT_FORMAT_JSON, "application/json", "json"},
		{"NDJSON", cdrv1.ExportFormat_EXPORT_FORMAT_NDJSON, "application/x-ndjson", "ndjson"},
		{" csv ", cdrv1.ExportFormat_EXPORT_FORMAT_CSV, "text/csv; charset=utf-8; header=present", "csv"},
		{"xml", cdrv1.ExportFormat_EXPORT_FORMAT_UNSPECIFIED, "", ""},
		{"", cdrv1.ExportFormat_EXPORT_FORMAT_UNSPECIFIED, "", ""},
	} {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			f, err := cdr.ParseFormat(tc.in)
			if tc.want == cdrv1.ExportFormat_EXPORT_FORMAT_UNSPECIFIED {
				if err == nil {
					t.Fatalf("ParseFormat(%q) = %v, want an error", tc.in, f)
				}
				if _, err := cdr.NewEncoder(&bytes.Buffer{}, f); err == nil {
					t.Error("NewEncoder accepted an unspecified format")
				}
				return
			}
			if err != nil || f != tc.want {
				t.Fatalf("ParseFormat(%q) = %v, %v", tc.in, f, err)
			}
			if got := cdr.ContentType(f); got != tc.contentType {
				t.Errorf("ContentType = %q", got)
			}
			if got := cdr.Extension(f); got != tc.ext {
				t.Errorf("Extension = %q", got)
			}
			if back, err := cdr.ParseFormat(cdr.FormatName(f)); err != nil || back != f {
				t.Errorf("FormatName(%v) = %q does not parse back", f, cdr.FormatName(f))
			}
		})
	}
}
