package policy_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/retention"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
)

// TestConfigEventsAreTyped: every config event the policy service
// publishes (holds, overrides, bundle assignments) carries its entity as a
// typed protobuf payload, not JSON; events of the first schema, JSON only,
// still rebuild the same state on replay.
func TestConfigEventsAreTyped(t *testing.T) {
	t.Parallel()
	d, svc := setup(t)
	ctx := context.Background()
	h, err := svc.PlaceHold(ctx, system, holdOn("a.example", "101", "", "litigation"))
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.ReleaseHold(ctx, system, h.ID, "settled"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.SetOverride(ctx, system, ov(auto, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", &policyv1.PolicyFields{RetentionMonths: i32(12)})); err != nil {
		t.Fatal(err)
	}
	if err := svc.DeleteOverride(ctx, system, auto, domainScope("a.example")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.AssignBundle(ctx, system, "a.example", "CDS-50", 24); err != nil {
		t.Fatal(err)
	}

	type seen struct{ before, after string }
	var got []seen
	if _, _, err := bus.Replay(ctx, d.JS, d.Names.ConfigStream(), []string{d.Names.HoldSubject(), d.Names.PolicySubject()}, func(_ context.Context, env *eventv1.Envelope, _ uint64) error {
		c := env.GetConfig()
		if c.GetBeforeJson() != "" || c.GetAfterJson() != "" || env.GetSchemaVersion() != 2 {
			t.Errorf("%s event %s: schema %d with JSON %q / %q, want typed payloads only", c.GetEntity(), env.GetId(), env.GetSchemaVersion(), c.GetBeforeJson(), c.GetAfterJson())
		}
		kind := func(p *eventv1.ConfigPayload) string {
			switch p.GetValue().(type) {
			case *eventv1.ConfigPayload_Hold:
				return "hold"
			case *eventv1.ConfigPayload_Override:
				return "override"
			case *eventv1.ConfigPayload_Bundle:
				return "bundle"
			case nil:
				return ""
			default:
				return "other"
			}
		}
		got = append(got, seen{kind(c.GetBefore()), kind(c.GetAfter())})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []seen{{"", "hold"}, {"hold", ""}, {"", "override"}, {"override", ""}, {"bundle", "bundle"}}
	if len(got) != len(want) {
		t.Fatalf("config events %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("config events %v, want %v", got, want)
		}
	}

	// Events of the first schema, JSON only, as they are on older streams.
	old := func(id, subject, entity, before, after string) {
		t.Helper()
		env := &eventv1.Envelope{
			Id: id, AcceptedAt: timestamppb.Now(), Source: "policy", SchemaVersion: 1,
			Tenant: &eventv1.Tenant{Reseller: "r1", Domain: "a.example"},
			Body:   &eventv1.Envelope_Config{Config: &eventv1.ConfigChanged{Entity: entity, EntityId: id, Actor: "ops", BeforeJson: before, AfterJson: after}},
		}
		if _, err := bus.PublishEnvelope(ctx, d.JS, subject, id, env); err != nil {
			t.Fatal(err)
		}
	}
	at := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC).Format(time.RFC3339)
	old("v1-hold", d.Names.HoldSubject(), "legal_hold", "",
		`{"id":"hold-v1","reseller":"r1","domain":"a.example","user":"102","reason":"old case","placed_by":"ops","placed_at":"`+at+`"}`)
	old("v1-override", d.Names.PolicySubject(), "policy_override", "",
		`{"kind":"voicemail","node":{"Level":3,"Reseller":"r1","Domain":"a.example","User":""},"fields":{"MinStorageDays":10,"Retention":{"Days":45}},"updated_by":"ops","updated_at":"`+at+`"}`)
	old("v1-bundle", d.Names.PolicySubject(), "bundle_assignment", "",
		`{"domain":"a.example","bundle":"CDS-500","data_rotation_months":60,"assigned_by":"ops","assigned_at":"`+at+`"}`)

	wipeRedis(t, d)
	if _, err := svc.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	hs, err := svc.ListHolds(ctx, system, "a.example", "")
	if err != nil || len(hs) != 1 || hs[0].ID != "hold-v1" || hs[0].User != "102" {
		t.Fatalf("holds after replay = %+v, %v; want only the JSON-era hold-v1", hs, err)
	}
	pol, err := svc.Resolve(ctx, system, vmKind, &eventv1.Tenant{Domain: "a.example"})
	if err != nil || pol.Retention.Duration != retention.Days(45) || pol.MinStorage != retention.Days(10) || pol.RetentionFrom != retention.LevelDomain {
		t.Fatalf("voicemail policy after replay = %+v, %v; want the JSON-era 45 days over 10", pol, err)
	}
	pol, err = svc.Resolve(ctx, system, auto, &eventv1.Tenant{Domain: "a.example"})
	if err != nil || pol.RetentionFrom != retention.LevelPreset {
		t.Fatalf("the deleted override came back: %+v, %v", pol, err)
	}
	a, err := svc.Assignment(ctx, "a.example")
	if err != nil || a.Bundle != "CDS-500" || a.RotationMonths != 60 {
		t.Fatalf("bundle after replay = %+v, %v; want the JSON-era CDS-500", a, err)
	}
}
