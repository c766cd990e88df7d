package policy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/platform"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
)

// ConfigConsumer applies every config event to Redis, strictly in stream
// order, and records how far it got. Request paths also apply their own
// change at once (so a caller reads its write); this consumer is what
// guarantees that every published change is applied, whatever happened to
// the process that published it.
const ConfigConsumer = catalog.ConfigConsumer

// applyConfigEvent applies one config event of any kind.
func (s *Service) applyConfigEvent(ctx context.Context, env *eventv1.Envelope, seq uint64) error {
	switch env.GetBody().(type) {
	case *eventv1.Envelope_TokenIssued, *eventv1.Envelope_TokenRevoked:
		return s.d.Tokens.Apply(ctx, env)
	}
	return s.ApplyConfig(ctx, env, seq)
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
	w, err := s.ensureState(ctx)
	if err != nil {
		return err
	}
	defer w.leave()
	err = s.applyConfigEvent(ctx, env, md.Sequence.Stream)
	if err != nil && !bus.IsPoison(err) {
		return err
	}
	if serr := s.settle(ctx, w, catalog.AppliedConfig, md.Sequence.Stream); serr != nil {
		return serr
	}
	return err
}

// Lag says why Redis is behind the streams ("" when it is not); see
// catalog.Lag.
func (s *Service) Lag(ctx context.Context) (string, error) {
	return catalog.Lag(ctx, s.d.JS, s.d.Names, s.catalog)
}

// Lag is the check behind Service.Lag, for services that only read.
func Lag(ctx context.Context, js jetstream.JetStream, n bus.Names, cat *catalog.Catalog) (string, error) {
	return catalog.Lag(ctx, js, n, cat)
}

// CatchUp rebuilds Redis from the streams when it is behind them, before
// anything is served from it or applied to it. The rebuild replaces
// whatever catalog state Redis still holds, and runs in one process at a
// time (catalog.LockRebuild). It reports why it rebuilt ("" when current)
// and how many recorded decisions it replayed.
func (s *Service) CatchUp(ctx context.Context) (why string, events int, err error) {
	s.catchMu.Lock()
	defer s.catchMu.Unlock()
	why, err = s.Lag(ctx)
	if err != nil {
		return "", 0, err
	}
	if why == "" {
		fresh, err := s.markFresh(ctx)
		if err != nil || fresh {
			return "", 0, err
		}
		// The marks vanished since Lag read them: Redis was emptied just now.
		if why, err = s.Lag(ctx); err != nil || why == "" {
			return "", 0, err
		}
	}
	// One rebuild at a time, across processes: a rebuild that another
	// process finished while this one waited leaves nothing to do.
	held, release, err := s.catalog.LockRebuild(ctx)
	if err != nil {
		return why, 0, fmt.Errorf("catch up: %w", err)
	}
	defer release()
	if why, err = s.Lag(held); err != nil || why == "" {
		return why, 0, err
	}
	s.log.Warn("Redis is behind the streams; rebuilding before serving", "why", why)
	n, err := s.rebuild(held)
	if cause := context.Cause(held); err != nil && cause != nil && !errors.Is(cause, context.Canceled) {
		err = fmt.Errorf("%w: %w", err, cause)
	}
	if err != nil {
		return why, n, fmt.Errorf("catch up: %w", err)
	}
	// The CDR partition index lives in the same Redis but not in the
	// streams (CDRs leave theirs once in a segment): it is rebuilt from
	// the segment objects.
	st, err := s.ledger.RebuildIndex(held)
	if err != nil {
		return why, n, fmt.Errorf("catch up: CDR index: %w", err)
	}
	s.log.Info("Redis caught up with the streams", "why", why, "decisions_replayed", n, "cdr_partitions", st.Partitions, "cdr_segments", st.Segments)
	return why, n, nil
}

// Prepare catches Redis up before a standalone policy process serves its
// gRPC API (platform.RunService calls it before listening).
func (s *Service) Prepare(ctx context.Context) error {
	_, _, err := s.CatchUp(ctx)
	return err
}

