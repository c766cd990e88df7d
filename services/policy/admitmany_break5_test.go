package policy_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/testenv"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
	"github.com/callvault/callvault/services/policy"
)

// slowJS delays (never fails) the publish of chosen decision events, as a
// slow link or a busy server would: publishes stay correct, only their
// order in time changes.
type slowJS struct {
	jetstream.JetStream
	mu    sync.Mutex
	delay func(env *eventv1.Envelope) time.Duration
}

func (j *slowJS) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	j.mu.Lock()
	f := j.delay
	j.mu.Unlock()
	if f != nil {
		if env, err := bus.DecodeEnvelope(m.Data); err == nil {
			if d := f(env); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
		}
	}
	return j.JetStream.PublishMsg(ctx, m, opts...)
}

// TestBreak5DuplicateInOneBatchPublishesTheDecidingEvent: the same
// recording is delivered twice (the PBX sent it again after the dedup
// window, so ingest accepted it a second time, here just past a month
// boundary). One at a time, the first delivery decides and publishes
// the decision with its own body; the second repeats it and owes
// nothing. In one batch both items owe the publish of the same decision
// (the second is a Repeat whose Pending is still "P"), and both publish
// concurrently under the same Nats-Msg-Id: whichever reaches the server
// first is what the stream keeps. Here the first's publish is merely a
// little slower, so the stream records the duplicate's body, ingest
// sequence and acceptance time, while the live record holds the
// first's. A rebuild then writes a different record (another Seq,
// another AcceptedAt) and counts the recording in December's monthly
// counter instead of November's: live state and rebuilt state differ,
// and the decision event contradicts the catalog.
//
// Fixed: a Repeat whose record was decided on another event (its stream
// sequence) carries out nothing; the deciding event's delivery does.
func TestBreak5DuplicateInOneBatchPublishesTheDecidingEvent(t *testing.T) {
	t.Parallel()
	store, err := cds.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := testenv.Deps(t, store)
	sj := &slowJS{JetStream: d.JS}
	d.JS = sj
	svc, err := policy.New(d, policy.Settings{} /* AdmitBatch: 1 (one at a time) passes */)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, _, err := svc.ProvisionDomain(ctx, system, "a.example", "r1"); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 30, 23, 0, 0, 0, time.UTC)
	first := recordingEvent("rec-dup", 100, at)
	first.AcceptedAt = timestamppb.New(time.Date(2026, 11, 30, 23, 59, 0, 0, time.UTC))
	second := recordingEvent("rec-dup", 100, at)
	second.AcceptedAt = timestamppb.New(time.Date(2026, 12, 1, 0, 1, 0, 0, time.UTC))
	ack1, err := bus.PublishEnvelope(ctx, d.JS, d.Names.RecordingSubject(), first.GetId(), first)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.PublishEnvelope(ctx, d.JS, d.Names.RecordingSubject(), "rec-dup-resent", second); err != nil {
		t.Fatal(err)
	}
	firstSeq := ack1.Sequence
	sj.mu.Lock()
	sj.delay = func(env *eventv1.Envelope) time.Duration {
		if a := env.GetAdmitted(); a != nil && a.GetIngestSequence() == firstSeq {
			return 300 * time.Millisecond
		}
		return 0
	}
	sj.mu.Unlock()
	stop := runPolicy(t, svc)
	waitDecided(t, d)
	stop()

	var admitted []*eventv1.ArtifactAdmitted
	if _, _, err := bus.Replay(ctx, d.JS, d.Names.IngestStream(), []string{d.Names.AdmittedSubject()}, func(_ context.Context, env *eventv1.Envelope, _ uint64) error {
		admitted = append(admitted, env.GetAdmitted())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cat := catalog.New(d.Redis, d.Names.Namespace())
	rec, err := cat.Record(ctx, "a.example", "rec-dup")
	if err != nil {
		t.Fatal(err)
	}
	if len(admitted) != 1 {
		for _, a := range admitted {
			t.Logf("admitted: seq %d accepted %s", a.GetIngestSequence(), a.GetIngestAcceptedAt().AsTime())
		}
		st, _ := d.JS.Stream(ctx, d.Names.IngestStream())
		for q := uint64(1); q < 10; q++ {
			m, err := st.GetMsg(ctx, q)
			if err != nil {
				break
			}
			t.Logf("DEBUG %d %s %v", q, m.Subject, m.Header)
		}
		t.Fatalf("%d admitted events, want 1", len(admitted))
	}
	if got := admitted[0].GetIngestSequence(); got != rec.Seq || got != firstSeq {
		t.Errorf("the stream's admission of rec-dup carries ingest sequence %d (accepted %s); the live record has %d and the deciding delivery was %d",
			got, admitted[0].GetIngestAcceptedAt().AsTime(), rec.Seq, firstSeq)
	}
	live := withoutDeletionTimes(catalogDump(t, d))
	if _, err := svc.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	diffDumps(t, "live vs rebuilt", live, withoutDeletionTimes(catalogDump(t, d)))
}

// hangStore is a CDS whose delete of one key hangs until the caller
// gives up (a store that is slow for one object).
type hangStore struct {
	cds.Store
	key string
}

func (s hangStore) Delete(ctx context.Context, key string) error {
	if key == s.key {
		<-ctx.Done()
		return ctx.Err()
	}
	return s.Store.Delete(ctx, key)
}

// TestBreak5OneSlowMessageFailsItsWholeBatch: HandlerTimeout bounds one
// handler call, and a batch of up to 256 events is now one call. Ten
// recordings come first in the stream, then a voicemail that is refused
// at its box cap and whose media delete hangs (a slow object in the
// store). One at a time, the ten are admitted and acknowledged at once,
// and only the voicemail waits out its timeout. In a batch, the
// refusal's media delete runs in the same effect round as the
// recordings' publishes, before them and sequentially, and it uses up
// the batch's one deadline: every recording's publish then fails with
// the deadline exceeded, and all ten are retried. Their redelivery lands
// in a batch with the voicemail again (same backoff), so it fails again:
// after MaxDeliver attempts they are dead-lettered with their admissions
// recorded in Redis but never published (a rebuild loses them). A slow
// message fails all the others of its batch.
//
// Fixed: a round's effects run concurrently, each under its own
// deadline, so the hanging delete fails its own item only.
func TestBreak5OneSlowMessageFailsItsWholeBatch(t *testing.T) {
	t.Parallel()
	fs, err := cds.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	vm1 := messageEvent("vm-1", "a.example", "101", vmKind, 0, time.Now())
	d := testenv.Deps(t, hangStore{Store: fs, key: vm1.GetMessage().GetMedia().GetKey()})
	svc, err := policy.New(d, policy.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, _, err := svc.ProvisionDomain(ctx, system, "a.example", "r1"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.SetOverride(ctx, system, ov(vmKind, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", boxCap(1))); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	for i := range 10 {
		id := fmt.Sprintf("rec-%d", i)
		if _, err := bus.PublishEnvelope(ctx, d.JS, d.Names.RecordingSubject(), id, recordingEvent(id, 100, at.Add(time.Duration(i)*time.Minute))); err != nil {
			t.Fatal(err)
		}
	}
	vm0 := messageEvent("vm-0", "a.example", "101", vmKind, 0, time.Now())
	for _, env := range []*eventv1.Envelope{vm0, vm1} {
		stored(t, d, env)
		if _, err := bus.PublishEnvelope(ctx, d.JS, d.Names.MessageSubject(), env.GetId(), env); err != nil {
			t.Fatal(err)
		}
	}
	stop := runPolicy(t, svc)
	defer stop()
	// One at a time the ten are published within moments; give the batch
	// path its whole timeout and then some.
	deadline := time.Now().Add(bus.DefaultSpec("", "").HandlerTimeout + 8*time.Second)
	for time.Now().Before(deadline) {
		if subjectCount(t, d, d.Names.AdmittedSubject()) >= 11 {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	cons, err := d.JS.Consumer(ctx, d.Names.IngestStream(), policy.AdmitConsumer)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Errorf("%d admitted events after %s, want 11 (ten recordings and vm-0): the hanging media delete of vm-1 "+
		"used up the batch's deadline and failed every other event of the batch (ack floor %d, %d redelivered)",
		subjectCount(t, d, d.Names.AdmittedSubject()), bus.DefaultSpec("", "").HandlerTimeout+8*time.Second, info.AckFloor.Stream, info.NumRedelivered)
}
