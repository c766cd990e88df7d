package obs_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/callvault/callvault/pkg/obs"
)

// /readyz tells an anonymous caller only whether the process is ready; the
// failing check and its error text go to the log, once per change.
func TestReadyzSaysOnlyReadyOrNot(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	h := obs.NewHealth(slog.New(slog.NewJSONHandler(&logs, nil)))
	var failing atomic.Bool
	failing.Store(true)
	h.Add("redis", func(context.Context) error {
		if failing.Load() {
			return errors.New("dial tcp 10.9.8.7:6379: connect: connection refused")
		}
		return nil
	})
	mux := http.NewServeMux()
	h.Register(mux, obs.NewRegistry())
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func() (int, string) {
		resp, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	for range 2 {
		code, body := get()
		if code != http.StatusServiceUnavailable || body != `{"status":"not ready"}` {
			t.Fatalf("not ready: %d %s", code, body)
		}
	}
	if n := strings.Count(logs.String(), `"msg":"not ready"`); n != 1 || !strings.Contains(logs.String(), "10.9.8.7") {
		t.Errorf("the reason should be logged once, found %d times:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), `"redis"`) {
		t.Errorf("the log does not name the failing check:\n%s", logs.String())
	}
	failing.Store(false)
	if code, body := get(); code != http.StatusOK || body != `{"status":"ready"}` {
		t.Fatalf("ready: %d %s", code, body)
	}
}
