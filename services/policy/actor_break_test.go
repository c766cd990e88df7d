package policy_test

import (
	"context"
	"testing"
	"time"

	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/testenv"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
	"github.com/callvault/callvault/services/policy"
)

// TestBreakActorNamesAreForgeable guards a defect an attack found (fixed): the audit trail names callers
// by a free-text token name that any issuer chooses. A reseller mints a
// domain token named "bootstrap"; the hold it places is recorded as placed
// by "bootstrap" (in Redis and in the config event), exactly as a hold of
// the operator's bootstrap token would be, and so is every token that
// token issues (issued_by). Actors should be recorded by something a
// caller cannot choose (the token id, with the level), or the name of the
// bootstrap token should be reserved.
func TestBreakActorNamesAreForgeable(t *testing.T) {
	t.Parallel()
	fs, err := cds.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := testenv.Deps(t, fs)
	svc, err := policy.New(d, policy.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	system := auth.Principal{Name: "ops", Level: auth.LevelSystem}
	if _, _, err := svc.ProvisionDomain(ctx, system, "a.example", "r1"); err != nil {
		t.Fatal(err)
	}
	reseller := auth.Principal{Name: "r1-admin", Level: auth.LevelReseller, Reseller: "r1"}
	tok, _, err := d.Tokens.Issue(ctx, reseller, auth.Principal{Name: "bootstrap", Level: auth.LevelDomain, Reseller: "r1", Domain: "a.example"}, time.Time{})
	if err != nil {
		return // the name is reserved
	}
	p, err := d.Tokens.Authenticate(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	boot, err := d.Tokens.Authenticate(ctx, testenv.BootstrapToken)
	if err != nil {
		t.Fatal(err)
	}
	h, err := svc.PlaceHold(ctx, p, &policyv1.Hold{Scope: &policyv1.Scope{Level: policyv1.Level_LEVEL_DOMAIN, Domain: "a.example"}, Reason: "litigation"})
	if err != nil {
		t.Fatal(err)
	}
	if h.PlacedBy == boot.Name {
		t.Errorf("a domain token's hold is recorded as placed by %q, the bootstrap token's own name", h.PlacedBy)
	}
	_, info, err := d.Tokens.Issue(ctx, p, auth.Principal{Name: "u", Level: auth.LevelUser, Reseller: "r1", Domain: "a.example", User: "101"}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if info.IssuedBy == boot.Name {
		t.Errorf("a token issued by a domain token reads issued_by %q, the bootstrap token's own name", info.IssuedBy)
	}
}
