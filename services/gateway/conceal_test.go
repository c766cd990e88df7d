package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/pkg/testenv"
	catalogv1 "github.com/callvault/callvault/proto/callvault/catalog/v1"
	"github.com/callvault/callvault/services/gateway"
)

// internalText is what the failing Redis says: an address and detail no
// client may see.
const internalText = "READONLY You can't write against a read only replica 10.9.8.7:6379 shard-secret-7"

// failingRedis makes every command of a real client fail as a broken Redis
// would.
type failingRedis struct{}

func (failingRedis) DialHook(next redis.DialHook) redis.DialHook { return next }
func (failingRedis) ProcessHook(redis.ProcessHook) redis.ProcessHook {
	return func(context.Context, redis.Cmder) error { return errors.New(internalText) }
}
func (failingRedis) ProcessPipelineHook(redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(context.Context, []redis.Cmder) error { return errors.New(internalText) }
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

var correlationID = regexp.MustCompile(`correlation id ([0-9a-f]{16})`)

// A call that hits a failing Redis answers, over HTTP and gRPC, with a
// generic message and a correlation id; the Redis error text is only in
// the server's log, under that id.
func TestInternalErrorsAreConcealed(t *testing.T) {
	t.Parallel()
	store, err := cds.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := testenv.Deps(t, store)
	opts, err := redis.ParseURL(testenv.Env(t, "CALLVAULT_TEST_REDIS_URL"))
	if err != nil {
		t.Fatal(err)
	}
	broken := redis.NewClient(opts)
	broken.AddHook(failingRedis{})
	defer broken.Close()
	logs := &lockedBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	faulty := *d
	faulty.Redis, faulty.Registry, faulty.Log = broken, prometheus.NewRegistry(), log
	svc := gateway.New(&faulty, nil)

	mux := http.NewServeMux()
	svc.RegisterHTTP(mux, d.Tokens)
	hs := httptest.NewServer(platform.NewHTTPHandler(mux, log))
	defer hs.Close()
	req, _ := http.NewRequest(http.MethodGet, hs.URL+"/api/v1/pbx/recordings?domain=a.example", nil)
	req.Header.Set("Authorization", "Bearer "+testenv.BootstrapToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode < 500 {
		t.Fatalf("HTTP status %d, want a 5xx: %s", resp.StatusCode, body)
	}
	var problem struct {
		Detail        string `json:"detail"`
		CorrelationID string `json:"correlation_id"`
	}
	if err := json.Unmarshal(body, &problem); err != nil {
		t.Fatalf("problem document: %v: %s", err, body)
	}
	checkConcealed(t, "HTTP", string(body)+resp.Header.Get("Retry-After"), problem.Detail, logs)

	g, _ := platform.NewGRPCServer(d.Tokens, log)
	svc.RegisterGRPC(g)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(l) }()
	defer g.Stop()
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+testenv.BootstrapToken)
	_, err = catalogv1.NewCatalogServiceClient(conn).ListRecordings(ctx, &catalogv1.ListRecordingsRequest{Domain: "a.example"})
	st, _ := status.FromError(err)
	if err == nil || st.Code().String() == "InvalidArgument" {
		t.Fatalf("gRPC: got %v, want an internal or unavailable status", err)
	}
	checkConcealed(t, "gRPC", st.Message()+st.Code().String(), st.Message(), logs)
}

func checkConcealed(t *testing.T, what, answer, message string, logs *lockedBuffer) {
	t.Helper()
	for _, secret := range []string{"10.9.8.7", "READONLY", "shard-secret-7", "a.example"} {
		if strings.Contains(answer, secret) {
			t.Errorf("%s answer carries internal text %q: %s", what, secret, answer)
		}
	}
	m := correlationID.FindStringSubmatch(message)
	if m == nil {
		t.Fatalf("%s answer names no correlation id: %s", what, message)
	}
	found := false
	for _, line := range strings.Split(logs.String(), "\n") {
		found = found || (strings.Contains(line, m[1]) && strings.Contains(line, "shard-secret-7"))
	}
	if !found {
		t.Errorf("%s: no log line holds correlation id %s with the internal error:\n%s", what, m[1], logs)
	}
}
