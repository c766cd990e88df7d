// Package testenv connects integration tests to the real servers that
// `make test` starts (NATS JetStream, Redis, an S3-compatible server) and
// isolates each test: its own namespace for streams and keys, its own
// bucket. Without a server a test is skipped, except under CI=true, where
// a missing server fails the test.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/platform"
)

// Env returns the value of name or skips (fails under CI) when unset.
func Env(t testing.TB, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v != "" {
		return v
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not set: CI must run the real servers (make test starts them)", name)
	}
	t.Skipf("%s is not set; run `make test` to start the real servers", name)
	return ""
}

// Namespace returns a fresh namespace for one test.
func Namespace(t testing.TB) string {
	t.Helper()
	b := make([]byte, 5)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "t" + hex.EncodeToString(b)
}

// Logger discards logs unless CALLVAULT_TEST_LOG is set.
func Logger() *slog.Logger {
	if os.Getenv("CALLVAULT_TEST_LOG") != "" {
		return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewJSONHandler(io.Discard, nil))
}

// NATS connects to the test NATS server. Streams of ns are deleted when the
// test ends.
func NATS(t testing.TB, ns string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	url := Env(t, "CALLVAULT_TEST_NATS_URL")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, js, err := platform.ConnectNATS(ctx, url, "test", Logger())
	if err != nil {
		t.Fatalf("nats: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		prefix := strings.ToUpper(ns) + "_"
		for name := range js.StreamNames(ctx).Name() {
			if strings.HasPrefix(name, prefix) {
				_ = js.DeleteStream(ctx, name)
			}
		}
		nc.Close()
	})
	return nc, js
}

// Redis connects to the test Redis. Keys of ns are deleted when the test
// ends.
func Redis(t testing.TB, ns string) redis.UniversalClient {
	t.Helper()
	return connectRedis(t, ns, Env(t, "CALLVAULT_TEST_REDIS_URL"))
}

// RedisCluster connects to the test Redis Cluster
// (CALLVAULT_TEST_REDIS_CLUSTER_URL, a redis-cluster:// URL). Keys of ns
// are deleted when the test ends.
func RedisCluster(t testing.TB, ns string) redis.UniversalClient {
	t.Helper()
	rdb := connectRedis(t, ns, Env(t, "CALLVAULT_TEST_REDIS_CLUSTER_URL"))
	if _, ok := rdb.(*redis.ClusterClient); !ok {
		t.Fatal("CALLVAULT_TEST_REDIS_CLUSTER_URL does not name a cluster (redis-cluster://host:port,...)")
	}
	return rdb
}

func connectRedis(t testing.TB, ns, url string) redis.UniversalClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rdb, err := platform.ConnectRedis(ctx, url)
	if err != nil {
		t.Fatalf("redis: %v", err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		keys, _ := Keys(ctx, rdb, ns+":*")
		for _, k := range keys {
			rdb.Del(ctx, k)
		}
		_ = rdb.Close()
	})
	return rdb
}

// Keys lists the keys matching pattern on every node: SCAN on a cluster
// client reaches one node only.
func Keys(ctx context.Context, rdb redis.UniversalClient, pattern string) ([]string, error) {
	var mu sync.Mutex
	var out []string
	scan := func(ctx context.Context, c *redis.Client) error {
		iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			mu.Lock()
			out = append(out, iter.Val())
			mu.Unlock()
		}
		return iter.Err()
	}
	var err error
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, scan)
	case *redis.Client:
		err = scan(ctx, c)
	default:
		return nil, fmt.Errorf("keys: unsupported client %T", rdb)
	}
	slices.Sort(out)
	return out, err
}

// S3Config returns the test S3 server's config with a bucket of its own.
func S3Config(t testing.TB, ns string) cds.S3Config {
	t.Helper()
	return cds.S3Config{
		Endpoint:  Env(t, "CALLVAULT_TEST_S3_ENDPOINT"),
		Region:    "us-east-1",
		Bucket:    "cv-" + ns,
		AccessKey: Env(t, "CALLVAULT_TEST_S3_ACCESS_KEY"),
		SecretKey: Env(t, "CALLVAULT_TEST_S3_SECRET_KEY"),
		PathStyle: true,
	}
}

// S3 returns a store on a fresh bucket of the test S3 server.
func S3(t testing.TB, ns string) *cds.S3 {
	t.Helper()
	s, err := cds.NewS3(S3Config(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.EnsureBucket(ctx); err != nil {
		t.Fatalf("s3: %v", err)
	}
	return s
}

// Deps assembles platform dependencies on the real servers with a fresh
// namespace; store may be nil for an S3 store on a fresh bucket.
func Deps(t testing.TB, store cds.Store) *platform.Deps {
	t.Helper()
	return DepsOn(t, store, Redis)
}

// DepsOn is Deps with the Redis that connect returns (Redis or
// RedisCluster).
func DepsOn(t testing.TB, store cds.Store, connect func(testing.TB, string) redis.UniversalClient) *platform.Deps {
	t.Helper()
	ns := Namespace(t)
	nc, js := NATS(t, ns)
	rdb := connect(t, ns)
	if store == nil {
		store = S3(t, ns)
	}
	names, err := bus.NewNames(ns)
	if err != nil {
		t.Fatal(err)
	}
	cfg := platform.Config{Namespace: ns, StreamReplicas: 1, DuplicateWindow: time.Minute, BootstrapToken: "test-bootstrap-token-0123456789"}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d, err := platform.Assemble(ctx, cfg, Logger(), names, nc, js, rdb, store)
	if err != nil {
		t.Fatal(err)
	}
	// A fresh namespace is current with its empty streams, as the policy
	// service's catch-up records at a first start; without the marks every
	// request is refused as "being rebuilt".
	if err := rdb.HSet(ctx, bus.AppliedKey(ns), "ingest", 0, "config", 0, bus.AppliedLayoutField, bus.CatalogLayout).Err(); err != nil {
		t.Fatal(err)
	}
	return d
}

// BootstrapToken is the system token of Deps.
const BootstrapToken = "test-bootstrap-token-0123456789"

// WaitFor polls cond until it holds, failing the test after 20 seconds.
// It is for conditions that become true asynchronously (a consumer acks,
// a dead letter appears), never a measure of speed.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
