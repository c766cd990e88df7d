package callvault_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/callvault/callvault/pkg/testenv"
	"github.com/callvault/callvault/services/callvault"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// passwordRedis starts a redis-server of the test's own that requires
// password, and returns its address.
func passwordRedis(t *testing.T, password string) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		testenv.Env(t, "CALLVAULT_TEST_REDIS_SERVER_MISSING")
	}
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--requirepass", password, "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	rdb := redis.NewClient(&redis.Options{Addr: addr, Password: password})
	defer rdb.Close()
	testenv.WaitFor(t, "redis-server to answer", func() bool { return rdb.Ping(context.Background()).Err() == nil })
	return addr
}

// runUntilUp runs app until its banner is out, then stops it.
func runUntilUp(t *testing.T, cfg callvault.Config) (banner, logs string) {
	t.Helper()
	out, log := &syncBuffer{}, &syncBuffer{}
	app := callvault.New(cfg, testLogger(log), out)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	testenv.WaitFor(t, "the banner", func() bool {
		select {
		case err := <-done:
			t.Fatalf("callvault stopped before it was up: %v\n%s", err, log)
		default:
		}
		return strings.Contains(out.String(), "callvault is up")
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	return out.String(), log.String()
}

func baseConfig(t *testing.T, ns string) callvault.Config {
	var cfg callvault.Config
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr, cfg.GRPCAddr, cfg.NATSListen = freeAddr(t), freeAddr(t), freeAddr(t)
	cfg.Platform.Namespace = ns
	cfg.Platform.StreamReplicas = 1
	cfg.Platform.DuplicateWindow = time.Minute
	cfg.Platform.LogLevel = "debug"
	cfg.Limits.MaxMediaBytes = 1 << 20
	return cfg
}

// Neither the banner nor any log line shows the password of REDIS_URL or
// of the NATS URL; the banner shows them redacted.
func TestBannerAndLogsHidePasswords(t *testing.T) {
	t.Parallel()
	const redisPW, natsPW = "redis-pw-Zq81xv", "nats-pw-Lm27ke"
	ns := testenv.Namespace(t)
	testenv.NATS(t, ns) // deletes the namespace's streams at the end
	natsURL := testenv.Env(t, "CALLVAULT_TEST_NATS_URL")
	cfg := baseConfig(t, ns)
	cfg.ExternalNATS = true
	cfg.Platform.NATSURL = strings.Replace(natsURL, "nats://", "nats://callvault:"+natsPW+"@", 1)
	cfg.Platform.RedisURL = "redis://:" + redisPW + "@" + passwordRedis(t, redisPW) + "/0"
	banner, logs := runUntilUp(t, cfg)
	for _, pw := range []string{redisPW, natsPW} {
		if strings.Contains(banner, pw) || strings.Contains(logs, pw) {
			t.Errorf("password %q shown:\nbanner:\n%s\nlogs:\n%s", pw, banner, logs)
		}
	}
	if !strings.Contains(banner, "redis://:xxxxx@") || !strings.Contains(banner, "nats://callvault:xxxxx@") {
		t.Errorf("the banner should show the URLs redacted:\n%s", banner)
	}
	// A wrong password: the warning names the failure, not the password.
	cfg.Platform.RedisURL = "redis://:wrong-" + redisPW + "@" + strings.TrimPrefix(cfg.Platform.RedisURL, "redis://:"+redisPW+"@")
	cfg.DataDir = t.TempDir()
	banner, logs = runUntilUp(t, cfg)
	if strings.Contains(banner+logs, redisPW) {
		t.Errorf("password shown after a failed connect:\nbanner:\n%s\nlogs:\n%s", banner, logs)
	}
}

// The embedded NATS banner names the credentials file, never its password.
func TestBannerNamesNATSCredentialsFile(t *testing.T) {
	t.Parallel()
	cfg := baseConfig(t, testenv.Namespace(t))
	cfg.Platform.RedisURL = callvault.EmbeddedRedis
	banner, logs := runUntilUp(t, cfg)
	path := filepath.Join(cfg.DataDir, "nats-credentials")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var pw string
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "password="); ok {
			pw = v
		}
	}
	if pw == "" {
		t.Fatalf("no password in %s", path)
	}
	if !strings.Contains(banner, "credentials in "+path) {
		t.Errorf("the banner does not name %s:\n%s", path, banner)
	}
	if strings.Contains(banner+logs, pw) {
		t.Errorf("the NATS password is shown:\n%s\n%s", banner, logs)
	}
}

func testLogger(w *syncBuffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
