package policy_test

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
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
	d, svc := newService(t, policy.Settings{})
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

// TestBreakRebuildDropsLegacyMessages: the previous version admitted
// messages of any received_at (admission checks only that it is set; a
// PBX with an unset clock sends 1970-01-01) and of any From/To length (a
// group MMS lists every recipient). The upgrade is a rebuild that replays
// the recorded admissions; artifactOf now dead-letters what CheckArtifact
// refuses, and the replay skips poison events, so these admitted messages
// silently vanish from the catalog (no record, no usage, no box entry; the
// culler never deletes their media). A recorded decision must replay.
func TestBreakRebuildDropsLegacyMessages(t *testing.T) {
	t.Parallel()
	d, svc := newService(t, policy.Settings{})
	ctx := context.Background()
	if _, _, err := svc.ProvisionDomain(ctx, system, "a.example", "r1"); err != nil {
		t.Fatal(err)
	}
	vm := messageEvent("vm-epoch", "a.example", "101", eventv1.DataKind_DATA_KIND_VOICEMAIL, eventv1.MessageFolder_MESSAGE_FOLDER_UNSPECIFIED, time.Unix(0, 0).UTC())
	mms := messageEvent("mms-group", "a.example", "101", eventv1.DataKind_DATA_KIND_SMS, eventv1.MessageFolder_MESSAGE_FOLDER_INBOX, time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC))
	mms.GetMessage().To = strings.Repeat("+15550100123,", 90) // 90 recipients, 1,170 bytes
	for i, env := range []*eventv1.Envelope{vm, mms} {
		kind := eventv1.DataKind_DATA_KIND_VOICEMAIL
		if env == mms {
			kind = eventv1.DataKind_DATA_KIND_SMS
		}
		admitted := &eventv1.Envelope{
			Id: "admitted:a.example/" + env.GetId(), ArtifactId: env.GetId(), Type: "artifact.admitted", SchemaVersion: bus.SchemaVersion,
			AcceptedAt: env.GetAcceptedAt(), Tenant: env.GetTenant(), Source: "policy",
			Body: &eventv1.Envelope_Admitted{Admitted: &eventv1.ArtifactAdmitted{
				Kind: kind, IngestSequence: uint64(i + 1), IngestAcceptedAt: env.GetAcceptedAt(),
				Artifact: &eventv1.ArtifactAdmitted_Message{Message: env.GetMessage()},
			}},
		}
		if _, err := bus.PublishEnvelope(ctx, d.JS, d.Names.AdmittedSubject(), admitted.GetId(), admitted); err != nil {
			t.Fatal(err)
		}
	}
	flush(t, d)
	if _, _, err := svc.CatchUp(ctx); err != nil {
		t.Fatalf("rebuild after the upgrade: %v", err)
	}
	cat := catalog.New(d.Redis, d.Names.Namespace())
	for _, id := range []string{"vm-epoch", "mms-group"} {
		if r, err := cat.Record(ctx, "a.example", id); err != nil || r.State != catalog.StateAdmitted {
			t.Errorf("%s after the rebuild: state %q, %v; want the admitted record", id, r.State, err)
		}
	}
	// And live: the same group MMS, sent today, is dead-lettered.
	live := messageEvent("mms-live", "a.example", "101", eventv1.DataKind_DATA_KIND_SMS, eventv1.MessageFolder_MESSAGE_FOLDER_INBOX, time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC))
	live.GetMessage().To = mms.GetMessage().GetTo()
	if err := svc.Admit(ctx, live, 99); err != nil {
		t.Errorf("Admit(group MMS with 90 recipients) = %v (poison: %v); want admitted", err, bus.IsPoison(err))
	}
}
