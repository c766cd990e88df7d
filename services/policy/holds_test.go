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
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
	"github.com/callvault/callvault/services/policy"
)

var system = auth.Principal{Name: "ops", Level: auth.LevelSystem}

func holdOn(domain, user, call, reason string) *policyv1.Hold {
	return &policyv1.Hold{Scope: &policyv1.Scope{Domain: domain, User: user}, CallId: call, Reason: reason}
}

func mayDelete(t *testing.T, svc *policy.Service, id string) bool {
	t.Helper()
	ok, blocking, err := svc.MayDelete(context.Background(), system, "a.example", id)
	if err != nil {
		t.Fatal(err)
	}
	if ok != (len(blocking) == 0) {
		t.Fatalf("MayDelete(%s) = %v with %d blocking holds", id, ok, len(blocking))
	}
	return ok
}

// TestLegalHolds: a hold on a domain, a user or a call makes MayDelete say
// no for exactly what it covers, until released with a reason; holds are
// tenant-scoped and come back from the config stream after a Redis loss.
func TestLegalHolds(t *testing.T) {
	t.Parallel()
	d, svc := setup(t)
	ctx := context.Background()
	at := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	for i, id := range []string{"rec-1", "rec-2", "rec-3"} {
		env := recordingEvent(id, 100, at)
		env.GetRecording().CallId = "call-" + id
		if i == 1 {
			env.Tenant.User = "102"
		}
		ack, err := bus.PublishEnvelope(ctx, d.JS, d.Names.RecordingSubject(), id, env)
		if err != nil {
			t.Fatal(err)
		}
		if err := svc.Admit(ctx, env, ack.Sequence); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"rec-1", "rec-2", "rec-3"} {
		if !mayDelete(t, svc, id) {
			t.Fatalf("%s held before any hold", id)
		}
	}

	// Domain hold: everything frozen, then released.
	dh, err := svc.PlaceHold(ctx, system, holdOn("a.example", "", "", "litigation 2026-17"))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"rec-1", "rec-2", "rec-3"} {
		if mayDelete(t, svc, id) {
			t.Fatalf("%s deletable under a domain hold", id)
		}
	}
	if err := svc.ReleaseHold(ctx, system, dh.ID, "case closed"); err != nil {
		t.Fatal(err)
	}
	if !mayDelete(t, svc, "rec-1") {
		t.Fatal("rec-1 still held after release")
	}
	if err := svc.ReleaseHold(ctx, system, dh.ID, "again"); !errors.Is(err, apierr.ErrNotFound) {
		t.Fatalf("second release: %v, want not found", err)
	}

	// User hold and call hold cover only their own.
	if _, err := svc.PlaceHold(ctx, system, holdOn("a.example", "102", "", "HR request")); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.PlaceHold(ctx, system, holdOn("a.example", "", "call-rec-3", "complaint")); err != nil {
		t.Fatal(err)
	}
	got := []bool{mayDelete(t, svc, "rec-1"), mayDelete(t, svc, "rec-2"), mayDelete(t, svc, "rec-3")}
	if !slices.Equal(got, []bool{true, false, false}) {
		t.Fatalf("MayDelete rec-1..3 = %v, want [true false false]", got)
	}
	hs, err := svc.ListHolds(ctx, system, "a.example", "")
	if err != nil || len(hs) != 2 {
		t.Fatalf("ListHolds = %v, %v; want the two active holds", hs, err)
	}

	// Validation names each field.
	_, err = svc.PlaceHold(ctx, system, holdOn("Not A Domain", "bad user", "", ""))
	var ve *apierr.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("invalid hold: %v", err)
	}
	var fields []string
	for _, f := range ve.Violations {
		fields = append(fields, f.Field)
	}
	slices.Sort(fields)
	if !slices.Equal(fields, []string{"hold.reason", "hold.scope.domain", "hold.scope.user"}) {
		t.Fatalf("violations on %v", fields)
	}

	// Tenant scoping.
	other := auth.Principal{Name: "b-admin", Level: auth.LevelDomain, Reseller: "r1", Domain: "b.example"}
	if _, err := svc.PlaceHold(ctx, other, holdOn("a.example", "", "", "x")); !errors.Is(err, apierr.ErrForbidden) {
		t.Fatalf("another domain's admin placed a hold: %v", err)
	}
	if err := svc.ReleaseHold(ctx, other, hs[0].ID, "x"); !errors.Is(err, apierr.ErrNotFound) {
		t.Fatalf("another domain's admin released a hold: %v", err)
	}
	if _, _, err := svc.MayDelete(ctx, other, "a.example", "rec-1"); !errors.Is(err, apierr.ErrForbidden) {
		t.Fatalf("another domain's admin asked MayDelete: %v", err)
	}
	reseller := auth.Principal{Name: "r1-ops", Level: auth.LevelReseller, Reseller: "r1"}
	if _, err := svc.PlaceHold(ctx, reseller, holdOn("a.example", "", "", "reseller audit")); err != nil {
		t.Fatalf("the domain's reseller could not place a hold: %v", err)
	}

	// The events carry who, why and what; a Redis loss is repaired by replay.
	var places, releases int
	var releaseReason string
	if _, _, err := bus.Replay(ctx, d.JS, d.Names.ConfigStream(), []string{d.Names.HoldSubject()}, func(_ context.Context, env *eventv1.Envelope, _ uint64) error {
		c := env.GetConfig()
		if c.GetAfter() != nil {
			places++
		} else {
			releases++
			releaseReason = c.GetReason()
		}
		if c.GetActor() == "" || c.GetEntity() != "legal_hold" {
			t.Errorf("hold event without actor or entity: %v", c)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if places != 4 || releases != 1 || releaseReason != "case closed" {
		t.Fatalf("config stream: %d placements, %d releases (reason %q); want 4, 1, case closed", places, releases, releaseReason)
	}
	wipeRedis(t, d)
	if _, err := svc.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	got = []bool{mayDelete(t, svc, "rec-1"), mayDelete(t, svc, "rec-2"), mayDelete(t, svc, "rec-3")}
	if !slices.Equal(got, []bool{false, false, false}) {
		t.Fatalf("after rebuild MayDelete = %v, want all held (the reseller's domain hold is active)", got)
	}
}
