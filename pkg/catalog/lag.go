package catalog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callvault/callvault/pkg/bus"
)

// The durable consumers whose progress the applied marks follow: policy
// admits ingest events and applies config events. They are named here so
// that services which only read Redis can check it without importing the
// policy service.
const (
	AdmitConsumer  = "policy-admit"
	ConfigConsumer = "policy-config"
)

// ErrOtherLayout: Redis holds callvault state written in another catalog
// layout (an earlier version's). Nothing is served from it or written to
// it; the operator empties it and the streams rebuild it.
var ErrOtherLayout = errors.New("catalog: Redis holds the catalog in another layout: empty it (FLUSHDB, or point REDIS_URL at an empty Redis) and start again; the streams rebuild everything")

// Lag says why Redis is behind the streams ("" when it is not): it holds
// no state while the streams hold events (a Redis restarted without its
// data, or a fresh one on the default port), or it has applied less than
// the consumers have acknowledged (a Redis restored from an old snapshot).
func Lag(ctx context.Context, js jetstream.JetStream, n bus.Names, cat *Catalog) (string, error) {
	ap, err := cat.Applied(ctx)
	if err != nil {
		return "", err
	}
	if ap.Present && ap.Layout != Layout {
		return "", fmt.Errorf("%w: it is marked %q, this version reads %q", ErrOtherLayout, ap.Layout, Layout)
	}
	var events uint64
	for _, name := range []string{n.IngestStream(), n.ConfigStream()} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			return "", fmt.Errorf("stream %s: %w", name, err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			return "", fmt.Errorf("stream %s: %w", name, err)
		}
		events += info.State.Msgs
	}
	if !ap.Present {
		if events > 0 {
			return fmt.Sprintf("Redis holds no callvault state but the streams hold %d events", events), nil
		}
		return "", nil
	}
	for _, c := range []struct {
		stream, durable string
		applied         uint64
	}{{n.IngestStream(), AdmitConsumer, ap.Ingest}, {n.ConfigStream(), ConfigConsumer, ap.Config}} {
		cons, err := js.Consumer(ctx, c.stream, c.durable)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("consumer %s: %w", c.durable, err)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return "", fmt.Errorf("consumer %s: %w", c.durable, err)
		}
		if c.applied < info.AckFloor.Stream {
			return fmt.Sprintf("Redis has applied %s up to sequence %d but %s acknowledged %d", c.stream, c.applied, c.durable, info.AckFloor.Stream), nil
		}
	}
	return "", nil
}

// ErrBehind means Redis is behind the streams; the error says why.
var ErrBehind = errors.New("redis is behind the streams")

// LagCheck is a readiness check for services that read Redis: it fails
// while Redis is behind the streams. It asks the servers at most once per
// interval and logs each change of verdict, with the reason.
type LagCheck struct {
	js       jetstream.JetStream
	names    bus.Names
	cat      *Catalog
	log      *slog.Logger
	interval time.Duration

	mu      sync.Mutex
	checked time.Time
	last    error
}

// NewLagCheck returns a check that re-asks every interval.
func NewLagCheck(js jetstream.JetStream, n bus.Names, cat *Catalog, log *slog.Logger, interval time.Duration) *LagCheck {
	return &LagCheck{js: js, names: n, cat: cat, log: log, interval: interval}
}

// Check reports ErrBehind (with the reason) while Redis is behind.
func (l *LagCheck) Check(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.checked.IsZero() && time.Since(l.checked) < l.interval {
		return l.last
	}
	why, err := Lag(ctx, l.js, l.names, l.cat)
	switch {
	case err != nil:
		err = fmt.Errorf("check redis against the streams: %w", err)
	case why != "":
		err = fmt.Errorf("%w: %s", ErrBehind, why)
	}
	if (err == nil) != (l.last == nil) || l.checked.IsZero() {
		if err != nil {
			l.log.Warn("not serving from Redis: it is behind the streams until the policy service catches it up", "why", err)
		} else if !l.checked.IsZero() {
			l.log.Info("Redis has caught up with the streams")
		}
	}
	l.checked, l.last = time.Now(), err
	return err
}
