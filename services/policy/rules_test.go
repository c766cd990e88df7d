package policy_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/pkg/retention"
	"github.com/callvault/callvault/pkg/testenv"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
	"github.com/callvault/callvault/services/policy"
)

const (
	auto     = eventv1.DataKind_DATA_KIND_RECORDING_AUTOMATIC
	onDemand = eventv1.DataKind_DATA_KIND_RECORDING_ON_DEMAND
	vmKind   = eventv1.DataKind_DATA_KIND_VOICEMAIL
)

var (
	domainAdmin   = auth.Principal{Name: "a-admin", Level: auth.LevelDomain, Reseller: "r1", Domain: "a.example"}
	resellerR1    = auth.Principal{Name: "r1-ops", Level: auth.LevelReseller, Reseller: "r1"}
	otherReseller = auth.Principal{Name: "r2-ops", Level: auth.LevelReseller, Reseller: "r2"}
)

// newService is a policy service on fresh test dependencies, with no
// domain provisioned.
func newService(t *testing.T, set policy.Settings) (*platform.Deps, *policy.Service) {
	t.Helper()
	store, err := cds.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := testenv.Deps(t, store)
	svc, err := policy.New(d, set)
	if err != nil {
		t.Fatal(err)
	}
	return d, svc
}

// runService runs svc until the test ends, and fails the test if Run
// returns an error.
func runService(t *testing.T, svc *policy.Service) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
}

// setupWith is setup with the operator's settings.
func setupWith(t *testing.T, set policy.Settings) (*platform.Deps, *policy.Service) {
	t.Helper()
	d, svc := newService(t, set)
	if _, err := catalog.New(d.Redis, d.Names.Namespace()).ApplyDomain(context.Background(), catalog.Domain{Domain: "a.example", Reseller: "r1", ProvisionedBy: "test", ProvisionedAt: time.Now()}, 0); err != nil {
		t.Fatal(err)
	}
	return d, svc
}

// admit publishes env and admits it as the consumer would.
func admit(t *testing.T, d *platform.Deps, svc *policy.Service, subject string, env *eventv1.Envelope) {
	t.Helper()
	ctx := context.Background()
	ack, err := bus.PublishEnvelope(ctx, d.JS, subject, env.GetId(), env)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Admit(ctx, env, ack.Sequence); err != nil {
		t.Fatal(err)
	}
}

// denied checks err is answered PermissionDenied over gRPC and names field.
func denied(t *testing.T, what string, err error, field string) {
	t.Helper()
	st, _ := status.FromError(apierr.GRPC(err))
	if err == nil || st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), field) {
		t.Errorf("%s: got %v (%v), want PermissionDenied naming %s", what, st.Code(), err, field)
	}
}

func domainScope(domain string) *policyv1.Scope {
	return &policyv1.Scope{Level: policyv1.Level_LEVEL_DOMAIN, Domain: domain}
}

