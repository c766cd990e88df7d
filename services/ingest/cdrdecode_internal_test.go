package ingest

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/callvault/callvault/pkg/apierr"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
)

func TestDecodeRecord(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		raw  string
		want *cdrv1.Cdr // nil: nothing decodes
		bad  []apierr.FieldViolation
	}{
		{
			name: "every field",
			raw: `{"id":"c1","call_id":"k","reseller":"r1","domain":"a.example","user":"101","direction":"inbound","from":"+1555","to":"101",
				"started_at":"2026-11-02T10:00:00Z","answered_at":"2026-11-02T10:00:05Z","ended_at":"2026-11-02T10:01:05Z",
				"duration_s":65,"billable_s":60,"disposition":"answered","recording_ids":["r-1"],"accepted_at":"2026-11-02T11:00:00Z"}`,
			want: &cdrv1.Cdr{Id: "c1", CallId: "k", Reseller: "r1", Domain: "a.example", User: "101", Direction: "inbound", From: "+1555", To: "101",
				DurationS: 65, BillableS: 60, Disposition: "answered", RecordingIds: []string{"r-1"}},
		},
		{
			name: "null and empty times are absent",
			raw:  `{"id":"c1","answered_at":null,"started_at":""}`,
			want: &cdrv1.Cdr{Id: "c1"},
		},
		{
			name: "wrong types, in field order, then unknown fields sorted",
			raw:  `{"zeta":1,"billable_s":-1,"id":7,"ended_at":"2026-11-02","alpha":true,"recording_ids":[1]}`,
			want: &cdrv1.Cdr{},
			bad: []apierr.FieldViolation{
				{Field: "id", Reason: "must be a string"},
				{Field: "ended_at", Reason: `must be an RFC 3339 time such as 2026-11-02T10:00:00Z, not "2026-11-02"`},
				{Field: "billable_s", Reason: "must be a whole number of seconds"},
				{Field: "recording_ids", Reason: "must be an array of recording ids"},
				{Field: "alpha", Reason: "is not a known field"},
				{Field: "zeta", Reason: "is not a known field"},
			},
		},
		{name: "not an object", raw: `[1]`, bad: []apierr.FieldViolation{{Field: "record", Reason: "must be a JSON object"}}},
		{name: "null", raw: `null`, bad: []apierr.FieldViolation{{Field: "record", Reason: "must be a JSON object"}}},
		{name: "broken", raw: `{"id":`, bad: []apierr.FieldViolation{{Field: "record", Reason: "is not valid JSON: unexpected end of JSON input"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			it := decodeRecord([]byte(tc.raw))
			if !reflect.DeepEqual(it.bad, tc.bad) {
				t.Fatalf("bad %+v\nwant %+v", it.bad, tc.bad)
			}
			if tc.want == nil {
				if it.c != nil {
					t.Fatalf("decoded %v", it.c)
				}
				return
			}
			got := it.c
			if tc.name == "every field" {
				if !got.GetStartedAt().AsTime().Equal(start) || got.GetAnsweredAt() == nil || got.GetEndedAt() == nil || got.GetAcceptedAt() != nil {
					t.Fatalf("times %v %v %v accepted %v", got.GetStartedAt(), got.GetAnsweredAt(), got.GetEndedAt(), got.GetAcceptedAt())
				}
				got.StartedAt, got.AnsweredAt, got.EndedAt = nil, nil, nil
			}
			if got.GetStartedAt() != nil || got.GetAnsweredAt() != nil || got.GetId() != tc.want.GetId() || got.GetDurationS() != tc.want.GetDurationS() ||
				got.GetBillableS() != tc.want.GetBillableS() || !reflect.DeepEqual(got.GetRecordingIds(), tc.want.GetRecordingIds()) || got.GetDomain() != tc.want.GetDomain() {
				t.Fatalf("decoded %v\nwant    %v", got, tc.want)
			}
		})
	}
}

// A broken array is named by the index being read and the line and column
// of the offending byte.
func TestDecodeCdrArraySyntax(t *testing.T) {
	t.Parallel()
	cases := []struct{ body, field, reason string }{
		{"[{}, {}\n, {\"id\": x}]", "cdrs[2]", "line 2, column 10: invalid character 'x'"},
		{"[{},,{}]", "cdrs[1]", "line 1, column 5: invalid character ','"},
		{"[{} {}]", "cdrs[1]", "line 1, column 5: "},
		{"[{},\n{}", "cdrs[2]", "line 2, column 3: the body ends before the array is closed"},
		{"[{}] {}", "body", "line 1, column 6: unexpected data after the array"},
		{"[{}]\n\n", "", ""},
		{`{"id": "x"}`, "body", "must be a JSON array"},
		{"", "body", "must be a JSON array"},
	}
	for _, tc := range cases {
		_, err := decodeCdrArray([]byte(tc.body))
		if tc.field == "" {
			if err != nil {
				t.Errorf("%q: %v", tc.body, err)
			}
			continue
		}
		ve, ok := err.(*apierr.ValidationError)
		if !ok || len(ve.Violations) != 1 || ve.Violations[0].Field != tc.field || !strings.HasPrefix(ve.Violations[0].Reason, tc.reason) {
			t.Errorf("%q: %v, want %s: %s...", tc.body, err, tc.field, tc.reason)
		}
	}
	items, err := decodeCdrArray([]byte(" [ {}, 1, {\"id\":\"a\"} ] \n"))
	if err != nil || len(items) != 3 || items[1].c != nil || items[2].c.GetId() != "a" {
		t.Fatalf("%v %+v", err, items)
	}
}

func TestDecodeCdrLines(t *testing.T) {
	t.Parallel()
	items, err := decodeCdrLines([]byte("{\"id\":\"a\"}\r\n\n  \n{oops}\n{\"id\":\"b\"}"))
	if err != nil || len(items) != 3 {
		t.Fatalf("%v %+v", err, items)
	}
	if items[0].c.GetId() != "a" || items[2].c.GetId() != "b" || items[1].c != nil || !strings.HasPrefix(items[1].bad[0].Reason, "line 4: is not valid JSON") {
		t.Fatalf("%+v", items)
	}
}

// Validation does not repeat what decoding found wrong, and a CDR's
// violations are one rejection.
func TestCheckCdrAndRejection(t *testing.T) {
	t.Parallel()
	it := decodeRecord([]byte(`{"id":"c1","call_id":"k","reseller":"r1","domain":"a.example","direction":"up","from":"1","to":"2",
		"started_at":"soon","ended_at":"2026-11-02T10:01:05Z","disposition":"busy","recording_ids":"r"}`))
	v := checkCdr(it, time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC))
	got := rejection(4, it.c.GetId(), v)
	want := CdrRejection{Index: 4, ID: "c1", Field: "started_at",
		Reason: `must be an RFC 3339 time such as 2026-11-02T10:00:00Z, not "soon"; also recording_ids: must be an array of recording ids; also direction: must be one of inbound, outbound, internal, not "up"`}
	if got != want {
		t.Fatalf("%+v\nwant %+v", got, want)
	}
	if v := checkCdr(cdrItem{}, time.Now()); len(v) != 1 || v[0].Field != "record" {
		t.Fatalf("nil CDR: %+v", v)
	}
}
