package policy_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/testenv"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
)

var (
	r1Admin = auth.Principal{Name: "r1-admin", Level: auth.LevelReseller, Reseller: "r1"}
	r2Admin = auth.Principal{Name: "r2-admin", Level: auth.LevelReseller, Reseller: "r2"}
)

func domainNames(ds []catalog.Domain) []string {
	out := []string{}
	for _, d := range ds {
		out = append(out, d.Domain+"@"+d.Reseller)
	}
	return out
}

// TestProvisionDomain: a domain belongs to exactly one reseller, chosen by
// whoever may provision it (a system token, or the reseller itself);
// provisioning again to the same reseller is idempotent and to another a
// conflict; reads never show another reseller's domains.
func TestProvisionDomain(t *testing.T) {
	t.Parallel()
	_, svc := setup(t) // a.example and friends under r1
	ctx := context.Background()

	d, created, err := svc.ProvisionDomain(ctx, r1Admin, "new.example", "")
	if err != nil || !created || d.Reseller != "r1" || d.ProvisionedBy != "r1-admin" || d.ProvisionedAt.IsZero() {
		t.Fatalf("reseller provisioning its own domain = %+v, %v, %v", d, created, err)
	}
	if d, created, err := svc.ProvisionDomain(ctx, r1Admin, "new.example", "r1"); err != nil || created || d.Reseller != "r1" {
		t.Fatalf("provisioning again = %+v, %v, %v; want the record, not created", d, created, err)
	}
	if _, _, err := svc.ProvisionDomain(ctx, system, "new.example", "r2"); !errors.Is(err, apierr.ErrConflict) {
		t.Fatalf("system provisioning r1's domain to r2 = %v, want a conflict", err)
	}
	if _, _, err := svc.ProvisionDomain(ctx, r2Admin, "a.example", ""); !errors.Is(err, apierr.ErrConflict) {
		t.Fatalf("r2 provisioning r1's domain = %v, want a conflict", err)
	}
	if _, _, err := svc.ProvisionDomain(ctx, r1Admin, "b.example", "r2"); !errors.Is(err, apierr.ErrForbidden) {
		t.Fatalf("r1 provisioning a domain for r2 = %v, want forbidden", err)
	}
	domainAdmin := auth.Principal{Name: "a-admin", Level: auth.LevelDomain, Reseller: "r1", Domain: "a.example"}
	if _, _, err := svc.ProvisionDomain(ctx, domainAdmin, "c.example", "r1"); !errors.Is(err, apierr.ErrForbidden) {
		t.Fatalf("a domain token provisioning = %v, want forbidden", err)
	}
	if got := violations(t, func() error { _, _, err := svc.ProvisionDomain(ctx, system, "Bad_Domain", ""); return err }()); !slices.Equal(got, []string{"domain", "reseller"}) {
		t.Fatalf("bad input named %v, want domain and reseller", got)
	}

	if _, err := svc.GetDomain(ctx, r2Admin, "a.example"); !errors.Is(err, apierr.ErrNotFound) {
		t.Fatalf("r2 reading r1's domain = %v, want not found", err)
	}
	if got, err := svc.GetDomain(ctx, domainAdmin, "a.example"); err != nil || got.Reseller != "r1" {
		t.Fatalf("the domain's own admin reading it = %+v, %v", got, err)
	}
	if _, _, err := svc.ProvisionDomain(ctx, r2Admin, "r2.example", ""); err != nil {
		t.Fatal(err)
	}
	list := func(p auth.Principal, reseller string) []string {
		t.Helper()
		ds, err := svc.ListDomains(ctx, p, reseller)
		if err != nil {
			t.Fatalf("ListDomains(%s, %q): %v", p.Name, reseller, err)
		}
		return domainNames(ds)
	}
	if got := list(r2Admin, ""); !slices.Equal(got, []string{"r2.example@r2"}) {
		t.Fatalf("r2 lists %v, want only its own domain", got)
	}
	if got := list(domainAdmin, ""); !slices.Equal(got, []string{"a.example@r1"}) {
		t.Fatalf("a domain admin lists %v, want its domain", got)
	}
	if got := list(system, "r2"); !slices.Equal(got, []string{"r2.example@r2"}) {
		t.Fatalf("system lists r2 as %v", got)
	}
	if _, err := svc.ListDomains(ctx, r2Admin, "r1"); !errors.Is(err, apierr.ErrForbidden) {
		t.Fatalf("r2 listing r1's domains = %v, want forbidden", err)
	}
}

