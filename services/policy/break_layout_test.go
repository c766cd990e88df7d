package policy_test

import (
	"context"
	"errors"
	"maps"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/testenv"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	"github.com/callvault/callvault/services/policy"
)

// TestBreakDomainNumbersChangeOnRebuild: ProvisionDomain publishes, then
// applies. When the apply fails once (Redis hiccup) and is retried after
// another domain's provisioning, the live domain numbers follow apply
// order while a rebuild numbers them in config stream order. The catalog's
// id claims name domains by number, and every Reader (gateway, ingest)
// keeps the numbers it has read for the life of the process: after a
// rebuild such a Reader no longer finds the domain's recordings.
func TestBreakDomainNumbersChangeOnRebuild(t *testing.T) {
	t.Parallel()
	store, err := cds.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := testenv.Deps(t, store)
	svc, err := policy.New(d, policy.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ns := d.Names.Namespace()
	faults := testenv.InjectRedisFaults(t, d.Redis)
	faults.Fail(ns + ":{domains}:seq") // only the provisioning script names it
	if _, _, err := svc.ProvisionDomain(ctx, system, "first.example", "r1"); !errors.Is(err, apierr.ErrUnavailable) {
		t.Fatalf("provisioning with a failing apply = %v, want unavailable (published, not applied)", err)
	}
	faults.Heal()
	if _, _, err := svc.ProvisionDomain(ctx, system, "second.example", "r1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.ProvisionDomain(ctx, system, "first.example", "r1"); err != nil { // the client's retry
		t.Fatal(err)
	}
	numbers := func() map[string]string {
		m, err := d.Redis.HGetAll(ctx, ns+":{domains}:num").Result()
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	live := numbers()

	at := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	env := &eventv1.Envelope{
		Id: "rec-first", AcceptedAt: timestamppb.New(at.Add(time.Minute)), Source: "test",
		Tenant: &eventv1.Tenant{Reseller: "r1", Domain: "first.example", User: "101"},
		Body: &eventv1.Envelope_Recording{Recording: &eventv1.RecordingStored{
			CallId: "call-1", Mode: eventv1.RecordingMode_RECORDING_MODE_AUTOMATIC, StartedAt: timestamppb.New(at), DurationS: 10,
			Media: &eventv1.MediaObject{Key: "recordings/first.example/rec-first", SizeBytes: 10, Sha256: "ab12", ContentType: "audio/wav"},
		}},
	}
	ack, err := bus.PublishEnvelope(ctx, d.JS, d.Names.RecordingSubject(), env.GetId(), env)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Admit(ctx, env, ack.Sequence); err != nil {
		t.Fatal(err)
	}
	gateway := catalog.NewReader(d.Redis, ns)
	if _, err := gateway.GetRecording(ctx, "first.example", "rec-first"); err != nil {
		t.Fatalf("before the rebuild: %v", err)
	}

	flush(t, d) // Redis restarts without its data
	if _, _, err := svc.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if rebuilt := numbers(); !maps.Equal(rebuilt, live) {
		t.Errorf("domain numbers: live %v, after the rebuild %v", live, rebuilt)
	}
	if _, err := catalog.NewReader(d.Redis, ns).GetRecording(ctx, "first.example", "rec-first"); err != nil {
		t.Fatalf("a fresh reader after the rebuild: %v", err)
	}
	if _, err := gateway.GetRecording(ctx, "first.example", "rec-first"); err != nil {
		t.Errorf("the gateway's Reader after the rebuild: GetRecording = %v; want the recording", err)
	}
}
