package pathtmpl

import (
	"strings"
	"testing"
	"time"
)

func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"", "is required"},
		{"/abs/{recording_id}", "must be relative"},
		{"a/../{recording_id}", `".."`},
		{"../{recording_id}", `".."`},
		{"a/./{recording_id}", `"."`},
		{"a//{recording_id}", "empty path segment"},
		{"{domain}/{secret}/{recording_id}", "unknown field {secret}"},
		{"{domain}/{recording_id", "without its }"},
		{"{domain}}/{recording_id}", "without its {"},
		{"{domain}/x", "must contain {recording_id}"},
		{"{domain}/{call_id}_{recording_id}", "a path segment of its own"},
		{"{domain}/{recording_id}-{user}.{ext}", "a path segment of its own"},
		{"a\\b/{recording_id}", "literal text"},
		{"a b/{recording_id}", "literal text"},
		{"{domain}/{recording_id}/", "not end with /"},
		{strings.Repeat("a", MaxLen) + "{recording_id}", "at most"},
	} {
		if _, err := Parse(tc.src); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want an error saying %q", tc.src, err, tc.want)
		}
	}
}

func TestRender(t *testing.T) {
	at := time.Date(2027, 3, 1, 23, 30, 0, 0, time.FixedZone("x", -5*3600)) // 2 March UTC
	v := Values{Reseller: "r1", Domain: "a.example", User: "101", CallID: "abc@pbx", RecordingID: "rec-1", Time: at, Ext: "wav"}
	for _, tc := range []struct{ src, want string }{
		{Default, "a.example/2027/03/02/abc@pbx/rec-1.wav"},
		{"{reseller}/{domain}/{user}/{recording_id}", "r1/a.example/101/rec-1"},
		{"calls-{yyyy}{mm}{dd}/{recording_id}.{ext}", "calls-20270302/rec-1.wav"},
	} {
		tp, err := Parse(tc.src)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.src, err)
		}
		if got := tp.Render(v); got != tc.want {
			t.Errorf("Render(%q) = %q, want %q", tc.src, got, tc.want)
		}
	}
}

// TestRenderKeepsValuesInTheirSegment: a call id of a PBX can hold any
// printable character; none of them adds a segment or climbs out.
func TestRenderKeepsValuesInTheirSegment(t *testing.T) {
	tp, err := Parse("{domain}/{call_id}/{user}/{recording_id}")
	if err != nil {
		t.Fatal(err)
	}
	for _, call := range []string{"..", ".", "../../etc/passwd", "a/b", "a\\b", "%2e%2e", "x?y#z", "é"} {
		got := tp.Render(Values{Domain: "a.example", CallID: call, RecordingID: "r"})
		segs := strings.Split(got, "/")
		if len(segs) != 4 {
			t.Errorf("call id %q rendered %q: %d segments, want 4", call, got, len(segs))
		}
		for _, s := range segs {
			if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "\\?#") {
				t.Errorf("call id %q rendered %q with segment %q", call, got, s)
			}
		}
	}
	if got := tp.Render(Values{Domain: "a.example", CallID: "c", RecordingID: "r"}); got != "a.example/c/_/r" {
		t.Errorf("an empty user rendered %q, want a.example/c/_/r", got)
	}
}

// TestRenderBoundsLongValues: a call id of 256 characters (more once
// escaped) still renders into a file-name-sized segment, and two long
// values differing only at the end stay distinct.
func TestRenderBoundsLongValues(t *testing.T) {
	tp, err := Parse("{domain}/{call_id}/{recording_id}")
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("/", 250) + "a"
	other := strings.Repeat("/", 250) + "b"
	a := tp.Render(Values{Domain: "a.example", CallID: long, RecordingID: "r"})
	b := tp.Render(Values{Domain: "a.example", CallID: other, RecordingID: "r"})
	seg := strings.Split(a, "/")[1]
	if len(seg) > MaxValueLen || !strings.Contains(seg, "~") {
		t.Fatalf("a long call id rendered %d bytes: %q", len(seg), seg)
	}
	for i := 0; i < len(seg); i++ {
		if seg[i] == '%' && (i+2 >= len(seg) || !isHex(seg[i+1]) || !isHex(seg[i+2])) {
			t.Fatalf("the cut split an escape at %d: %q", i, seg)
		}
	}
	if a == b {
		t.Error("two different long call ids rendered the same key")
	}
	if short := tp.Render(Values{Domain: "a.example", CallID: "c-1", RecordingID: "r"}); short != "a.example/c-1/r" {
		t.Errorf("a short value changed: %q", short)
	}
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'A' && c <= 'F' }
