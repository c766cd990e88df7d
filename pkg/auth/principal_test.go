package auth_test

import (
	"testing"

	"github.com/callvault/callvault/pkg/auth"
)

// TestCoversComparesTheReseller: at every level a principal is judged by
// the domain's reseller of record, so a domain or user token minted under
// one reseller never covers a domain of the same name recorded under
// another.
func TestCoversComparesTheReseller(t *testing.T) {
	t.Parallel()
	sys := auth.Principal{Name: "ops", Level: auth.LevelSystem}
	r1 := auth.Principal{Name: "r1", Level: auth.LevelReseller, Reseller: "r1"}
	dom := auth.Principal{Name: "grab", Level: auth.LevelDomain, Reseller: "r1", Domain: "victim.example"}
	usr := auth.Principal{Name: "u", Level: auth.LevelUser, Reseller: "r1", Domain: "victim.example", User: "101"}
	for _, tc := range []struct {
		name                      string
		p                         auth.Principal
		reseller, domain, user    string
		covers, coversWholeDomain bool
	}{
		{"system", sys, "r2", "victim.example", "101", true, true},
		{"reseller, own", r1, "r1", "a.example", "101", true, true},
		{"reseller, other", r1, "r2", "victim.example", "101", false, false},
		{"reseller, unprovisioned", r1, "", "victim.example", "", false, false},
		{"domain, own", dom, "r1", "victim.example", "101", true, true},
		{"domain, same name under another reseller", dom, "r2", "victim.example", "101", false, false},
		{"domain, another domain", dom, "r1", "a.example", "101", false, false},
		{"user, own", usr, "r1", "victim.example", "101", true, false},
		{"user, same name under another reseller", usr, "r2", "victim.example", "101", false, false},
		{"user, another user", usr, "r1", "victim.example", "102", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := tc.p.Covers(tc.reseller, tc.domain, tc.user); got != tc.covers {
				t.Errorf("Covers = %v, want %v", got, tc.covers)
			}
			if got := tc.p.CoversDomain(tc.domain, tc.reseller); got != tc.coversWholeDomain {
				t.Errorf("CoversDomain = %v, want %v", got, tc.coversWholeDomain)
			}
		})
	}
}

// TestCoversScope: who may issue, list and revoke a token of which scope.
func TestCoversScope(t *testing.T) {
	t.Parallel()
	sys := auth.Principal{Level: auth.LevelSystem}
	r1 := auth.Principal{Level: auth.LevelReseller, Reseller: "r1"}
	a := auth.Principal{Level: auth.LevelDomain, Reseller: "r1", Domain: "a.example"}
	for _, tc := range []struct {
		name   string
		issuer auth.Principal
		scope  auth.Principal
		want   bool
	}{
		{"system any", sys, auth.Principal{Level: auth.LevelReseller, Reseller: "r2"}, true},
		{"reseller its domain", r1, auth.Principal{Level: auth.LevelDomain, Reseller: "r1", Domain: "a.example"}, true},
		{"reseller itself", r1, auth.Principal{Level: auth.LevelReseller, Reseller: "r1"}, true},
		{"reseller another reseller", r1, auth.Principal{Level: auth.LevelReseller, Reseller: "r2"}, false},
		{"reseller another reseller's domain", r1, auth.Principal{Level: auth.LevelDomain, Reseller: "r2", Domain: "b.example"}, false},
		{"domain its user", a, auth.Principal{Level: auth.LevelUser, Reseller: "r1", Domain: "a.example", User: "101"}, true},
		{"domain its own name under another reseller", a, auth.Principal{Level: auth.LevelDomain, Reseller: "r2", Domain: "a.example"}, false},
		{"domain its reseller", a, auth.Principal{Level: auth.LevelReseller, Reseller: "r1"}, false},
		{"domain system", a, auth.Principal{Level: auth.LevelSystem}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := tc.issuer.CoversScope(tc.scope); got != tc.want {
				t.Errorf("CoversScope = %v, want %v", got, tc.want)
			}
		})
	}
}