// TestCommercialSettingsAreTheProviders: a domain admin cannot buy
// retention, lift or change a cap, lower a minimum, drop what the reseller
// sold, or release the reseller's or the system's hold; it may move its
// retention within what the provider grants. The reseller may change all
// of it; another reseller may touch none of it.
func TestCommercialSettingsAreTheProviders(t *testing.T) {
	t.Parallel()
	d, svc := setup(t)
	ctx := context.Background()
	started := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	admit(t, d, svc, d.Names.RecordingSubject(), recordingEvent("rec-1", 100, started))

	// The reseller keeps its recordings 12 months and sells a.example 90
	// days more: the domain is granted 12 months and 90 days.
	if _, err := svc.SetOverride(ctx, resellerR1, ov(auto, policyv1.Level_LEVEL_RESELLER, "r1", "", "", &policyv1.PolicyFields{RetentionMonths: i32(12)})); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.SetOverride(ctx, resellerR1, ov(auto, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", &policyv1.PolicyFields{PurchasedDays: i32(90)})); err != nil {
		t.Fatalf("the reseller could not sell retention to its domain: %v", err)
	}

	refused := []struct {
		name, field string
		o           *policyv1.Override
	}{
		{"buy retention", "override.fields.purchased_days", ov(auto, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", &policyv1.PolicyFields{PurchasedDays: i32(365)})},
		{"drop the purchase", "override.fields.purchased_days", ov(auto, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", &policyv1.PolicyFields{PurchasedDays: i32(0)})},
		{"lift the box cap", "override.fields.no_cap", ov(vmKind, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", &policyv1.PolicyFields{NoCap: yes()})},
		{"raise the box cap", "override.fields.cap", ov(vmKind, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", &policyv1.PolicyFields{Cap: &policyv1.Cap{Limit: 5000, Action: policyv1.CapAction_CAP_ACTION_REFUSE, Scope: policyv1.CapScope_CAP_SCOPE_BOX}})},
		{"lower the minimum", "override.fields.min_storage_days", ov(auto, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", &policyv1.PolicyFields{MinStorageDays: i32(30)})},
		{"lower a user's minimum", "override.fields.min_storage_months", ov(auto, policyv1.Level_LEVEL_USER, "", "a.example", "101", &policyv1.PolicyFields{MinStorageMonths: i32(1)})},
	}
	for _, tc := range refused {
		_, err := svc.SetOverride(ctx, domainAdmin, tc.o)
		denied(t, tc.name, err, tc.field)
	}
	err := svc.DeleteOverride(ctx, domainAdmin, auto, domainScope("a.example"))
	denied(t, "delete the override that holds the purchase", err, "override.fields.purchased_days")

	// Within the grant the domain admin shortens and lengthens; the
	// purchase it did not repeat stays.
	explainDeleteBy := func(want time.Time) {
		t.Helper()
		e, err := svc.Explain(ctx, domainAdmin, "a.example", "rec-1")
		if err != nil {
			t.Fatal(err)
		}
		if !e.DeleteBy.Equal(want) || e.Policy.PurchasedDays != 90 {
			t.Fatalf("delete by %v (purchased %d), want %v with the 90 purchased days", e.DeleteBy, e.Policy.PurchasedDays, want)
		}
	}
	if _, err := svc.SetOverride(ctx, domainAdmin, ov(auto, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", &policyv1.PolicyFields{RetentionMonths: i32(9)})); err != nil {
		t.Fatalf("domain admin shortening retention: %v", err)
	}
	explainDeleteBy(started.AddDate(0, 9, 90))
	if _, err := svc.SetOverride(ctx, domainAdmin, ov(auto, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", &policyv1.PolicyFields{RetentionMonths: i32(12), PurchasedDays: i32(90)})); err != nil {
		t.Fatalf("domain admin lengthening retention to the grant: %v", err)
	}
	explainDeleteBy(started.AddDate(0, 12, 90))
	_, err = svc.SetOverride(ctx, domainAdmin, ov(auto, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", &policyv1.PolicyFields{RetentionMonths: i32(16)}))
	denied(t, "lengthen beyond the grant", err, "override.fields.retention_months")
	explainDeleteBy(started.AddDate(0, 12, 90))

	// The reseller changes the commercial fields.
	if _, err := svc.SetOverride(ctx, resellerR1, ov(auto, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", &policyv1.PolicyFields{RetentionMonths: i32(20), PurchasedDays: i32(90), MinStorageMonths: i32(7)})); err != nil {
		t.Fatalf("the reseller changing its domain: %v", err)
	}
	e, err := svc.Explain(ctx, resellerR1, "a.example", "rec-1")
	if err != nil || !e.DeleteBy.Equal(started.AddDate(0, 20, 90)) || !e.Cullable.Equal(started.AddDate(0, 7, 0)) {
		t.Fatalf("after the reseller's change: %+v, %v", e, err)
	}

	// Holds: the domain admin releases its own, not the reseller's or the system's.
	own, err := svc.PlaceHold(ctx, domainAdmin, holdOn("a.example", "", "", "internal review"))
	if err != nil {
		t.Fatal(err)
	}
	rh, err := svc.PlaceHold(ctx, resellerR1, holdOn("a.example", "", "", "reseller audit"))
	if err != nil {
		t.Fatal(err)
	}
	sh, err := svc.PlaceHold(ctx, system, holdOn("a.example", "101", "", "subpoena"))
	if err != nil {
		t.Fatal(err)
	}
	denied(t, "release the reseller's hold", svc.ReleaseHold(ctx, domainAdmin, rh.ID, "done"), "reseller level")
	denied(t, "release the system's hold", svc.ReleaseHold(ctx, domainAdmin, sh.ID, "done"), "system level")
	if err := svc.ReleaseHold(ctx, domainAdmin, own.ID, "review finished"); err != nil {
		t.Fatalf("domain admin releasing its own hold: %v", err)
	}
	if err := svc.ReleaseHold(ctx, resellerR1, rh.ID, "audit finished"); err != nil {
		t.Fatalf("the reseller releasing its hold: %v", err)
	}
	hs, err := svc.ListHolds(ctx, system, "a.example", "")
	if err != nil || len(hs) != 1 || hs[0].ID != sh.ID {
		t.Fatalf("holds left = %+v, %v; want only the system's", hs, err)
	}

	// Another reseller touches nothing of a.example.
	_, err = svc.SetOverride(ctx, otherReseller, ov(auto, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", &policyv1.PolicyFields{RetentionMonths: i32(3)}))
	denied(t, "another reseller sets an override", err, "a.example")
	denied(t, "another reseller deletes an override", svc.DeleteOverride(ctx, otherReseller, auto, domainScope("a.example")), "a.example")
	_, err = svc.SetOverride(ctx, otherReseller, ov(auto, policyv1.Level_LEVEL_RESELLER, "r1", "", "", &policyv1.PolicyFields{RetentionMonths: i32(3)}))
	denied(t, "another reseller sets r1's override", err, "r1")
	if err := svc.ReleaseHold(ctx, otherReseller, sh.ID, "x"); !errors.Is(err, apierr.ErrNotFound) {
		t.Errorf("another reseller releasing a hold: %v, want not found", err)
	}
	if _, err := svc.Explain(ctx, otherReseller, "a.example", "rec-1"); !errors.Is(err, apierr.ErrForbidden) {
		t.Errorf("another reseller explaining: %v, want forbidden", err)
	}
	e, err = svc.Explain(ctx, system, "a.example", "rec-1")
	if err != nil || !e.DeleteBy.Equal(started.AddDate(0, 20, 90)) {
		t.Fatalf("the other reseller changed something: %+v, %v", e, err)
	}
}

// overrideEvent is a config event as one stored before SetOverride
// checked the nodes below a change.
func overrideEvent(id string, o *eventv1.RetentionOverride) *eventv1.Envelope {
	return &eventv1.Envelope{
		Id: id, AcceptedAt: timestamppb.Now(), Source: "policy", Type: "config.override.set", SchemaVersion: 2,
		Tenant: &eventv1.Tenant{Reseller: o.GetReseller(), Domain: o.GetDomain()},
		Body: &eventv1.Envelope_Config{Config: &eventv1.ConfigChanged{Entity: "policy_override", EntityId: id, Actor: "ops",
			After: &eventv1.ConfigPayload{Value: &eventv1.ConfigPayload_Override{Override: o}}}},
	}
}

// TestMinimumIsAFloor: a reseller minimum of 400 days over a domain's
// retention of 365 is refused; a state that holds it anyway (written
// before the check) resolves clamped and Explain never dates deletion
// inside the guarantee; deleting an override that would expose a short
// retention below it is refused.
func TestMinimumIsAFloor(t *testing.T) {
	t.Parallel()
	d, svc := setup(t)
	ctx := context.Background()
	started := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	admit(t, d, svc, d.Names.RecordingSubject(), recordingEvent("rec-1", 100, started))

	if _, err := svc.SetOverride(ctx, resellerR1, ov(auto, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", &policyv1.PolicyFields{RetentionDays: i32(365)})); err != nil {
		t.Fatal(err)
	}
	_, err := svc.SetOverride(ctx, resellerR1, ov(auto, policyv1.Level_LEVEL_RESELLER, "r1", "", "", &policyv1.PolicyFields{MinStorageDays: i32(400)}))
	if got := violations(t, err); len(got) != 1 || got[0] != "override.fields.min_storage_days" || !strings.Contains(err.Error(), "a.example") {
		t.Fatalf("reseller minimum over the domain's retention: %v (%v), want refused naming min_storage_days and a.example", got, err)
	}
	_, err = svc.SetOverride(ctx, system, ov(auto, policyv1.Level_LEVEL_SYSTEM, "", "", "", &policyv1.PolicyFields{MinStorageDays: i32(400)}))
	if got := violations(t, err); len(got) != 1 || got[0] != "override.fields.min_storage_days" {
		t.Fatalf("system minimum over the domain's retention: %v", got)
	}
	pol, err := svc.Resolve(ctx, system, auto, &eventv1.Tenant{Domain: "a.example"})
	if err != nil || pol.MinStorage != retention.Months(6) || pol.RetentionClamped {
		t.Fatalf("a refused minimum changed the policy: %+v, %v", pol, err)
	}

	// The same state arriving from the stream (written before the check).
	if err := svc.ApplyConfig(ctx, overrideEvent("old-min", &eventv1.RetentionOverride{
		Kind: auto, Level: "reseller", Reseller: "r1", MinStorage: &eventv1.CalendarDuration{Days: 400}, UpdatedBy: "ops",
	}), 0); err != nil {
		t.Fatal(err)
	}
	e, err := svc.Explain(ctx, system, "a.example", "rec-1")
	if err != nil {
		t.Fatal(err)
	}
	cullable := started.AddDate(0, 0, 400)
	if !e.Cullable.Equal(cullable) || !e.DeleteBy.Equal(cullable) || !e.Policy.RetentionClamped || e.Policy.Retention.Duration != retention.Days(400) {
		t.Fatalf("explain of a conflicting state: cullable %v, delete by %v, clamped %v, retention %v; want both %v and clamped",
			e.Cullable, e.DeleteBy, e.Policy.RetentionClamped, e.Policy.Retention, cullable)
	}

	// Deleting an override that would expose a short retention below it.
	if _, err := svc.SetOverride(ctx, resellerR1, ov(onDemand, policyv1.Level_LEVEL_RESELLER, "r1", "", "", &policyv1.PolicyFields{MinStorageDays: i32(400), RetentionDays: i32(500)})); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.SetOverride(ctx, resellerR1, ov(onDemand, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", &policyv1.PolicyFields{MinStorageDays: i32(100)})); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.SetOverride(ctx, resellerR1, ov(onDemand, policyv1.Level_LEVEL_USER, "", "a.example", "101", &policyv1.PolicyFields{RetentionDays: i32(200)})); err != nil {
		t.Fatal(err)
	}
	err = svc.DeleteOverride(ctx, resellerR1, onDemand, domainScope("a.example"))
	if got := violations(t, err); len(got) != 1 || got[0] != "scope" || !strings.Contains(err.Error(), "user 101") {
		t.Fatalf("delete exposing user 101's 200 days under the 400-day minimum: %v (%v)", got, err)
	}
	pol, err = svc.Resolve(ctx, system, onDemand, &eventv1.Tenant{Domain: "a.example", User: "101"})
	if err != nil || pol.MinStorage != retention.Days(100) || pol.Retention.Duration != retention.Days(200) || pol.RetentionClamped {
		t.Fatalf("a refused deletion changed the policy: %+v, %v", pol, err)
	}
	// Removing the user's short retention first makes the deletion valid.
	if err := svc.DeleteOverride(ctx, resellerR1, onDemand, &policyv1.Scope{Level: policyv1.Level_LEVEL_USER, Domain: "a.example", User: "101"}); err != nil {
		t.Fatal(err)
	}
	if err := svc.DeleteOverride(ctx, resellerR1, onDemand, domainScope("a.example")); err != nil {
		t.Fatal(err)
	}
}

// TestExplainCountsCalendarMonths: a six-month guarantee from 1 March
// ends on 1 September (not 183 days later, 31 August).
func TestExplainCountsCalendarMonths(t *testing.T) {
	t.Parallel()
	d, svc := setup(t)
	ctx := context.Background()
	started := time.Date(2027, 3, 1, 9, 30, 0, 0, time.UTC)
	admit(t, d, svc, d.Names.RecordingSubject(), recordingEvent("rec-march", 100, started))
	e, err := svc.Explain(ctx, domainAdmin, "a.example", "rec-march")
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2027, 9, 1, 9, 30, 0, 0, time.UTC); !e.Cullable.Equal(want) {
		t.Fatalf("cullable at %v, want %v", e.Cullable, want)
	}
	if want := time.Date(2029, 3, 1, 9, 30, 0, 0, time.UTC); !e.DeleteBy.Equal(want) {
		t.Fatalf("delete by %v, want %v (24 calendar months)", e.DeleteBy, want)
	}
	if e.Policy.MinStorage != retention.Months(6) {
		t.Fatalf("minimum %v, want 6 months", e.Policy.MinStorage)
	}
}

// TestExplainUsesTheArtifactsKind: a voicemail is explained by the
// voicemail policy (kept until deleted, then by its own override), not
// as an automatic recording.
func TestExplainUsesTheArtifactsKind(t *testing.T) {
	t.Parallel()
	d, svc := setup(t)
	ctx := context.Background()
	received := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	admit(t, d, svc, d.Names.MessageSubject(), messageEvent("vm-1", "a.example", "101", vmKind, eventv1.MessageFolder_MESSAGE_FOLDER_UNSPECIFIED, received))
	e, err := svc.Explain(ctx, domainAdmin, "a.example", "vm-1")
	if err != nil {
		t.Fatal(err)
	}
	if e.Policy.Kind != retention.Voicemail || !e.DeleteBy.IsZero() || !e.Cullable.Equal(received) {
		t.Fatalf("voicemail explained as %s: cullable %v, delete by %v; want voicemail, cullable at once, never deleted", e.Policy.Kind, e.Cullable, e.DeleteBy)
	}
	if _, err := svc.SetOverride(ctx, domainAdmin, ov(vmKind, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", &policyv1.PolicyFields{RetentionDays: i32(60)})); err != nil {
		t.Fatal(err)
	}
	e, err = svc.Explain(ctx, domainAdmin, "a.example", "vm-1")
	if err != nil || !e.DeleteBy.Equal(received.AddDate(0, 0, 60)) || e.Policy.RetentionFrom != retention.LevelDomain {
		t.Fatalf("voicemail after a 60-day domain override: %+v, %v", e, err)
	}
}

// TestRecordingCeilingIsTheOperators: with a ceiling of 120 months
// recordings can be bought up to ten years; the shipped default stops at
// two.
func TestRecordingCeilingIsTheOperators(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	started := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)

	d, svc := setupWith(t, policy.Settings{RecordingCeilingMonths: 120})
	admit(t, d, svc, d.Names.RecordingSubject(), recordingEvent("rec-1", 100, started))
	if _, err := svc.SetOverride(ctx, resellerR1, ov(auto, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", &policyv1.PolicyFields{PurchasedDays: i32(3000)})); err != nil {
		t.Fatalf("purchase up to ten years with a 120-month ceiling: %v", err)
	}
	e, err := svc.Explain(ctx, system, "a.example", "rec-1")
	if err != nil {
		t.Fatal(err)
	}
	if !e.DeleteBy.Equal(started.AddDate(10, 0, 0)) || !e.Policy.PurchaseCapped || e.Policy.Ceiling != retention.Months(120) {
		t.Fatalf("10-year ceiling: delete by %v (capped %v, ceiling %v), want %v", e.DeleteBy, e.Policy.PurchaseCapped, e.Policy.Ceiling, started.AddDate(10, 0, 0))
	}
	if _, err := svc.SetOverride(ctx, resellerR1, ov(auto, policyv1.Level_LEVEL_USER, "", "a.example", "101", &policyv1.PolicyFields{RetentionMonths: i32(120)})); err != nil {
		t.Fatalf("a 120-month retention under a 120-month ceiling: %v", err)
	}

	d2, def := setup(t)
	admit(t, d2, def, d2.Names.RecordingSubject(), recordingEvent("rec-1", 100, started))
	_, err = def.SetOverride(ctx, resellerR1, ov(auto, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", &policyv1.PolicyFields{PurchasedDays: i32(3000)}))
	if got := violations(t, err); len(got) != 1 || got[0] != "override.fields.purchased_days" {
		t.Fatalf("3000 purchased days under the default ceiling: %v", got)
	}
	_, err = def.SetOverride(ctx, resellerR1, ov(auto, policyv1.Level_LEVEL_USER, "", "a.example", "101", &policyv1.PolicyFields{RetentionMonths: i32(120)}))
	if got := violations(t, err); len(got) != 1 || got[0] != "override.fields.retention_months" {
		t.Fatalf("120 months under the default ceiling: %v", got)
	}
	if _, err := def.SetOverride(ctx, resellerR1, ov(auto, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", &policyv1.PolicyFields{PurchasedDays: i32(700)})); err != nil {
		t.Fatal(err)
	}
	e, err = def.Explain(ctx, system, "a.example", "rec-1")
	if err != nil || !e.DeleteBy.Equal(started.AddDate(2, 0, 0)) || !e.Policy.PurchaseCapped {
		t.Fatalf("default ceiling: %+v, %v; want deletion two years on, purchase capped", e, err)
	}
}

func yes() *bool { t := true; return &t }
