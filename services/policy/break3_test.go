package policy_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/callvault/callvault/pkg/catalog"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
)

// TestBreak3RebuildHandsAnIDToTheConflictingDomain: A's recording X is
// decided (admitted) but its admitted event's publish fails, so its ingest
// event is redelivered later; B uploads X and is refused id_conflict
// (published). Redis is emptied and rebuilt. B's PBX uploads X again, then
// A's event is redelivered: live, A's recording is admitted; after the
// rebuild it was refused id_conflict and its media removed: B's
// redelivery took the claim the rebuild could not restore. B's domain now
// never claims an id it holds a conflict refusal of.
func TestBreak3RebuildHandsAnIDToTheConflictingDomain(t *testing.T) {
	t.Parallel()
	d, svc, f := faultySetup(t)
	ctx := context.Background()
	if _, _, err := svc.ProvisionDomain(ctx, system, "b.example", "r2"); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)
	evA := stored(t, d, recordingEvent("rec-b3-x", 10, at))
	evB := proto.Clone(evA).(*eventv1.Envelope)
	evB.Id = "rec-b3-x-b"
	evB.ArtifactId = "rec-b3-x"
	evB.Tenant = &eventv1.Tenant{Reseller: "r2", Domain: "b.example", User: "201"}
	evB.GetRecording().Media.Key = "recordings/b.example/rec-b3-x"
	stored(t, d, evB)
	f.failPublish[d.Names.AdmittedSubject()] = 1
	if err := svc.Admit(ctx, evA, 1); err == nil {
		t.Fatal("A's admit should fail on the publish")
	}
	if err := svc.Admit(ctx, evB, 2); err != nil {
		t.Fatal(err)
	}
	cat := catalog.New(d.Redis, d.Names.Namespace())
	rb, _ := cat.Record(ctx, "b.example", "rec-b3-x")
	t.Logf("live B record: %q %q", rb.State, rb.Reason)
	wipeRedis(t, d)
	if _, err := svc.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	if err := svc.Admit(ctx, evB, 3); err != nil {
		t.Fatal(err)
	}
	if err := svc.Admit(ctx, evA, 1); err != nil {
		t.Fatal(err)
	}
	ra, err := cat.Record(ctx, "a.example", "rec-b3-x")
	t.Logf("after rebuild A record: %q %q %v; A media exists: %v", ra.State, ra.Reason, err, exists(t, d, evA.GetRecording().GetMedia().GetKey()))
	if ra.State != catalog.StateAdmitted {
		t.Errorf("A's redelivered recording is %q %q after a rebuild; without the rebuild it is admitted", ra.State, ra.Reason)
	}
}
