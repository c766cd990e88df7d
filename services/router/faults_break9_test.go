package router_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/callvault/callvault/pkg/testenv"
	"github.com/callvault/callvault/services/router"
)

// faultyJS is the real JetStream client with the publishes of archive
// records intercepted: the record is stored by the server, then onStored
// decides what the caller is told (nil: the real PubAck).
type faultyJS struct {
	jetstream.JetStream
	subject  string
	onStored func(ctx context.Context) error
	stored   atomic.Int64
}

func (f *faultyJS) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ack, err := f.JetStream.PublishMsg(ctx, msg, opts...)
	if err != nil || msg.Subject != f.subject || f.onStored == nil {
		return ack, err
	}
	f.stored.Add(1)
	if ferr := f.onStored(ctx); ferr != nil {
		return nil, ferr
	}
	return ack, nil
}

// runWith stops the rig's router and runs one on the rig's servers whose
// JetStream client is js; the returned func stops it.
func (rg *rig) runWith(js jetstream.JetStream) (*router.Service, func()) {
	rg.t.Helper()
	rg.stop()
	d := *rg.d
	d.JS = js
	d.Registry = prometheus.NewRegistry()
	svc, err := router.New(&d, rg.set, nil)
	if err != nil {
		rg.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				rg.t.Errorf("router run: %v", err)
			}
		})
	}
	rg.t.Cleanup(stop)
	return svc, stop
}

// TestPubAckLostAfterTheRecordWasStored: the server stores the archive
// record but the router is told the publish timed out (twice). The
// recording must end archived once: one object, one record on the stream,
// a count of one and nothing waiting.
func TestPubAckLostAfterTheRecordWasStored(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	bucket := rg.bucket(false)
	X := rg.createPair(aDomain)(s3Config(t, "X", "domain", "a.example", "s3", bucket))
	var lost atomic.Int64
	fj := &faultyJS{JetStream: rg.d.JS, subject: rg.d.Names.ArchivedSubject()}
	fj.onStored = func(context.Context) error {
		if lost.Add(1) <= 2 {
			return nats.ErrTimeout
		}
		return nil
	}
	svc, _ := rg.runWith(fj)
	rg.admit(recording{id: "rec-lost-ack", domain: "a.example", reseller: "r1", body: randomBytes(3000)})
	if !within(20*time.Second, func() bool {
		st, err := svc.ArchiveStates(context.Background(), system, "a.example", []string{"rec-lost-ack"})
		return err == nil && st[0].GetState() == "archived"
	}) {
		t.Fatal("rec-lost-ack never archived after its PubAcks were lost")
	}
	time.Sleep(time.Second)
	if fj.stored.Load() < 2 {
		t.Fatalf("the fault was not exercised: %d archive publishes", fj.stored.Load())
	}
	if ev := rg.archivedEvents()["rec-lost-ack"]; ev != 1 {
		t.Errorf("archive records on the stream = %d, want 1", ev)
	}
	if objs := rg.objects(bucket); len(objs) != 1 {
		t.Errorf("objects = %v, want one", objs)
	}
	st, err := svc.Status(context.Background(), system, X.GetId())
	if err != nil {
		t.Fatal(err)
	}
	if st.GetArchived() != 1 || st.GetWaiting() != 0 {
		t.Errorf("X archived %d, waiting %d, want 1 and 0", st.GetArchived(), st.GetWaiting())
	}
}

