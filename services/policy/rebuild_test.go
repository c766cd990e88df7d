package policy_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/pkg/testenv"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	"github.com/callvault/callvault/services/policy"
)

var errInjected = errors.New("injected redis failure")

// failingPipelines fails every pipeline after the first ok ones.
type failingPipelines struct {
	ok   int64
	seen atomic.Int64
}

func (f *failingPipelines) DialHook(next redis.DialHook) redis.DialHook { return next }
func (f *failingPipelines) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return next
}
func (f *failingPipelines) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if f.seen.Add(1) > f.ok {
			return errInjected
		}
		return next(ctx, cmds)
	}
}

var _ redis.Hook = (*failingPipelines)(nil)

// publishAdmitted publishes n admission decisions of recordings.
func publishAdmitted(t *testing.T, d *platform.Deps, n int) {
	t.Helper()
	at := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("rec-%d", i)
		rec := recordingEvent(id, 100, at.Add(time.Duration(i)*time.Second))
		env := &eventv1.Envelope{
			Id: "admitted:a.example/" + id, ArtifactId: id, Type: "artifact.admitted", SchemaVersion: bus.SchemaVersion,
			AcceptedAt: rec.GetAcceptedAt(), Tenant: rec.GetTenant(), Source: "policy",
			Body: &eventv1.Envelope_Admitted{Admitted: &eventv1.ArtifactAdmitted{
				Kind: eventv1.DataKind_DATA_KIND_RECORDING_AUTOMATIC, IngestSequence: uint64(i + 1), IngestAcceptedAt: rec.GetAcceptedAt(),
				Artifact: &eventv1.ArtifactAdmitted_Recording{Recording: rec.GetRecording()},
			}},
		}
		data, err := proto.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.JS.PublishAsync(d.Names.AdmittedSubject(), data, jetstream.WithMsgID(env.GetId())); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-d.JS.PublishAsyncComplete():
	case <-time.After(time.Minute):
		t.Fatal("publishing did not complete")
	}
}

// TestRebuildCatalogReportsAFailedWrite makes Redis fail the writes of
// the second batch while the replay reads on: the rebuild returns that
// failure instead of a success.
func TestRebuildCatalogReportsAFailedWrite(t *testing.T) {
	t.Parallel()
	store, err := cds.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := testenv.Deps(t, store)
	publishAdmitted(t, d, 6000)

	opts := *d.Redis.(*redis.Client).Options()
	faulty := redis.NewClient(&opts)
	t.Cleanup(func() { _ = faulty.Close() })
	faulty.AddHook(&failingPipelines{ok: 1})
	fd := *d
	fd.Redis, fd.Registry = faulty, prometheus.NewRegistry()
	svc, err := policy.New(&fd, policy.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.RebuildCatalog(context.Background()); !errors.Is(err, errInjected) {
		t.Fatalf("rebuild returned %v, want the injected failure", err)
	}

	// The same rebuild on the real client writes every recording.
	svc, err = policy.New(d, policy.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := svc.RebuildCatalog(context.Background())
	if err != nil || n != 6000 {
		t.Fatalf("rebuild = %d, %v; want 6000", n, err)
	}
	u, err := catalog.New(d.Redis, d.Names.Namespace()).Usage(context.Background(), "a.example")
	if err != nil {
		t.Fatal(err)
	}
	if got := u[catalog.KindRecording]; got.Count != 6000 || got.Bytes != 600_000 {
		t.Fatalf("usage = %+v, want 6000 recordings of 600,000 bytes", got)
	}
}

// TestConcurrentRebuildsCountEachRecordOnce runs three rebuilds at once,
// as two processes (an operator's replay beside a service catching up)
// would: a rebuild empties the catalog and counts a record when it finds
// it absent, so one wiping while another writes would count records
// twice. They take turns; the usage is the stream's, and the catch-up
// that waited finds Redis current and rebuilds nothing.
func TestConcurrentRebuildsCountEachRecordOnce(t *testing.T) {
	t.Parallel()
	store, err := cds.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := testenv.Deps(t, store)
	publishAdmitted(t, d, 20_000)
	svcs := make([]*policy.Service, 3)
	for i := range svcs {
		dd := *d
		dd.Registry = prometheus.NewRegistry()
		if svcs[i], err = policy.New(&dd, policy.Settings{}); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	errs := make(chan error, 3)
	caught := make(chan int, 1)
	cat := catalog.New(d.Redis, d.Names.Namespace())
	go func() { _, err := svcs[0].Rebuild(ctx); errs <- err }()
	// The others start once the first has written part of the catalog.
	testenv.WaitFor(t, "the first rebuild to write", func() bool {
		u, err := cat.Usage(ctx, "a.example")
		return err == nil && u[catalog.KindRecording].Count > 0
	})
	go func() { _, err := svcs[1].Rebuild(ctx); errs <- err }()
	go func() {
		_, n, err := svcs[2].CatchUp(ctx)
		caught <- n
		errs <- err
	}()
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	u, err := cat.Usage(ctx, "a.example")
	if err != nil {
		t.Fatal(err)
	}
	if got := u[catalog.KindRecording]; got.Count != 20_000 || got.Bytes != 2_000_000 {
		t.Fatalf("usage after concurrent rebuilds = %+v, want 20,000 recordings of 2,000,000 bytes", got)
	}
	if why, err := svcs[2].Lag(ctx); err != nil || why != "" {
		t.Fatalf("Lag after the rebuilds = %q, %v", why, err)
	}
	t.Logf("the catch-up replayed %d decisions", <-caught)
}

// holdScripts blocks the first pipeline of scripts after it is armed
// until released: a batch of the admission consumer held between its id
// claims and its decisions.
type holdScripts struct {
	armed   atomic.Bool
	held    chan struct{}
	release chan struct{}
}

func (h *holdScripts) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *holdScripts) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return next
}
func (h *holdScripts) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && cmds[0].Name() == "evalsha" && h.armed.CompareAndSwap(true, false) {
			close(h.held)
			<-h.release
		}
		return next(ctx, cmds)
	}
}

