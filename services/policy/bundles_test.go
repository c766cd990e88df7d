package policy_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
)

// TestAssignBundle: the provider or the domain's reseller puts a domain on
// a catalogue bundle with a data rotation inside the bounds; tenants
// cannot; the assignment survives a Redis loss.
func TestAssignBundle(t *testing.T) {
	t.Parallel()
	d, svc := setup(t)
	ctx := context.Background()
	env := recordingEvent("rec-1", 100, time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC))
	if _, err := bus.PublishEnvelope(ctx, d.JS, d.Names.RecordingSubject(), "rec-1", env); err != nil {
		t.Fatal(err)
	}
	if err := svc.Admit(ctx, env, 1); err != nil { // registers a.example under r1
		t.Fatal(err)
	}
	a, err := svc.Assignment(ctx, "a.example")
	if err != nil || a.Bundle != "default" || a.RotationMonths != 12 {
		t.Fatalf("unassigned domain: %+v, %v", a, err)
	}

	cases := []struct {
		name     string
		bundle   string
		rotation int
		field    string
	}{
		{"unknown bundle", "CDS-7", 12, "bundle"},
		{"more than 12 months without a bundle", "default", 24, "data_rotation_months"},
		{"more than 240 months with one", "CDS-50", 241, "data_rotation_months"},
		{"negative rotation", "CDS-50", -1, "data_rotation_months"},
	}
	for _, tc := range cases {
		_, _, err := svc.AssignBundle(ctx, system, "a.example", tc.bundle, tc.rotation)
		if got := violations(t, err); !slices.Equal(got, []string{tc.field}) {
			t.Errorf("%s: violations %v, want [%s]", tc.name, got, tc.field)
		}
	}
	domainAdmin := auth.Principal{Name: "a-admin", Level: auth.LevelDomain, Reseller: "r1", Domain: "a.example"}
	if _, _, err := svc.AssignBundle(ctx, domainAdmin, "a.example", "CDS-500", 24); !errors.Is(err, apierr.ErrForbidden) {
		t.Fatalf("a tenant assigned itself a bundle: %v", err)
	}
	otherReseller := auth.Principal{Name: "r2-ops", Level: auth.LevelReseller, Reseller: "r2"}
	if _, _, err := svc.AssignBundle(ctx, otherReseller, "a.example", "CDS-50", 24); !errors.Is(err, apierr.ErrForbidden) {
		t.Fatalf("another reseller assigned a bundle: %v", err)
	}
	reseller := auth.Principal{Name: "r1-ops", Level: auth.LevelReseller, Reseller: "r1"}
	a, b, err := svc.AssignBundle(ctx, reseller, "a.example", "CDS-50", 120)
	if err != nil || b.Name != "CDS-50" || b.CapacityBytes() != 50_000_000_000 || a.RotationMonths != 120 || a.AssignedBy != "r1-ops" {
		t.Fatalf("assign: %+v %+v %v", a, b, err)
	}

	wipeRedis(t, d)
	if _, err := svc.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	if a, err := svc.Assignment(ctx, "a.example"); err != nil || a.Bundle != "CDS-50" || a.RotationMonths != 120 {
		t.Fatalf("after rebuild: %+v, %v", a, err)
	}
}