// TestCrashAfterPublishThenConfigDeleted: the router publishes the archive
// record (the object is stored at X) and dies before its Redis write. The
// configuration is then deleted before the router comes back. The stream
// of record says the recording is archived at X (and the object is
// there), but the redelivered decision finds nothing matching, records it
// "not archived" in Redis (the stream drops that second record as a
// duplicate), and the API then reports a recording whose archive exists
// as never archived, disagreeing with the stream it is restored from.
func TestCrashAfterPublishThenConfigDeleted(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	bucket := rg.bucket(false)
	X := rg.createPair(aDomain)(s3Config(t, "X", "domain", "a.example", "s3", bucket))
	crashed := make(chan struct{})
	var once sync.Once
	fj := &faultyJS{JetStream: rg.d.JS, subject: rg.d.Names.ArchivedSubject()}
	release := make(chan struct{})
	fj.onStored = func(ctx context.Context) error {
		once.Do(func() { close(crashed) })
		<-release // the process dies here: the Redis write never runs
		return errors.New("process killed")
	}
	_, stop := rg.runWith(fj)
	rg.admit(recording{id: "rec-crash", domain: "a.example", reseller: "r1", body: randomBytes(3000)})
	select {
	case <-crashed:
	case <-time.After(20 * time.Second):
		t.Fatal("the archive record was never published")
	}
	close(release)
	stop()
	if got := rg.archivedEvents()["rec-crash"]; got != 1 {
		t.Fatalf("archive records on the stream after the crash = %d, want 1", got)
	}
	// While the router is down the operator removes the configuration.
	other := rg.secondService(false)
	if err := other.DeleteConfig(context.Background(), aDomain, X.GetId()); err != nil {
		t.Fatal(err)
	}
	rg.start()
	time.Sleep(3 * time.Second) // the decision is redelivered and handled
	st := rg.state("a.example", "rec-crash")
	if objs := rg.objects(bucket); len(objs) != 1 {
		t.Fatalf("objects = %v, want the one stored before the crash", objs)
	}
	if st.GetState() != "archived" {
		t.Errorf("rec-crash = %s (%q), but the stream records it archived at %s and the object is there", st.GetState(), st.GetReason(), X.GetId())
	}
	if ev := rg.archivedEvents()["rec-crash"]; ev != 1 {
		t.Errorf("archive records on the stream = %d, want 1", ev)
	}
}

// TestCrashAfterPublishConverges: the same crash with the configuration
// left alone converges: archived once, a count of one.
func TestCrashAfterPublishConverges(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	bucket := rg.bucket(false)
	X := rg.createPair(aDomain)(s3Config(t, "X", "domain", "a.example", "s3", bucket))
	crashed := make(chan struct{})
	var once sync.Once
	fj := &faultyJS{JetStream: rg.d.JS, subject: rg.d.Names.ArchivedSubject()}
	release := make(chan struct{})
	fj.onStored = func(ctx context.Context) error {
		once.Do(func() { close(crashed) })
		<-release // the process dies here: the Redis write never runs
		return errors.New("process killed")
	}
	_, stop := rg.runWith(fj)
	rg.admit(recording{id: "rec-crash2", domain: "a.example", reseller: "r1", body: randomBytes(3000)})
	select {
	case <-crashed:
	case <-time.After(20 * time.Second):
		t.Fatal("the archive record was never published")
	}
	close(release)
	stop()
	rg.start()
	rg.waitState("a.example", "rec-crash2", "archived")
	time.Sleep(time.Second)
	if ev := rg.archivedEvents()["rec-crash2"]; ev != 1 {
		t.Errorf("archive records on the stream = %d, want 1", ev)
	}
	if objs := rg.objects(bucket); len(objs) != 1 {
		t.Errorf("objects = %v, want one", objs)
	}
	if st := rg.status(X.GetId()); st.GetArchived() != 1 || st.GetWaiting() != 0 || st.GetState() != "active" {
		t.Errorf("X = %s, archived %d, waiting %d (%q), want active, 1, 0", st.GetState(), st.GetArchived(), st.GetWaiting(), st.GetLastError())
	}
}

// counterFault fails, while on, every plain pipeline that counts an
// archived recording (recordDone's second step), and nothing else.
type counterFault struct {
	on  atomic.Bool
	hit atomic.Int64
}

func failCounterPipelines(t *testing.T, rg *rig) *counterFault {
	f := &counterFault{}
	f.on.Store(true)
	rg.d.Redis.AddHook(f)
	t.Cleanup(f.Heal)
	return f
}

func (f *counterFault) Heal() { f.on.Store(false) }

func (f *counterFault) DialHook(next redis.DialHook) redis.DialHook { return next }

func (f *counterFault) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (f *counterFault) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if f.on.Load() {
			for _, c := range cmds {
				if c.Name() == "hincrby" {
					f.hit.Add(1)
					err := testenv.ErrInjected
					for _, c := range cmds {
						c.SetErr(err)
					}
					return err
				}
			}
		}
		return next(ctx, cmds)
	}
}

