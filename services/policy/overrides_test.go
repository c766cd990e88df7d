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
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/retention"
	"github.com/callvault/callvault/pkg/testenv"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
	"github.com/callvault/callvault/services/policy"
)

func i32(v int32) *int32 { return &v }

func ov(kind eventv1.DataKind, level policyv1.Level, reseller, domain, user string, f *policyv1.PolicyFields) *policyv1.Override {
	return &policyv1.Override{Kind: kind, Scope: &policyv1.Scope{Level: level, Reseller: reseller, Domain: domain, User: user}, Fields: f}
}

func violations(t *testing.T, err error) []string {
	t.Helper()
	var ve *apierr.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("got %v, want a validation error", err)
	}
	var out []string
	for _, f := range ve.Violations {
		out = append(out, f.Field)
	}
	slices.Sort(out)
	return out
}

// TestOverrides: precedence with the level that set each field, every
// validation error named, tenant scoping, the audit events, and a policy
// change re-dating a recording already stored.
func TestOverrides(t *testing.T) {
	t.Parallel()
	d, svc := setup(t) // the default preset, guarantee-6-months
	ctx := context.Background()
	started := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	env := recordingEvent("rec-1", 100, started)
	ack, err := bus.PublishEnvelope(ctx, d.JS, d.Names.RecordingSubject(), "rec-1", env)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Admit(ctx, env, ack.Sequence); err != nil {
		t.Fatal(err)
	}
	auto := eventv1.DataKind_DATA_KIND_RECORDING_AUTOMATIC

	e, err := svc.Explain(ctx, system, "a.example", "rec-1")
	if err != nil {
		t.Fatal(err)
	}
	if !e.Cullable.Equal(started.AddDate(0, 6, 0)) || !e.DeleteBy.Equal(started.AddDate(0, 24, 0)) || e.Policy.RetentionFrom != retention.LevelPreset {
		t.Fatalf("preset explain: %+v", e)
	}

	// Reseller sets retention, domain sets the minimum: field by field.
	if _, err := svc.SetOverride(ctx, system, ov(auto, policyv1.Level_LEVEL_RESELLER, "r1", "", "", &policyv1.PolicyFields{RetentionDays: i32(400)})); err != nil {
		t.Fatal(err)
	}
	domainAdmin := auth.Principal{Name: "a-admin", Level: auth.LevelDomain, Reseller: "r1", Domain: "a.example"}
	if _, err := svc.SetOverride(ctx, system, ov(auto, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", &policyv1.PolicyFields{MinStorageDays: i32(200)})); err != nil {
		t.Fatal(err)
	}
	pol, err := svc.Resolve(ctx, domainAdmin, auto, &eventv1.Tenant{Domain: "a.example", User: "101"})
	if err != nil {
		t.Fatal(err)
	}
	if pol.MinStorage != retention.Days(200) || pol.MinStorageFrom != retention.LevelDomain || pol.Retention.Duration != retention.Days(400) || pol.RetentionFrom != retention.LevelReseller || pol.CapFrom != retention.LevelPreset {
		t.Fatalf("resolved %+v", pol)
	}

	// Buying retention re-dates the stored recording.
	if _, err := svc.SetOverride(ctx, system, ov(auto, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", &policyv1.PolicyFields{MinStorageDays: i32(200), PurchasedDays: i32(300)})); err != nil {
		t.Fatal(err)
	}
	e, err = svc.Explain(ctx, domainAdmin, "a.example", "rec-1")
	if err != nil {
		t.Fatal(err)
	}
	if !e.DeleteBy.Equal(started.AddDate(0, 0, 700)) || e.Policy.PurchasedDays != 300 || !e.Cullable.Equal(started.AddDate(0, 0, 200)) {
		t.Fatalf("after purchase: delete by %v (purchased %d), cullable %v", e.DeleteBy, e.Policy.PurchasedDays, e.Cullable)
	}

	// Validation: each refusal names its field.
	cases := []struct {
		name string
		o    *policyv1.Override
		want []string
	}{
		{"retention under the minimum", ov(eventv1.DataKind_DATA_KIND_CDR, policyv1.Level_LEVEL_USER, "", "a.example", "101", &policyv1.PolicyFields{RetentionDays: i32(100)}), []string{"override.fields.retention_days"}},
		{"negative minimum", ov(auto, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", &policyv1.PolicyFields{MinStorageDays: i32(-3)}), []string{"override.fields.min_storage_days"}},
		{"absurd retention", ov(auto, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", &policyv1.PolicyFields{RetentionDays: i32(99999)}), []string{"override.fields.retention_days"}},
		{"unknown kind", ov(eventv1.DataKind(99), policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", &policyv1.PolicyFields{}), []string{"override.kind"}},
		{"cap without action", ov(eventv1.DataKind_DATA_KIND_SMS, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", &policyv1.PolicyFields{Cap: &policyv1.Cap{Limit: 10, Scope: policyv1.CapScope_CAP_SCOPE_USER_FOLDER}}), []string{"override.fields.cap.action"}},
		{"user override without a domain", ov(auto, policyv1.Level_LEVEL_USER, "", "", "101", &policyv1.PolicyFields{RetentionDays: i32(400)}), []string{"override.scope.domain"}},
		{"no level", ov(auto, policyv1.Level_LEVEL_UNSPECIFIED, "", "a.example", "", &policyv1.PolicyFields{}), []string{"override.scope.level"}},
	}
	for _, tc := range cases {
		_, err := svc.SetOverride(ctx, system, tc.o)
		if got := violations(t, err); !slices.Equal(got, tc.want) {
			t.Errorf("%s: violations %v, want %v", tc.name, got, tc.want)
		}
	}

	// Scoping.
	other := auth.Principal{Name: "b-admin", Level: auth.LevelDomain, Reseller: "r1", Domain: "b.example"}
	if _, err := svc.SetOverride(ctx, other, ov(auto, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", &policyv1.PolicyFields{RetentionDays: i32(400)})); !errors.Is(err, apierr.ErrForbidden) {
		t.Fatalf("another domain's admin set an override: %v", err)
	}
	if _, err := svc.SetOverride(ctx, domainAdmin, ov(auto, policyv1.Level_LEVEL_RESELLER, "r1", "", "", &policyv1.PolicyFields{RetentionDays: i32(500)})); !errors.Is(err, apierr.ErrForbidden) {
		t.Fatalf("a domain admin set a reseller override: %v", err)
	}
	if _, err := svc.Explain(ctx, other, "a.example", "rec-1"); !errors.Is(err, apierr.ErrForbidden) {
		t.Fatalf("another domain's admin explained an artifact: %v", err)
	}

	// Deleting the domain override falls back to the reseller's; the
	// stream holds who changed what, before and after.
	if err := svc.DeleteOverride(ctx, system, auto, &policyv1.Scope{Level: policyv1.Level_LEVEL_DOMAIN, Domain: "a.example"}); err != nil {
		t.Fatal(err)
	}
	e, err = svc.Explain(ctx, system, "a.example", "rec-1")
	if err != nil || !e.DeleteBy.Equal(started.AddDate(0, 0, 400)) || e.Policy.MinStorageFrom != retention.LevelPreset {
		t.Fatalf("after delete: %+v, %v", e, err)
	}
	var events []*eventv1.ConfigChanged
	if _, _, err := bus.Replay(ctx, d.JS, d.Names.ConfigStream(), []string{d.Names.PolicySubject()}, func(_ context.Context, env *eventv1.Envelope, _ uint64) error {
		events = append(events, env.GetConfig())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(events) != 4 {
		t.Fatalf("%d override events, want 4 (reseller set, domain set, domain changed, domain deleted)", len(events))
	}
	if c := events[2]; c.GetActor() != "ops" || c.GetBefore().GetOverride() == nil || c.GetAfter().GetOverride() == nil {
		t.Fatalf("change event lacks who, before or after: %v", c)
	}
	if c := events[3]; c.GetBefore().GetOverride() == nil || c.GetAfter() != nil {
		t.Fatalf("delete event: %v", c)
	}

	// A Redis loss is repaired by replay.
	wipeRedis(t, d)
	if _, err := svc.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	pol, err = svc.Resolve(ctx, system, auto, &eventv1.Tenant{Reseller: "r1", Domain: "a.example"})
	if err != nil || pol.Retention.Duration != retention.Days(400) || pol.RetentionFrom != retention.LevelReseller {
		t.Fatalf("after rebuild: %+v, %v", pol, err)
	}
}

func TestUnknownPresetIsRefused(t *testing.T) {
	t.Parallel()
	store, err := cds.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := policy.New(testenv.Deps(t, store), policy.Settings{Preset: "keep-forever"}); err == nil {
		t.Fatal("unknown preset accepted")
	}
}