var _ platform.Preparer = (*Service)(nil)

// markFresh writes zero marks into a Redis that holds none while the
// streams hold nothing to apply (a first start), so that from now on an
// absent mark means lost state. It reports false when Redis has no marks
// but the streams have events: Redis was emptied after Lag looked.
func (s *Service) markFresh(ctx context.Context) (bool, error) {
	ap, err := s.catalog.Applied(ctx)
	if err != nil || ap.Present {
		return true, err
	}
	why, err := s.Lag(ctx)
	if err != nil {
		return true, err
	}
	if why != "" {
		return false, nil
	}
	return true, s.catalog.MarkCurrent(ctx, 0, 0)
}

// DefaultWriterLease is Settings.WriterLease unless set.
const DefaultWriterLease = 2 * time.Minute

// ensureState runs before every event (or batch) is applied: a Redis that
// lost its data while the service ran (restarted without persistence,
// flushed) holds no applied marks, and an event applied to it would be
// decided against empty state. It registers the caller as a writer first,
// so a rebuild that starts now waits until leave is called before it
// empties anything, and returns the generation of the marks, which the
// writer hands back when it marks its work (catalog.MarkApplied): a
// writer that outlived its registration is caught there.
func (s *Service) ensureState(ctx context.Context) (*writer, error) {
	ctx = s.waitContext(ctx)
	for range 3 {
		start, lease := time.Now(), cmp.Or(s.set.WriterLease, DefaultWriterLease)
		leave, err := s.catalog.EnterWriter(ctx, lease)
		if err != nil {
			return nil, err
		}
		ap, err := s.catalog.Applied(ctx)
		if err != nil {
			leave()
			return nil, fmt.Errorf("check applied marks: %w", err)
		}
		if ap.Present {
			return &writer{gen: ap.Gen, leave: leave, until: start.Add(lease)}, nil
		}
		leave()
		if _, _, err := s.CatchUp(ctx); err != nil {
			return nil, err
		}
	}
	return nil, errors.New("check applied marks: Redis lost them again after each rebuild")
}

// writer is a registered writer: the generation of the marks it saw, and
// until when its registration holds rebuilds back.
type writer struct {
	gen   string
	leave func()
	until time.Time
}

// settle moves the applied mark of stream to seq for w (see settled) and
// ends w's registration. A writer whose marks went while it was still
// registered held the rebuild back, so its events are retried once the
// rebuild is over; one that outlived its registration, or found another
// rebuild's marks, may have written into a catalog being emptied, so the
// marks are cleared for one more rebuild.
func (s *Service) settle(ctx context.Context, w *writer, stream string, seq uint64) error {
	err := s.catalog.MarkApplied(ctx, stream, seq, w.gen)
	registered := time.Now().Before(w.until)
	w.leave()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, catalog.ErrMarksGone) && registered:
		return err
	case errors.Is(err, catalog.ErrRebuiltMeanwhile):
		return s.rebuiltMeanwhile(ctx)
	}
	return err
}

// rebuiltMeanwhile handles a writer that found a rebuild ran while it
// applied events: what it wrote may have been half wiped, and a rebuild
// that did not see its decision events would leave that as it is. Once
// the rebuild in progress (if any) has finished, the marks are cleared,
// so the next event is applied only after a rebuild that sees them all.
func (s *Service) rebuiltMeanwhile(ctx context.Context) error {
	held, release, err := s.catalog.LockRebuild(s.waitContext(ctx))
	if err != nil {
		return err
	}
	defer release()
	s.log.Warn("Redis was rebuilt while events were applied; rebuilding again before the next")
	if err := s.catalog.ClearApplied(held); err != nil {
		return err
	}
	return catalog.ErrRebuiltMeanwhile
}

// watchState re-checks every interval, so that a Redis emptied while no
// events arrive is rebuilt too, before the next read finds it empty.
func (s *Service) watchState(ctx context.Context, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, _, err := s.CatchUp(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("checking Redis against the streams", "err", err)
			}
		}
	}
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
