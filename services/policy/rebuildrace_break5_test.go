package policy_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/testenv"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
	"github.com/callvault/callvault/services/policy"
)

// pauseOwners blocks the first HMGET of the domain registry once armed
// (the batch's DomainOwners, right after ensureState read the marks).
type pauseOwners struct {
	key     string
	mu      sync.Mutex
	armed   bool
	reached chan struct{}
	resume  chan struct{}
}

func (p *pauseOwners) DialHook(next redis.DialHook) redis.DialHook { return next }
func (p *pauseOwners) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (p *pauseOwners) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		if cmd.Name() == "hmget" && len(args) > 1 && args[1] == p.key {
			p.mu.Lock()
			fire := p.armed
			p.armed = false
			p.mu.Unlock()
			if fire {
				close(p.reached)
				<-p.resume
			}
		}
		return next(ctx, cmd)
	}
}

// blockReplay blocks the rebuild's read of the ingest stream (after it
// cleared the marks and wiped the catalog) until released.
type blockReplay struct {
	jetstream.JetStream
	ingest  string
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (b *blockReplay) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	if name == b.ingest {
		b.once.Do(func() {
			close(b.entered)
			<-b.release
		})
	}
	return b.JetStream.Stream(ctx, name)
}

// TestBreak5BatchHoldsARebuildBack: a batch has read the marks and is
// deciding when another process starts a rebuild (an operator's replay,
// a peer's catch-up). Found first: the rebuild wiped under the batch,
// which decided vm-1 against the empty catalog (admitted, though vm-0
// fills the box cap of 1), and a batch that settled nothing never
// checked the marks' generation. Now a batch is a registered writer: the
// rebuild clears the marks, then waits until the batch is done before it
// empties anything, so vm-1 is refused as the cap says, the batch finds
// the marks gone and is retried after the rebuild, and Redis ends current
// with the box at its cap.
func TestBreak5BatchHoldsARebuildBack(t *testing.T) {
	t.Parallel()
	store, err := cds.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := testenv.Deps(t, store)
	ctx := context.Background()

	// The admission process: its Redis can be paused at DomainOwners,
	// its decision publishes can fail.
	opts := *d.Redis.(*redis.Client).Options()
	hooked := redis.NewClient(&opts)
	t.Cleanup(func() { _ = hooked.Close() })
	pause := &pauseOwners{key: d.Names.Namespace() + ":{domains}", reached: make(chan struct{}), resume: make(chan struct{})}
	hooked.AddHook(pause)
	d1 := *d
	d1.Redis, d1.Registry = hooked, prometheus.NewRegistry()
	svc, err := policy.New(&d1, policy.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.ProvisionDomain(ctx, system, "a.example", "r1"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.SetOverride(ctx, system, ov(vmKind, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", boxCap(1))); err != nil {
		t.Fatal(err)
	}
	stop := runPolicy(t, svc)
	defer stop()
	vm0 := stored(t, d, messageEvent("vm-0", "a.example", "101", vmKind, 0, time.Now().Add(-time.Hour)))
	if _, err := bus.PublishEnvelope(ctx, d.JS, d.Names.MessageSubject(), "vm-0", vm0); err != nil {
		t.Fatal(err)
	}
	waitDecided(t, d)

	// Another process that rebuilds (an operator's replay, a peer's
	// catch-up), held after its wipe.
	br := &blockReplay{JetStream: d.JS, ingest: d.Names.IngestStream(), entered: make(chan struct{}), release: make(chan struct{})}
	d2 := *d
	d2.JS, d2.Registry = br, prometheus.NewRegistry()
	other, err := policy.New(&d2, policy.Settings{})
	if err != nil {
		t.Fatal(err)
	}

	pause.mu.Lock()
	pause.armed = true
	pause.mu.Unlock()
	vm1 := stored(t, d, messageEvent("vm-1", "a.example", "101", vmKind, 0, time.Now()))
	if _, err := bus.PublishEnvelope(ctx, d.JS, d.Names.MessageSubject(), "vm-1", vm1); err != nil {
		t.Fatal(err)
	}
	<-pause.reached // the batch is registered and has read the marks
	rebuilt := make(chan error, 1)
	go func() { _, err := other.Rebuild(ctx); rebuilt <- err }()
	select {
	case <-br.entered:
		t.Fatal("the rebuild emptied the catalog and read the stream while a batch was deciding")
	case <-time.After(700 * time.Millisecond):
	}
	close(pause.resume)
	select {
	case <-br.entered: // the rebuild goes on once the batch is done
	case <-time.After(30 * time.Second):
		t.Fatal("the rebuild did not go on after the batch finished")
	}
	close(br.release)
	if err := <-rebuilt; err != nil {
		t.Fatal(err)
	}
	waitDecided(t, d)
	testenv.WaitFor(t, "Redis current", func() bool {
		why, err := svc.Lag(ctx)
		return err == nil && why == ""
	})

	cat := catalog.New(d.Redis, d.Names.Namespace())
	ap, err := cat.Applied(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n, err := cat.Count(ctx, false, cat.BoxKey("a.example", "101"))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := cat.Record(ctx, "a.example", "vm-1")
	if err != nil {
		t.Fatal(err)
	}
	if !ap.Present || n != 1 || rec.State != catalog.StateRefused || rec.Reason != "box_full" {
		t.Fatalf("marks present %v, box holds %d under a cap of 1, vm-1 is %s (%s); want current, 1, refused box_full", ap.Present, n, rec.State, rec.Reason)
	}
}
