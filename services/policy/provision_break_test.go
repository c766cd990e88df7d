package policy_test

import (
	"context"
	"testing"

	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/testenv"
	"github.com/callvault/callvault/services/policy"
)

// TestBreakProvisionMessageIDCollides guards a defect an attack found (fixed): the provisioning event's
// Nats-Msg-Id, "domain-" + domain + "-" + reseller, is ambiguous: domain
// and reseller names may both contain "-", so ("pbx.example-acme", "east")
// and ("pbx.example", "acme-east") share the id "domain-pbx.example-acme-east".
// The stream deduplicates the second provisioning against the first (the
// duplicate window is stream-wide, not per subject), ProvisionDomain takes
// the duplicate ack for its own retry and writes the domain to Redis only.
// The domain is then answered as provisioned, but no event records it: the
// next rebuild (a Redis restart, an old snapshot) forgets it, its tokens and
// reads stop working, and any other reseller may provision it afresh.
// A reseller that chooses its domain names can do this to another
// reseller's domain on purpose by provisioning the colliding name first.
func TestBreakProvisionMessageIDCollides(t *testing.T) {
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
	east := auth.Principal{Name: "east-admin", Level: auth.LevelReseller, Reseller: "east"}
	victim := auth.Principal{Name: "acme-admin", Level: auth.LevelReseller, Reseller: "acme-east"}
	system := auth.Principal{Name: "ops", Level: auth.LevelSystem}

	if _, created, err := svc.ProvisionDomain(ctx, east, "pbx.example-acme", "east"); err != nil || !created {
		t.Fatalf("provision pbx.example-acme to east: created %v, %v", created, err)
	}
	if _, _, err := svc.ProvisionDomain(ctx, victim, "pbx.example", "acme-east"); err != nil {
		t.Fatalf("provision pbx.example to acme-east: %v", err)
	}
	if got, err := svc.GetDomain(ctx, system, "pbx.example"); err != nil || got.Reseller != "acme-east" {
		t.Fatalf("pbx.example before the rebuild: %+v, %v", got, err)
	}

	st, err := d.JS.Stream(ctx, d.Names.ConfigStream())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetLastMsgForSubject(ctx, d.Names.DomainSubject("pbx.example")); err != nil {
		t.Errorf("pbx.example was answered as provisioned but the stream holds no provisioning of it: %v", err)
	}

	flush(t, d)
	if _, err := svc.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := svc.GetDomain(ctx, system, "pbx.example"); err != nil || got.Reseller != "acme-east" {
		t.Errorf("after a rebuild pbx.example is %+v, %v; want it provisioned to acme-east", got, err)
	}
	if _, created, err := svc.ProvisionDomain(ctx, east, "pbx.example", "east"); err == nil {
		t.Errorf("after a rebuild reseller east took pbx.example (created %v)", created)
	}
}
