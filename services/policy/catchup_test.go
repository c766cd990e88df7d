package policy_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/obs"
	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/pkg/testenv"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
	"github.com/callvault/callvault/services/policy"
)

// flush deletes every key of the test's namespace, as a Redis restarted
// without its data would hold none.
func flush(t *testing.T, d *platform.Deps) {
	t.Helper()
	// One DEL of every key: a Redis that restarts without its data loses
	// everything at once, never half of it while a rebuild runs.
	ctx := context.Background()
	keys, err := d.Redis.Keys(ctx, d.Names.Namespace()+":*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) > 0 {
		if err := d.Redis.Del(ctx, keys...).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

func publishRecordings(t *testing.T, d *platform.Deps, from, to int) {
	t.Helper()
	at := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	for i := from; i < to; i++ {
		id := fmt.Sprintf("rec-%d", i)
		if _, err := bus.PublishEnvelope(context.Background(), d.JS, d.Names.RecordingSubject(), id, recordingEvent(id, 100, at.Add(time.Duration(i)*time.Minute))); err != nil {
			t.Fatal(err)
		}
	}
}

func waitDecided(t *testing.T, d *platform.Deps) {
	t.Helper()
	testenv.WaitFor(t, "every ingest event decided", func() bool {
		cons, err := d.JS.Consumer(context.Background(), d.Names.IngestStream(), policy.AdmitConsumer)
		if err != nil {
			return false
		}
		info, err := cons.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
}

func listed(t *testing.T, d *platform.Deps) int {
	t.Helper()
	page, err := catalog.New(d.Redis, d.Names.Namespace()).ListRecordings(context.Background(), catalog.Query{Domain: "a.example", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return len(page.Recordings)
}

func runPolicy(t *testing.T, svc *policy.Service) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}
}

// Events applied, then Redis emptied (a restart without data): the
// service rebuilds before it consumes, so a read right after Run's
// catch-up finds everything; emptied again while running, the next event
// is applied only after another rebuild, so nothing earlier goes missing.
func TestRedisEmptiedIsRebuilt(t *testing.T) {
	t.Parallel()
	d, svc := setup(t)
	stop := runPolicy(t, svc)
	publishRecordings(t, d, 0, 5)
	waitDecided(t, d)
	stop()
	if n := listed(t, d); n != 5 {
		t.Fatalf("before the flush: %d recordings, want 5", n)
	}

	flush(t, d)
	// A restart: CatchUp is what Run and the single binary call before
	// anything serves.
	why, decisions, err := svc.CatchUp(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(why, "no callvault state") || decisions < 5 {
		t.Errorf("catch-up: why %q, %d decisions", why, decisions)
	}
	if n := listed(t, d); n != 5 {
		t.Fatalf("right after the catch-up: %d recordings, want 5", n)
	}

	stop = runPolicy(t, svc)
	defer stop()
	flush(t, d)
	publishRecordings(t, d, 5, 6)
	waitDecided(t, d)
	testenv.WaitFor(t, "six recordings after the flush while running", func() bool { return listed(t, d) == 6 })
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A service that only reads is not ready while Redis is behind the
// streams; an anonymous /readyz says just that, the log says why; once the
// policy service has caught up, it is ready.
func TestNotReadyWhileRedisBehind(t *testing.T) {
	t.Parallel()
	d, svc := setup(t)
	stop := runPolicy(t, svc)
	publishRecordings(t, d, 0, 3)
	waitDecided(t, d)
	stop()
	flush(t, d)

	logs := &lockedBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	h := obs.NewHealth(log)
	h.Add("redis-state", catalog.NewLagCheck(d.JS, d.Names, catalog.New(d.Redis, d.Names.Namespace()), log, 0).Check)
	mux := http.NewServeMux()
	h.Register(mux, obs.NewRegistry())
	srv := httptest.NewServer(mux)
	defer srv.Close()
	readyz := func() (int, string) {
		resp, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	if code, body := readyz(); code != http.StatusServiceUnavailable || body != `{"status":"not ready"}` {
		t.Fatalf("behind: %d %s", code, body)
	}
	if !strings.Contains(logs.String(), "Redis holds no callvault state but the streams hold") {
		t.Errorf("the log does not say why:\n%s", logs)
	}
	if _, _, err := svc.CatchUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code, body := readyz(); code != http.StatusOK {
		t.Fatalf("after the catch-up: %d %s\n%s", code, body, logs)
	}
}

// A standalone policy process with an emptied Redis answers its first
// call, made the moment it listens, from rebuilt state.
func TestStandaloneServesOnlyAfterCatchUp(t *testing.T) {
	t.Parallel()
	d, svc := setup(t)
	stop := runPolicy(t, svc)
	const n = 200
	publishRecordings(t, d, 0, n)
	waitDecided(t, d)
	stop()
	flush(t, d)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan [2]string, 1)
	go func() {
		done <- platform.ServeService(ctx, testenv.Logger(), d, svc, "127.0.0.1:0", "127.0.0.1:0", ready)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	var at [2]string
	select {
	case at = <-ready:
	case err := <-done:
		t.Fatalf("serve ended: %v", err)
	}
	conn, err := grpc.NewClient(at[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+testenv.BootstrapToken)
	id := fmt.Sprintf("rec-%d", n-1)
	if _, err := policyv1.NewPolicyServiceClient(conn).Explain(cctx, &policyv1.ExplainRequest{Domain: "a.example", ArtifactId: id}); err != nil {
		t.Fatalf("explain %s right after start: %v", id, err)
	}
}