// TestCountSurvivesAFailedCounterWrite: Redis refuses the configuration's
// keys between recordDone's transaction (the artifact's record is
// written) and its counter pipeline. The write is retried, but the retry
// finds the record and counts nothing: the configuration reports no
// archived recording for good.
func TestCountSurvivesAFailedCounterWrite(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	bucket := rg.bucket(false)
	X := rg.createPair(aDomain)(s3Config(t, "X", "domain", "a.example", "s3", bucket))
	fault := failCounterPipelines(t, rg)
	rg.admit(recording{id: "rec-count", domain: "a.example", reseller: "r1", body: randomBytes(2000)})
	rg.waitState("a.example", "rec-count", "archived")
	time.Sleep(time.Second) // the failed write is retried meanwhile
	if fault.hit.Load() == 0 {
		t.Fatal("the counter write was never refused")
	}
	fault.Heal()
	time.Sleep(2 * time.Second)
	if st := rg.status(X.GetId()); st.GetArchived() != 1 {
		t.Errorf("X archived = %d after recovery, want 1 (one recording archived)", st.GetArchived())
	}
}

// TestWaitingClearsAfterAFailedCounterWrite: a recording waits for X (its
// bucket is missing); when the bucket appears the retry archives it, but
// Redis refuses X's keys after the record's transaction. The transaction
// removed the artifact's wait (the domain's archwait), so every later
// attempt no longer knows which configuration's waiting set holds it: X
// reports one recording waiting for ever (and none archived).
func TestWaitingClearsAfterAFailedCounterWrite(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	bucket := bucketName(t) // missing for now
	X := rg.createPair(aDomain)(s3Config(t, "X", "domain", "a.example", "s3", bucket))
	rg.admit(recording{id: "rec-wait", domain: "a.example", reseller: "r1", body: randomBytes(2000)})
	testenv.WaitFor(t, "X has a recording waiting", func() bool { return rg.status(X.GetId()).GetWaiting() == 1 })
	fault := failCounterPipelines(t, rg)
	rg.createBucket(bucket, false)
	rg.waitState("a.example", "rec-wait", "archived")
	time.Sleep(2 * time.Second) // retries of the failed write run meanwhile
	if fault.hit.Load() == 0 {
		t.Fatal("the counter write was never refused")
	}
	fault.Heal()
	time.Sleep(2 * time.Second)
	st := rg.status(X.GetId())
	if st.GetWaiting() != 0 {
		t.Errorf("X waiting = %d after recovery, want 0 (its only recording is archived)", st.GetWaiting())
	}
	if st.GetArchived() != 1 {
		t.Errorf("X archived = %d after recovery, want 1", st.GetArchived())
	}
}

// TestConflictingDecisionsLeaveTheConfigHealthy: the same admission twice
// and, around it, a different one for the same artifact id (other bytes,
// same key). One is archived; the loser meets an object with other bytes.
// That is not the target failing, and once the artifact is archived the
// configuration must not be left reporting an error. The loser's wait is
// written before the winner's record only in some runs (a race), so this
// fails intermittently.
func TestConflictingDecisionsLeaveTheConfigHealthy(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	bucket := rg.bucket(false)
	X := rg.createPair(aDomain)(s3Config(t, "X", "domain", "a.example", "s3", bucket))
	a := recording{id: "rec-dup", domain: "a.example", reseller: "r1", body: randomBytes(200000)}
	b := recording{id: "rec-dup", domain: "a.example", reseller: "r1", body: randomBytes(200000)}
	ctx := context.Background()
	if _, err := rg.d.CDS.Put(ctx, "recordings/a.example/rec-dup-b", bytes.NewReader(b.body), "audio/wav"); err != nil {
		t.Fatal(err)
	}
	if _, err := rg.d.CDS.Put(ctx, "recordings/a.example/rec-dup", bytes.NewReader(a.body), "audio/wav"); err != nil {
		t.Fatal(err)
	}
	rg.publishAdmitted(b, "recordings/a.example/rec-dup-b", "admitted-rec-dup-b")
	rg.publishAdmitted(a, "recordings/a.example/rec-dup", "admitted-rec-dup-1")
	rg.publishAdmitted(a, "recordings/a.example/rec-dup", "admitted-rec-dup-2")
	st := rg.waitState("a.example", "rec-dup", "archived")
	time.Sleep(3 * time.Second) // the losers are retried and settle
	objs := rg.objects(bucket)
	if len(objs) != 1 {
		t.Fatalf("objects = %v, want one", objs)
	}
	if got := sha(rg.getObject(bucket, objs[0])); got != st.GetSha256() {
		t.Errorf("object holds %s, the record says %s", got, st.GetSha256())
	}
	if ev := rg.archivedEvents()["rec-dup"]; ev != 1 {
		t.Errorf("archive records = %d, want 1", ev)
	}
	cs := rg.status(X.GetId())
	if cs.GetArchived() != 1 || cs.GetWaiting() != 0 {
		t.Errorf("X archived %d, waiting %d, want 1 and 0", cs.GetArchived(), cs.GetWaiting())
	}
	if cs.GetState() != "active" {
		t.Errorf("X = %s (%q) with its only artifact archived, want active", cs.GetState(), cs.GetLastError())
	}
}

