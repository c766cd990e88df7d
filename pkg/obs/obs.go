// Package obs wires what every service exposes to operators: JSON logs,
// /healthz, /readyz and Prometheus /metrics.
package obs

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewLogger returns a JSON logger at level ("debug", "info", "warn", "error").
func NewLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

// NewRegistry returns a registry with the Go and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Check reports whether one dependency is usable.
type Check func(ctx context.Context) error

// Health serves liveness and readiness. /readyz answers anyone, so it says
// only "ready" or "not ready": why is logged, once each time it changes,
// since check errors name hosts and internal state.
type Health struct {
	mu     sync.RWMutex
	checks map[string]Check
	log    *slog.Logger

	lastMu sync.Mutex
	last   string
}

// NewHealth returns a Health with no checks that logs to log.
func NewHealth(log *slog.Logger) *Health {
	if log == nil {
		log = slog.Default()
	}
	return &Health{checks: map[string]Check{}, log: log}
}

// Add registers a readiness check under name.
func (h *Health) Add(name string, c Check) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks[name] = c
}

// Ready runs every check and returns the failures by name.
func (h *Health) Ready(ctx context.Context) map[string]string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	failed := map[string]string{}
	for name, c := range h.checks {
		if err := c(ctx); err != nil {
			failed[name] = err.Error()
		}
	}
	return failed
}

// Register mounts /healthz, /readyz and /metrics on mux.
func (h *Health) Register(mux *http.ServeMux, reg *prometheus.Registry) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		failed := h.Ready(r.Context())
		h.logChange(failed)
		if len(failed) > 0 {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// logChange logs the failing checks whenever the set of reasons changes,
// so a probe every second does not repeat the same line.
func (h *Health) logChange(failed map[string]string) {
	names := make([]string, 0, len(failed))
	for n := range failed {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		b.WriteString(n + ": " + failed[n] + "\n")
	}
	h.lastMu.Lock()
	changed := b.String() != h.last
	h.last = b.String()
	h.lastMu.Unlock()
	switch {
	case !changed:
	case len(failed) == 0:
		h.log.Info("ready")
	default:
		h.log.Warn("not ready", "failing", names, "errors", failed)
	}
}
