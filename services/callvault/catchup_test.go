package callvault_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/testenv"
	"github.com/callvault/callvault/services/callvault"
)

// startApp runs app until the test ends and returns its banner once up.
func startApp(t *testing.T, cfg callvault.Config) (banner func() string, stop func()) {
	t.Helper()
	out, log := &syncBuffer{}, &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- callvault.New(cfg, testLogger(log), out).Run(ctx) }()
	testenv.WaitFor(t, "the banner", func() bool {
		select {
		case err := <-done:
			t.Fatalf("callvault stopped before it was up: %v\n%s", err, log)
		default:
		}
		return strings.Contains(out.String(), "callvault is up")
	})
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}
	t.Cleanup(stop)
	return out.String, stop
}

func call(t *testing.T, method, url, token string, body any) (int, map[string]any) {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// A Redis that lost its data between two starts (here: the namespace's
// keys deleted, as a fresh Redis on the same port would hold none) is
// rebuilt before serve listens: the first read after start finds every
// recording, an issued token still authenticates, and the banner says why
// it rebuilt.
func TestServeRebuildsEmptiedRedisBeforeServing(t *testing.T) {
	t.Parallel()
	ns := testenv.Namespace(t)
	_, js := testenv.NATS(t, ns)
	rdb := testenv.Redis(t, ns)
	names, err := bus.NewNames(ns)
	if err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(t, ns)
	cfg.ExternalNATS = true
	cfg.Platform.NATSURL = testenv.Env(t, "CALLVAULT_TEST_NATS_URL")
	cfg.Platform.RedisURL = testenv.Env(t, "CALLVAULT_TEST_REDIS_URL")
	cfg.Platform.BootstrapToken = testenv.BootstrapToken

	_, stop := startApp(t, cfg)
	base := "http://" + cfg.HTTPAddr
	code, issued := call(t, http.MethodPost, base+"/api/v1/tokens", testenv.BootstrapToken,
		map[string]string{"name": "pbx-1", "level": "reseller", "reseller": "r1"})
	if code != http.StatusCreated {
		t.Fatalf("issue token: %d %v", code, issued)
	}
	token, _ := issued["token"].(string)
	if code, out := call(t, http.MethodPost, base+"/api/v1/domains", testenv.BootstrapToken,
		map[string]string{"domain": "a.example", "reseller": "r1"}); code != http.StatusCreated {
		t.Fatalf("provision a.example: %d %v", code, out)
	}
	const n = 6
	for i := range n {
		env := recording(fmt.Sprintf("rec-%d", i), "a.example", "101", time.Now().Add(-time.Duration(i)*time.Hour))
		if _, err := bus.PublishEnvelope(context.Background(), js, names.RecordingSubject(), env.GetId(), env); err != nil {
			t.Fatal(err)
		}
	}
	list := func(tok string) (int, int) {
		code, out := call(t, http.MethodGet, base+"/api/v1/pbx/recordings?domain=a.example", tok, nil)
		recs, _ := out["recordings"].([]any)
		return code, len(recs)
	}
	testenv.WaitFor(t, "the recordings admitted", func() bool { _, got := list(testenv.BootstrapToken); return got == n })
	stop()

	ctx := context.Background()
	iter := rdb.Scan(ctx, 0, ns+":*", 1000).Iterator()
	for iter.Next(ctx) {
		if err := rdb.Del(ctx, iter.Val()).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if ap, err := catalog.New(rdb, ns).Applied(ctx); err != nil || ap.Present {
		t.Fatalf("the flush left applied marks: %+v %v", ap, err)
	}

	cfg.DataDir = t.TempDir()
	banner, _ := startApp(t, cfg)
	if code, got := list(testenv.BootstrapToken); code != http.StatusOK || got != n {
		t.Errorf("first read after start: %d, %d recordings, want %d", code, got, n)
	}
	if code, _ := list(token); code == http.StatusUnauthorized {
		t.Errorf("the issued token is rejected after the restart")
	}
	if b := banner(); !strings.Contains(b, "Redis holds no callvault state") || !strings.Contains(b, "rebuilt from the streams") {
		t.Errorf("the banner does not say why it rebuilt:\n%s", b)
	}
}
