package router_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/testenv"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	"github.com/callvault/callvault/services/router"
)

// secondService is another router instance on the rig's Redis and
// streams (its own metrics registry), as a second replica would be.
func (rg *rig) secondService(run bool) *router.Service {
	rg.t.Helper()
	d := *rg.d
	d.Registry = prometheus.NewRegistry()
	svc, err := router.New(&d, rg.set, nil)
	if err != nil {
		rg.t.Fatal(err)
	}
	if run {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- svc.Run(ctx) }()
		rg.t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				rg.t.Errorf("second router run: %v", err)
			}
		})
	}
	return svc
}

// s3Proxy stands in front of the S3 test server, counting (and, once
// armed, delaying) the object PUTs whose path holds a marker.
type s3Proxy struct {
	srv   *httptest.Server
	armed atomic.Bool
	mu    sync.Mutex
	puts  map[string]int
	codes map[string][]int // the answers to those PUTs
	delay map[string]time.Duration
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func newS3Proxy(t *testing.T, delay map[string]time.Duration) *s3Proxy {
	t.Helper()
	up, err := url.Parse(testenv.Env(t, "CALLVAULT_TEST_S3_ENDPOINT"))
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(up) // keeps the signed Host header
	p := &s3Proxy{puts: map[string]int{}, codes: map[string][]int{}, delay: delay}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && p.armed.Load() {
			for marker, d := range p.delay {
				if strings.Contains(r.URL.Path, marker) {
					p.mu.Lock()
					p.puts[marker]++
					p.mu.Unlock()
					time.Sleep(d)
				}
			}
		}
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		rp.ServeHTTP(sw, r)
		if r.Method == http.MethodPut && p.armed.Load() {
			for marker := range p.delay {
				if strings.Contains(r.URL.Path, marker) {
					p.mu.Lock()
					p.codes[marker] = append(p.codes[marker], sw.code)
					p.mu.Unlock()
				}
			}
		}
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *s3Proxy) count(marker string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.puts[marker]
}

// TestRecoveryDrainUploadsEachRecordingOnce: with two router instances,
// a parked job one instance has claimed (leased) is made due again by
// wakeParked as soon as any other artifact of the same configuration
// succeeds, and the other instance claims and uploads it a second time
// while the first upload runs. Every slow recording of a recovering
// backlog is uploaded twice; with a customer key the losing upload meets
// the winner's object, cannot compare ciphertexts and leaves a phantom
// "waiting" entry and an "error" status behind an archived recording.
func TestRecoveryDrainUploadsEachRecordingOnce(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	proxy := newS3Proxy(t, map[string]time.Duration{"rec-slow": 3 * time.Second, "rec-fast": 500 * time.Millisecond})
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	bucket := bucketName(t) // missing: the target fails until it is made
	c, s := s3Config(t, "X", "domain", "a.example", "s3", bucket)
	c.Endpoint, c.AgeRecipient = proxy.srv.URL, id.Recipient().String()
	X := rg.create(aDomain, c, s)
	rg.secondService(true)

	rg.admit(recording{id: "rec-slow", domain: "a.example", reseller: "r1", body: randomBytes(4000)})
	rg.admit(recording{id: "rec-fast", domain: "a.example", reseller: "r1", body: randomBytes(4000)})
	parked := rg.d.Names.Namespace() + ":{_archive}:parked"
	testenv.WaitFor(t, "both parked", func() bool {
		n, err := rg.d.Redis.ZCard(context.Background(), parked).Result()
		return err == nil && n == 2
	})
	proxy.armed.Store(true)
	rg.createBucket(bucket, false) // the target recovers
	for _, rid := range []string{"rec-slow", "rec-fast"} {
		if st, ok := rg.stateWithin("a.example", rid, "archived", 15*time.Second); !ok {
			t.Fatalf("%s = %s (%q), want archived", rid, st.GetState(), st.GetReason())
		}
	}
	time.Sleep(4 * time.Second) // any second attempt finishes meanwhile
	// A second attempt may meet the first (two instances restoring the
	// waiting work at once hand it out twice); what must hold is that only
	// one write is stored: the other is refused by the conditional write.
	proxy.mu.Lock()
	stored := 0
	for _, c := range proxy.codes["rec-slow"] {
		if c == http.StatusOK {
			stored++
		}
	}
	proxy.mu.Unlock()
	if n := proxy.count("rec-slow"); stored != 1 {
		proxy.mu.Lock()
		codes := proxy.codes["rec-slow"]
		proxy.mu.Unlock()
		t.Errorf("rec-slow was stored %d times in %d uploads during the drain (answers %v), want once", stored, n, codes)
	}
	if st := rg.status(X.GetId()); st.GetWaiting() != 0 || st.GetState() == "error" {
		t.Errorf("after the backlog drained X = %s with %d waiting (%q), want nothing waiting and no error", st.GetState(), st.GetWaiting(), st.GetLastError())
	}
}

// TestRestoreDoesNotUndoANewerChange: a second instance starting (a
// rolling deploy) replays the configuration stream up to its end as it
// was when the replay began. A change made through the running instance
// meanwhile is applied by it (and by the shared config consumer) before
// the replay reaches that configuration's older event, which then
// overwrites it: Redis keeps the old version until the next change.
func TestRestoreDoesNotUndoANewerChange(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	ctx := context.Background()
	// A long configuration history, so a replay takes a while.
	fc, fs, _ := sftpConfig(t, "filler", "domain", "b.example")
	fc.Enabled = false
	F := rg.create(bDomain, fc, fs)
	frec := rg.storedRecord(F.GetId())
	const n = 6000
	for i := range n {
		r := proto.Clone(frec).(*eventv1.ArchiveConfigRecord)
		r.Name = fmt.Sprintf("filler-%d", i)
		env := &eventv1.Envelope{
			Id: fmt.Sprintf("filler-%d", i), AcceptedAt: timestamppb.Now(), Source: "router", Type: "archive_config.updated", SchemaVersion: 2,
			Tenant: &eventv1.Tenant{Reseller: "r1", Domain: "b.example"},
			Body: &eventv1.Envelope_Config{Config: &eventv1.ConfigChanged{Entity: "archive_config", EntityId: r.GetId(),
				After: &eventv1.ConfigPayload{Value: &eventv1.ConfigPayload_ArchiveConfig{ArchiveConfig: r}}}},
		}
		b, _ := proto.Marshal(env)
		if _, err := rg.d.JS.PublishAsync(rg.d.Names.ArchiveConfigSubject(), b); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-rg.d.JS.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("filler publishes did not complete")
	}
	T := rg.createPair(aDomain)(s3Config(t, "v1", "domain", "a.example", "s3", rg.bucket(false)))
	caughtUp := func() bool {
		c, err := rg.d.JS.Consumer(ctx, rg.d.Names.ConfigStream(), router.ConfigConsumer)
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}
	testenv.WaitFor(t, "the running instance applied the history", caughtUp)
	last := fmt.Sprintf("filler-%d", n-1)
	if got := rg.storedRecord(F.GetId()).GetName(); got != last {
		t.Fatalf("filler = %q, want %q", got, last)
	}

	// The second instance starts and replays...
	B := rg.secondService(false)
	restored := make(chan error, 1)
	go func() { restored <- B.Restore(ctx) }()
	time.Sleep(20 * time.Millisecond) // the replay under way
	// ...while the tenant renames T through the running instance.
	got, err := rg.svc.GetConfig(ctx, aDomain, T.GetId())
	if err != nil {
		t.Fatal(err)
	}
	got.Name = "v2"
	if _, _, err := rg.svc.UpdateConfig(ctx, aDomain, got, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-restored:
		t.Fatalf("the replay ended (%v) before the change: raise n to show the race", err)
	default:
	}
	testenv.WaitFor(t, "the change applied by the config consumer", caughtUp)
	// While the replay runs it never takes F back to an older name.
	for done := false; !done; {
		select {
		case err := <-restored:
			if err != nil {
				t.Fatal(err)
			}
			done = true
		default:
			time.Sleep(time.Millisecond)
		}
		if name := rg.storedRecord(F.GetId()).GetName(); name != last {
			t.Fatalf("during the replay F went back to %q from %q", name, last)
		}
	}
	after, err := rg.svc.GetConfig(ctx, aDomain, T.GetId())
	if err != nil {
		t.Fatal(err)
	}
	if after.GetName() != "v2" {
		t.Errorf("after the second instance's restore T is named %q, want the newer %q: an old event overrode a newer change", after.GetName(), "v2")
	}
}
