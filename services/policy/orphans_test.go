package policy_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/testenv"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	"github.com/callvault/callvault/services/policy"
)

// The orphan sweep removes media no artifact references once it is older
// than the grace period, and leaves alone: young media, media of an
// admitted artifact, media of an ingest event admission has not decided
// yet (even when the sweep's clock says it is old), and media of a
// dead-lettered event. Sweeping again changes nothing.
func TestOrphanSweep(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	fs, err := cds.NewFS(root)
	if err != nil {
		t.Fatal(err)
	}
	d := testenv.Deps(t, fs)
	const grace = time.Hour
	svc, err := policy.New(d, policy.Settings{Orphans: policy.OrphanSweep{Grace: grace}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := catalog.New(d.Redis, d.Names.Namespace()).ApplyDomain(ctx, catalog.Domain{Domain: "a.example", Reseller: "r1", ProvisionedBy: "test", ProvisionedAt: time.Now()}, 0); err != nil {
		t.Fatal(err)
	}
	// The admission consumer exists but has not run yet: events wait.
	if _, err := bus.NewConsumer(d.JS, d.Names, bus.DefaultSpec(d.Names.IngestStream(), policy.AdmitConsumer,
		d.Names.RecordingSubject(), d.Names.MessageSubject()), nil, d.Log, d.Bus).Ensure(ctx); err != nil {
		t.Fatal(err)
	}

	now := time.Now()
	key := func(id, suffix string) string { return "recordings/a.example/2026/11/02/" + id + "-" + suffix }
	put := func(k string, written time.Time) {
		t.Helper()
		if _, err := fs.Put(ctx, k, strings.NewReader("RIFF-media"), "audio/wav"); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(filepath.Join(root, filepath.FromSlash(k)), written, written); err != nil {
			t.Fatal(err)
		}
	}
	publish := func(id, reseller, k string) {
		t.Helper()
		env := &eventv1.Envelope{
			Id: "stored:a.example/" + id, ArtifactId: id, Type: "recording.stored", SchemaVersion: bus.SchemaVersion,
			AcceptedAt: timestamppb.Now(), Source: "test", Tenant: &eventv1.Tenant{Reseller: reseller, Domain: "a.example", User: "101"},
			Body: &eventv1.Envelope_Recording{Recording: &eventv1.RecordingStored{
				CallId: "call-" + id, Mode: eventv1.RecordingMode_RECORDING_MODE_AUTOMATIC, StartedAt: timestamppb.New(now.Add(-3 * time.Hour)), DurationS: 10,
				Media: &eventv1.MediaObject{Key: k, SizeBytes: 10, Sha256: "ab12", ContentType: "audio/wav"},
			}},
		}
		if _, err := bus.PublishEnvelope(ctx, d.JS, d.Names.RecordingSubject(), env.GetId(), env); err != nil {
			t.Fatal(err)
		}
	}
	var (
		orphan     = key("rec-lost", "000000000001") // its publish failed for good
		superseded = key("rec-kept", "000000000002") // another upload of rec-kept won
		young      = key("rec-young", "000000000003")
		kept       = key("rec-kept", "000000000004")
		dead       = key("rec-dead", "000000000005")
		foreign    = "recordings/a.example/not-an-ingest-key"
	)
	// The service caught Redis up with the streams when it started: the
	// sweep refuses to judge from a Redis that is behind.
	if _, _, err := svc.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	put(orphan, now.Add(-2*grace))
	put(superseded, now.Add(-2*grace))
	put(foreign, now.Add(-2*grace))
	put(young, now)
	// Media is written shortly before its event is published.
	put(kept, now.Add(-grace/2))
	put(dead, now.Add(-grace/2))
	publish("rec-kept", "r1", kept)
	publish("rec-dead", "r2", dead) // a.example is r1's: admission dead-letters it

	exists := func(k string) bool {
		t.Helper()
		_, err := fs.Stat(ctx, k)
		return err == nil
	}
	sweep := func(at time.Time, wantRemoved int, gone, left []string) {
		t.Helper()
		rep, err := svc.SweepOrphans(ctx, at)
		if err != nil {
			t.Fatalf("sweep: %v", err)
		}
		if rep.Removed != wantRemoved {
			t.Errorf("sweep at %v removed %d, want %d (%+v)", at.Sub(now).Round(time.Minute), rep.Removed, wantRemoved, rep)
		}
		for _, k := range gone {
			if exists(k) {
				t.Errorf("%s survived the sweep", k)
			}
		}
		for _, k := range left {
			if !exists(k) {
				t.Errorf("%s was removed", k)
			}
		}
	}

	// Now: the old orphans go, the young object and the undecided events'
	// media stay, and so does a key no ingest upload could have written.
	sweep(now, 2, []string{orphan, superseded}, []string{young, kept, dead, foreign})
	// Two hours on, admission still behind: media written since the grace
	// period before the oldest undecided event is protected, although the
	// clock alone would call it old.
	sweep(now.Add(2*grace), 0, nil, []string{young, kept, dead, foreign})

	// Admission catches up: rec-kept is admitted, rec-dead dead-lettered.
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })
	cat := catalog.New(d.Redis, d.Names.Namespace())
	testenv.WaitFor(t, "rec-kept admitted", func() bool {
		rec, err := cat.Record(ctx, "a.example", "rec-kept")
		return err == nil && rec.State == catalog.StateAdmitted
	})
	testenv.WaitFor(t, "rec-dead dead-lettered", func() bool {
		dl, err := bus.ListDeadLetters(ctx, d.JS, d.Names, 0, 10)
		return err == nil && len(dl) == 1
	})
	testenv.WaitFor(t, "admission settled", func() bool {
		cons, err := d.JS.Consumer(ctx, d.Names.IngestStream(), policy.AdmitConsumer)
		if err != nil {
			return false
		}
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
	// Now the young orphan is old enough to go; referenced media stays
	// however old, and sweeping again is harmless.
	sweep(now.Add(2*grace), 1, []string{young}, []string{kept, dead, foreign})
	sweep(now.Add(2*grace), 0, nil, []string{kept, dead, foreign})
	rc, err := fs.Open(ctx, kept, 0, -1)
	if err != nil {
		t.Fatalf("the admitted media is unreadable: %v", err)
	}
	rc.Close()
}