// TestProvisioningSurvivesRebuild: provisioning is a config event, so a
// Redis loss repaired by replay restores every domain to its reseller, and
// a conflicting event later in the stream does not move a domain.
func TestProvisioningSurvivesRebuild(t *testing.T) {
	t.Parallel()
	d, svc := setup(t)
	ctx := context.Background()
	if _, _, err := svc.ProvisionDomain(ctx, r2Admin, "r2.example", ""); err != nil {
		t.Fatal(err)
	}
	// A racing provisioning of r2.example to r1 that reached the stream
	// after r2's (its live request was answered with a conflict).
	late := &eventv1.Envelope{Id: "domain-r2.example-r1", Source: "policy", SchemaVersion: 2,
		Body: &eventv1.Envelope_Config{Config: &eventv1.ConfigChanged{Entity: "domain", EntityId: "r2.example",
			After: &eventv1.ConfigPayload{Value: &eventv1.ConfigPayload_Domain{Domain: &eventv1.DomainRecord{Domain: "r2.example", Reseller: "r1"}}}}}}
	if _, err := bus.PublishEnvelope(ctx, d.JS, d.Names.DomainSubject("r2.example"), late.GetId(), late); err != nil {
		t.Fatal(err)
	}
	before, err := svc.ListDomains(ctx, system, "")
	if err != nil {
		t.Fatal(err)
	}
	wipeRedis(t, d)
	if ds, err := svc.ListDomains(ctx, system, ""); err != nil || len(ds) != 0 {
		t.Fatalf("after the wipe: %v, %v", ds, err)
	}
	if _, err := svc.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	after, err := svc.ListDomains(ctx, system, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(domainNames(before), domainNames(after)) || len(after) != 5 {
		t.Fatalf("rebuild restored %v, want %v", domainNames(after), domainNames(before))
	}
	for i := range after {
		if after[i] != before[i] {
			t.Fatalf("rebuild restored %+v, want %+v", after[i], before[i])
		}
	}
	if _, err := svc.GetDomain(ctx, r1Admin, "r2.example"); !errors.Is(err, apierr.ErrNotFound) {
		t.Fatalf("the late event moved r2.example to r1: %v", err)
	}
}

// TestDomainChecksFailClosed: when the domain registry cannot be read,
// provisioning and every domain-scoped check refuse instead of passing.
func TestDomainChecksFailClosed(t *testing.T) {
	t.Parallel()
	d, svc := setup(t)
	ctx := context.Background()
	faults := testenv.InjectRedisFaults(t, d.Redis)
	faults.Fail(d.Names.Namespace() + ":{domains}")
	if _, _, err := svc.ProvisionDomain(ctx, system, "z.example", "r1"); !errors.Is(err, apierr.ErrUnavailable) {
		t.Fatalf("provisioning without the registry = %v, want unavailable", err)
	}
	for _, p := range []auth.Principal{system, r1Admin, r2Admin} {
		if _, err := svc.ListHolds(ctx, p, "a.example", ""); !errors.Is(err, apierr.ErrUnavailable) {
			t.Fatalf("%s listing holds without the registry = %v, want unavailable", p.Name, err)
		}
		if _, err := svc.GetUsage(ctx, p, "a.example"); !errors.Is(err, apierr.ErrUnavailable) {
			t.Fatalf("%s reading usage without the registry = %v, want unavailable", p.Name, err)
		}
	}
	faults.Heal()
	if _, err := svc.ListHolds(ctx, r1Admin, "a.example", ""); err != nil {
		t.Fatalf("after healing: %v", err)
	}
	if _, err := svc.ListHolds(ctx, r2Admin, "a.example", ""); !errors.Is(err, apierr.ErrForbidden) {
		t.Fatalf("r2 listing r1's holds = %v, want forbidden", err)
	}
}

// TestRacingProvisioningsAgree: many requests provisioning one domain to
// two resellers at once end with one owner; every answer agrees with it,
// and a rebuild from the stream restores the same owner.
func TestRacingProvisioningsAgree(t *testing.T) {
	t.Parallel()
	d, svc := setup(t)
	ctx := context.Background()
	type answer struct {
		reseller string
		created  bool
		err      error
	}
	answers := make(chan answer, 16)
	for i := range 16 {
		p := []auth.Principal{r1Admin, r2Admin}[i%2]
		go func() {
			_, created, err := svc.ProvisionDomain(ctx, p, "race.example", "")
			answers <- answer{p.Reseller, created, err}
		}()
	}
	owner, created := "", 0
	var all []answer
	for range 16 {
		all = append(all, <-answers)
	}
	got, err := svc.GetDomain(ctx, system, "race.example")
	if err != nil {
		t.Fatal(err)
	}
	owner = got.Reseller
	for _, a := range all {
		switch {
		case a.reseller == owner && a.err == nil:
			if a.created {
				created++
			}
		case a.reseller != owner && errors.Is(a.err, apierr.ErrConflict):
		default:
			t.Errorf("%s was answered %v (created %v) but the owner is %s", a.reseller, a.err, a.created, owner)
		}
	}
	if created != 1 {
		t.Fatalf("%d answers said created, want 1", created)
	}
	wipeRedis(t, d)
	if _, err := svc.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := svc.GetDomain(ctx, system, "race.example"); err != nil || got.Reseller != owner {
		t.Fatalf("after rebuild the owner is %+v, %v; want %s", got, err, owner)
	}
}
