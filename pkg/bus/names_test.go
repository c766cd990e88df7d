package bus

import "testing"

func TestNewNamesValidates(t *testing.T) {
	t.Parallel()
	for _, ns := range []string{"", "CV", "1cv", "cv.x", "cv>", "a-b", "abcdefghijklmnopqrstuvwxyzabcdefg"} {
		if _, err := NewNames(ns); err == nil {
			t.Errorf("NewNames(%q) accepted an unsafe namespace", ns)
		}
	}
	n, err := NewNames("cv")
	if err != nil {
		t.Fatal(err)
	}
	if n.IngestStream() != "CV_INGEST" || n.RecordingSubject() != "cv.ingest.recording" || n.DeadLetterSubject("policy-admit") != "cv.dlq.policy-admit" {
		t.Fatalf("unexpected names: %s %s %s", n.IngestStream(), n.RecordingSubject(), n.DeadLetterSubject("policy-admit"))
	}
}