// TestBatchAcrossARebuildIsAppliedAgain: a batch of the admission
// consumer claims its ids, then stops before its decisions for longer
// than its writer lease (one second here), so another process's rebuild
// stops waiting for it and wipes the claims. Its decisions then land on
// the rebuilt catalog without their claims. The batch finds the marks of
// another rebuild when it marks its work, so its events are retried after
// one more rebuild, which replays the decisions it published: every
// recording is found by id, counted once, and the catalog is what a
// rebuild makes of the streams.
func TestBatchAcrossARebuildIsAppliedAgain(t *testing.T) {
	t.Parallel()
	store, err := cds.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := testenv.Deps(t, store)
	opts := *d.Redis.(*redis.Client).Options()
	held := redis.NewClient(&opts)
	t.Cleanup(func() { _ = held.Close() })
	hook := &holdScripts{held: make(chan struct{}), release: make(chan struct{})}
	held.AddHook(hook)
	dl := *d
	dl.Redis, dl.Registry = held, prometheus.NewRegistry()
	live, err := policy.New(&dl, policy.Settings{WriterLease: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := live.ProvisionDomain(context.Background(), system, "a.example", "r1"); err != nil {
		t.Fatal(err)
	}
	other := *d
	other.Registry = prometheus.NewRegistry()
	operator, err := policy.New(&other, policy.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	running := runPolicy(t, live)
	stop := func() { once.Do(running) }
	defer stop()
	publishRecordings(t, d, 0, 50)
	waitDecided(t, d)

	hook.armed.Store(true)
	publishRecordings(t, d, 50, 100)
	<-hook.held
	if _, err := operator.Rebuild(context.Background()); err != nil {
		t.Fatal(err)
	}
	close(hook.release)
	waitDecided(t, d)
	testenv.WaitFor(t, "Redis current", func() bool {
		why, err := live.Lag(context.Background())
		return err == nil && why == ""
	})
	ctx := context.Background()
	cat := catalog.New(d.Redis, d.Names.Namespace())
	for i := range 100 {
		if r, err := cat.Record(ctx, "a.example", fmt.Sprintf("rec-%d", i)); err != nil || r.State != catalog.StateAdmitted {
			t.Fatalf("rec-%d: %+v, %v; want admitted", i, r, err)
		}
	}
	u, err := cat.Usage(ctx, "a.example")
	if err != nil {
		t.Fatal(err)
	}
	if got := u[catalog.KindRecording]; got.Count != 100 {
		t.Fatalf("usage %+v, want 100 recordings", got)
	}
	before := withoutDeletionTimes(catalogDump(t, d))
	stop()
	if _, err := operator.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	diffDumps(t, "live vs rebuilt", before, withoutDeletionTimes(catalogDump(t, d)))
}

// TestDeleteWaitsForARebuild: a deletion asked while another process
// rebuilds (the catalog already emptied, the replay not yet run) waits
// for the rebuild and then deletes the artifact, rather than answering
// that it does not exist.
func TestDeleteWaitsForARebuild(t *testing.T) {
	t.Parallel()
	store, err := cds.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := testenv.Deps(t, store)
	ctx := context.Background()
	svc, err := policy.New(d, policy.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.ProvisionDomain(ctx, system, "a.example", "r1"); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	running := runPolicy(t, svc)
	stop := func() { once.Do(running) }
	defer stop()
	publishRecordings(t, d, 0, 3)
	waitDecided(t, d)

	br := &blockReplay{JetStream: d.JS, ingest: d.Names.IngestStream(), entered: make(chan struct{}), release: make(chan struct{})}
	d2 := *d
	d2.JS, d2.Registry = br, prometheus.NewRegistry()
	other, err := policy.New(&d2, policy.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	rebuilt := make(chan error, 1)
	go func() { _, err := other.Rebuild(ctx); rebuilt <- err }()
	<-br.entered // the catalog is empty now
	deleted := make(chan catalog.DeleteResult, 1)
	go func() {
		res, err := svc.Delete(ctx, policy.DeleteRequest{Domain: "a.example", ID: "rec-1", Explicit: true, Reason: "admin", Actor: "ops"})
		if err != nil {
			t.Error(err)
		}
		deleted <- res
	}()
	select {
	case res := <-deleted:
		t.Fatalf("the deletion answered %s while the catalog was being rebuilt", res.Outcome)
	case <-time.After(500 * time.Millisecond):
	}
	close(br.release)
	if err := <-rebuilt; err != nil {
		t.Fatal(err)
	}
	if res := <-deleted; res.Outcome != catalog.Deleted {
		t.Fatalf("after the rebuild the deletion answered %s, want %s", res.Outcome, catalog.Deleted)
	}
}
