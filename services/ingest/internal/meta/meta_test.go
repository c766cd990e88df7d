package meta

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/callvault/callvault/pkg/apierr"
)

func valid() Recording {
	return Recording{
		ID: "rec-1", CallID: "c1@pbx", Reseller: "r1", Domain: "a.example", User: "101",
		Mode: ModeAutomatic, StartedAt: time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC), DurationS: 60, ContentType: "audio/wav",
	}
}

func TestValidateAcceptsValid(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	if err := Validate(valid(), now, "metadata."); err != nil {
		t.Fatalf("valid metadata refused: %v", err)
	}
	noUser := valid()
	noUser.User = ""
	if err := Validate(noUser, now, "metadata."); err != nil {
		t.Fatalf("metadata without user refused: %v", err)
	}
}

func TestValidateNamesEachField(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		field  string
		mutate func(*Recording)
		reason string
	}{
		{"metadata.id", func(r *Recording) { r.ID = "" }, "is required"},
		{"metadata.id", func(r *Recording) { r.ID = "../etc/passwd" }, "must be 1-128"},
		{"metadata.id", func(r *Recording) { r.ID = strings.Repeat("x", 129) }, "must be 1-128"},
		{"metadata.call_id", func(r *Recording) { r.CallID = "" }, "is required"},
		{"metadata.call_id", func(r *Recording) { r.CallID = "has space" }, "printable ASCII"},
		{"metadata.reseller", func(r *Recording) { r.Reseller = "" }, "is required"},
		{"metadata.reseller", func(r *Recording) { r.Reseller = "r/1" }, "must be 1-64"},
		{"metadata.domain", func(r *Recording) { r.Domain = "" }, "is required"},
		{"metadata.domain", func(r *Recording) { r.Domain = "A.Example" }, "lower-case DNS"},
		{"metadata.domain", func(r *Recording) { r.Domain = "a{b}.example" }, "lower-case DNS"},
		{"metadata.user", func(r *Recording) { r.User = "1 01" }, "must be 1-64"},
		{"metadata.mode", func(r *Recording) { r.Mode = "" }, "is required"},
		{"metadata.mode", func(r *Recording) { r.Mode = "sometimes" }, "automatic or on_demand"},
		{"metadata.started_at", func(r *Recording) { r.StartedAt = time.Time{} }, "is required"},
		{"metadata.started_at", func(r *Recording) { r.StartedAt = now.Add(time.Hour) }, "future"},
		{"metadata.started_at", func(r *Recording) { r.StartedAt = time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC) }, "before 2000"},
		{"metadata.duration_s", func(r *Recording) { r.DurationS = MaxDurationS + 1 }, "at most"},
		{"metadata.content_type", func(r *Recording) { r.ContentType = "" }, "is required"},
		{"metadata.content_type", func(r *Recording) { r.ContentType = "text/html" }, "audio/*"},
	}
	for _, tc := range cases {
		t.Run(tc.field+"/"+tc.reason, func(t *testing.T) {
			t.Parallel()
			r := valid()
			tc.mutate(&r)
			err := Validate(r, now, "metadata.")
			var ve *apierr.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("got %v, want a ValidationError", err)
			}
			if len(ve.Violations) != 1 {
				t.Fatalf("got %d violations %v, want exactly one for %s", len(ve.Violations), ve.Violations, tc.field)
			}
			if ve.Violations[0].Field != tc.field || !strings.Contains(ve.Violations[0].Reason, tc.reason) {
				t.Fatalf("got %+v, want field %s with reason containing %q", ve.Violations[0], tc.field, tc.reason)
			}
		})
	}
}

func TestValidateReportsAllFieldsAtOnce(t *testing.T) {
	t.Parallel()
	err := Validate(Recording{}, time.Now(), "")
	var ve *apierr.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("got %v", err)
	}
	got := map[string]bool{}
	for _, f := range ve.Violations {
		got[f.Field] = true
	}
	for _, f := range []string{"id", "call_id", "reseller", "domain", "mode", "started_at", "content_type"} {
		if !got[f] {
			t.Errorf("missing violation for %s in %v", f, ve.Violations)
		}
	}
}
