package catalog_test

import (
	"errors"
	"testing"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/catalog"
)

// TestApplyDomainFirstWins: the first provisioning of a domain decides its
// reseller; a later one for another reseller changes nothing, and the
// registry reads back what was recorded.
func TestApplyDomainFirstWins(t *testing.T) {
	t.Parallel()
	c := newCatalog(t)
	ctx := ctxT(t)
	first := catalog.Domain{Domain: "a.example", Reseller: "r1", ProvisionedBy: "ops", ProvisionedAt: base}
	if owner, err := c.ApplyDomain(ctx, first, 0); err != nil || owner != "r1" {
		t.Fatalf("first = %q, %v", owner, err)
	}
	if owner, err := c.ApplyDomain(ctx, catalog.Domain{Domain: "a.example", Reseller: "r2", ProvisionedBy: "r2", ProvisionedAt: base.Add(1)}, 0); err != nil || owner != "r1" {
		t.Fatalf("second = %q, %v; want r1 kept", owner, err)
	}
	if got, err := c.GetDomain(ctx, "a.example"); err != nil || got != first {
		t.Fatalf("GetDomain = %+v, %v; want %+v", got, err, first)
	}
	if _, err := c.GetDomain(ctx, "b.example"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("GetDomain(unprovisioned) = %v", err)
	}
	if _, ok, err := c.DomainOwner(ctx, "b.example"); ok || err != nil {
		t.Fatalf("DomainOwner(unprovisioned) = %v, %v", ok, err)
	}
	if _, err := c.ApplyDomain(ctx, catalog.Domain{Domain: "b.example", Reseller: "r2", ProvisionedAt: base}, 0); err != nil {
		t.Fatal(err)
	}
	for reseller, want := range map[string]int{"": 2, "r1": 1, "r2": 1, "r3": 0} {
		if ds, err := c.Domains(ctx, reseller); err != nil || len(ds) != want {
			t.Fatalf("Domains(%q) = %v, %v; want %d", reseller, ds, err, want)
		}
	}
}

// TestAuthorizeDomainRefusesUnprovisioned: an unprovisioned domain is not
// found for a system token and forbidden (like another reseller's) for
// anyone else.
func TestAuthorizeDomainRefusesUnprovisioned(t *testing.T) {
	t.Parallel()
	c := newCatalog(t)
	ctx := ctxT(t)
	if _, err := c.ApplyDomain(ctx, catalog.Domain{Domain: "a.example", Reseller: "r1", ProvisionedAt: base}, 0); err != nil {
		t.Fatal(err)
	}
	sys := auth.Principal{Name: "ops", Level: auth.LevelSystem}
	r1 := auth.Principal{Name: "r1", Level: auth.LevelReseller, Reseller: "r1"}
	r2 := auth.Principal{Name: "r2", Level: auth.LevelReseller, Reseller: "r2"}
	grab := auth.Principal{Name: "grab", Level: auth.LevelDomain, Reseller: "r2", Domain: "a.example"}
	for _, tc := range []struct {
		p      auth.Principal
		domain string
		want   error
	}{
		{sys, "a.example", nil},
		{r1, "a.example", nil},
		{sys, "new.example", apierr.ErrNotFound},
		{r1, "new.example", apierr.ErrForbidden},
		{r2, "a.example", apierr.ErrForbidden},
		{grab, "a.example", apierr.ErrForbidden},
	} {
		_, err := c.AuthorizeDomain(ctx, tc.p, tc.domain)
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("AuthorizeDomain(%s, %s) = %v, want %v", tc.p.Name, tc.domain, err, tc.want)
		}
	}
}
