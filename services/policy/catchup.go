package policy

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
)

// ConfigConsumer applies every config event to Redis, strictly in stream
// order, and records how far it got. Request paths also apply their own
// change at once (so a caller reads its write); this consumer is what
// guarantees that every published change is applied, whatever happened to
// the process that published it.
const ConfigConsumer = "policy-config"

// applyConfigEvent applies one config event of any kind.
func (s *Service) applyConfigEvent(ctx context.Context, env *eventv1.Envelope) error {
	switch env.GetBody().(type) {
	case *eventv1.Envelope_TokenIssued, *eventv1.Envelope_TokenRevoked:
		return s.d.Tokens.Apply(ctx, env)
	}
	return s.ApplyConfig(ctx, env)
}

func (s *Service) handleConfig(ctx context.Context, m jetstream.Msg) error {
	env, err := bus.DecodeEnvelope(m.Data())
	if err != nil {
		return err
	}
	md, err := m.Metadata()
	if err != nil {
		return bus.Poison(fmt.Errorf("message metadata: %w", err))
	}
	err = s.applyConfigEvent(ctx, env)
	return settled(ctx, s.catalog, catalog.AppliedConfig, md.Sequence.Stream, err)
}

// Lag says why Redis is behind the streams ("" when it is not): it holds
// no state while the streams hold events (a Redis restarted without its
// data, or a fresh one on the default port), or it has applied less than
// the consumers have acknowledged (a Redis restored from an old snapshot).
func (s *Service) Lag(ctx context.Context) (string, error) {
	return Lag(ctx, s.d.JS, s.d.Names, s.catalog)
}

// Lag is the check behind Service.Lag, for services that only read.
func Lag(ctx context.Context, js jetstream.JetStream, n bus.Names, cat *catalog.Catalog) (string, error) {
	ap, err := cat.Applied(ctx)
	if err != nil {
		return "", err
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

// CatchUp rebuilds Redis from the streams when it is behind them, before
// anything is served from it. The rebuild is idempotent over whatever
// state Redis still holds. It reports why it rebuilt ("" when current).
func (s *Service) CatchUp(ctx context.Context) (string, error) {
	why, err := s.Lag(ctx)
	if err != nil {
		return "", err
	}
	if why == "" {
		// Current. A Redis that holds no marker yet (a first start on
		// empty streams) gets one, so that losing it later is noticed.
		ap, err := s.catalog.Applied(ctx)
		if err != nil || ap.Present {
			return "", err
		}
		ingest, config, err := s.marks(ctx)
		if err != nil {
			return "", err
		}
		if err := s.catalog.MarkApplied(ctx, catalog.AppliedConfig, config); err != nil {
			return "", err
		}
		return "", s.catalog.MarkApplied(ctx, catalog.AppliedIngest, ingest)
	}
	s.log.Warn("Redis is behind the streams; rebuilding before serving", "why", why)
	if _, err := s.Rebuild(ctx); err != nil {
		return why, fmt.Errorf("catch up: %w", err)
	}
	return why, nil
}

// marks are what a rebuild started now will have applied: every ingest
// event the admission consumer acknowledged (each has its decision in the
// stream) and the whole config stream.
func (s *Service) marks(ctx context.Context) (ingest, config uint64, err error) {
	if cons, err := s.d.JS.Consumer(ctx, s.d.Names.IngestStream(), AdmitConsumer); err == nil {
		info, err := cons.Info(ctx)
		if err != nil {
			return 0, 0, err
		}
		ingest = info.AckFloor.Stream
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, 0, err
	}
	st, err := s.d.JS.Stream(ctx, s.d.Names.ConfigStream())
	if err != nil {
		return 0, 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, 0, err
	}
	return ingest, info.State.LastSeq, nil
}