// TestConfigUpdateWhileS3Paused: the S3 server stalls 3 s in the middle
// of an upload while the configuration is moved to another bucket. The
// upload in flight finishes where it started and is recorded there; the
// next recording goes to the new bucket; counts are exact.
func TestConfigUpdateWhileS3Paused(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	proxy := newS3Proxy(t, map[string]time.Duration{"rec-paused": 3 * time.Second})
	proxy.armed.Store(true)
	oldB, newB := rg.bucket(false), rg.bucket(false)
	c, s := s3Config(t, "X", "domain", "a.example", "s3", oldB)
	c.Endpoint = proxy.srv.URL
	X := rg.create(aDomain, c, s)
	rg.admit(recording{id: "rec-paused", domain: "a.example", reseller: "r1", body: randomBytes(5000)})
	testenv.WaitFor(t, "the upload in flight", func() bool { return proxy.count("rec-paused") > 0 })
	c.Id, c.Bucket = X.GetId(), newB
	if _, _, err := rg.svc.UpdateConfig(context.Background(), aDomain, c, nil); err != nil {
		t.Fatal(err)
	}
	st := rg.waitState("a.example", "rec-paused", "archived")
	time.Sleep(4 * time.Second)
	if n := proxy.count("rec-paused"); n != 1 {
		t.Errorf("rec-paused uploaded %d times, want once", n)
	}
	if o := rg.objects(oldB); len(o) != 1 {
		t.Errorf("old bucket holds %v, want the recording in flight", o)
	}
	if got := sha(rg.getObject(oldB, rg.objects(oldB)[0])); got != st.GetSha256() {
		t.Errorf("object %s, record %s", got, st.GetSha256())
	}
	rg.admit(recording{id: "rec-after", domain: "a.example", reseller: "r1", body: randomBytes(5000)})
	rg.waitState("a.example", "rec-after", "archived")
	if o := rg.objects(newB); len(o) != 1 {
		t.Errorf("new bucket holds %v, want the later recording", o)
	}
	if cs := rg.status(X.GetId()); cs.GetArchived() != 2 || cs.GetWaiting() != 0 || cs.GetState() != "active" {
		t.Errorf("X = %s, archived %d, waiting %d (%q), want active, 2, 0", cs.GetState(), cs.GetArchived(), cs.GetWaiting(), cs.GetLastError())
	}
}

// TestConfigCreatedWhileAnotherInstanceRestores: Redis lost the router's
// state; one instance restores it from the streams while configurations
// are created through another. Every configuration exists afterwards and
// archives.
func TestConfigCreatedWhileAnotherInstanceRestores(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	bucket := rg.bucket(false)
	for i := 0; i < 30; i++ {
		c, s := s3Config(t, "old-"+string(rune('a'+i%26))+string(rune('0'+i/26)), "system", "", "s3", bucket)
		c.Enabled = false
		rg.create(system, c, s)
	}
	rg.loseRouterState()
	other := rg.secondService(false)
	done := make(chan error, 1)
	go func() { done <- other.Restore(context.Background()) }()
	var created []string
	for _, dom := range []string{"a.example", "b.example", "d.example"} {
		out, _, err := rg.tryCreate(system)(s3Config(t, "new-"+dom, "domain", dom, "s3", bucket))
		if err != nil {
			t.Fatalf("create during restore: %v", err)
		}
		created = append(created, out.GetId())
	}
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	for _, id := range created {
		if _, err := rg.svc.GetConfig(context.Background(), system, id); err != nil {
			t.Errorf("config %s created during the restore: %v", id, err)
		}
		if _, err := other.GetConfig(context.Background(), system, id); err != nil {
			t.Errorf("config %s through the restoring instance: %v", id, err)
		}
	}
	rg.admit(recording{id: "rec-restored", domain: "a.example", reseller: "r1", body: randomBytes(1000)})
	st := rg.waitState("a.example", "rec-restored", "archived")
	if cs := rg.status(st.GetConfigId()); cs.GetArchived() != 1 {
		t.Errorf("%s archived = %d, want 1", st.GetConfigId(), cs.GetArchived())
	}
}
