package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/cdr"
	"github.com/callvault/callvault/pkg/platform"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
)

// jsStoreFailed is the JetStream error code of a message the stream
// refused to store: for the CDR stream (DiscardNew) it is full.
const jsStoreFailed jetstream.ErrorCode = 10077

// errCdrStreamFull means the CDR stream refused new CDRs: the segment
// writer is behind. Nothing is retried; the client is answered 503.
var errCdrStreamFull = errors.New("the CDR stream is full")

// newCdrJetStream returns the JetStream context CDRs are published with.
// It is a context of its own because the async publish settings belong to
// a context, and the shared one waits for a PubAck without end: a reply
// the server never sends would hold its slot until the connection drops.
// Here an attempt's PubAck wait is the publish timeout, and the context
// holds as many publishes as the window lets through.
func newCdrJetStream(d *platform.Deps, p Publish, window int) jetstream.JetStream {
	if d.NC == nil {
		return d.JS
	}
	js, err := jetstream.New(d.NC, jetstream.WithPublishAsyncMaxPending(window), jetstream.WithPublishAsyncTimeout(p.Timeout))
	if err != nil {
		// Only invalid options fail, and both are checked by New; the
		// attempt timer below still bounds every wait.
		return d.JS
	}
	return js
}

// cdrMsg is one CDR's event: its Nats-Msg-Id and marshalled envelope. The
// same bytes go out on every attempt.
type cdrMsg struct {
	id   string
	data []byte
	// index is the CDR's place in its batch; cdr what was sent.
	index int
	cdr   *cdrv1.Cdr
}

type cdrOutcome uint8

const (
	outcomeUnknown cdrOutcome = iota
	outcomeStored
	outcomeDuplicate
	outcomeRefused
	// outcomeConflict: the id is stored with other content.
	outcomeConflict
)

// publishTally counts the CDRs of a batch the stream confirmed.
type publishTally struct {
	stored, duplicates int
	// conflicts are the batch indexes of CDRs whose id is stored with
	// other content.
	conflicts []int
}

// publishCdrBatch publishes msgs asynchronously, never more than the
// window awaiting a PubAck (across every request), and returns once each
// publish has its outcome. A CDR whose outcome is still unknown after its
// attempts, or that a full stream refused, fails the batch: no new
// publish starts after it, the ones under way finish, and the error says
// why. As for a recording, publishes under way are not abandoned because
// the client went away (they end within the budget), but none is started
// for a client that is gone.
func (s *Service) publishCdrBatch(ctx context.Context, msgs []cdrMsg) (publishTally, error) {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.publish.Budget)
	defer cancel()
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		tally  publishTally
		failed error
		stop   atomic.Bool
	)
	fail := func(err error) {
		stop.Store(true)
		mu.Lock()
		defer mu.Unlock()
		if failed == nil {
			failed = err
		}
	}
	for _, m := range msgs {
		if stop.Load() {
			break
		}
		if err := s.takeCdrSlot(ctx, pctx); err != nil {
			fail(fmt.Errorf("publish CDRs: waiting for the window: %w", err))
			break
		}
		wg.Go(func() {
			defer func() { <-s.cdrSlots }()
			o, err := s.publishCdr(pctx, m)
			if err != nil {
				fail(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			switch o {
			case outcomeStored:
				tally.stored++
			case outcomeConflict:
				tally.conflicts = append(tally.conflicts, m.index)
			default:
				tally.duplicates++
			}
		})
	}
	wg.Wait()
	return tally, failed
}

func (s *Service) takeCdrSlot(ctx, pctx context.Context) error {
	select {
	case s.cdrSlots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-pctx.Done():
		return pctx.Err()
	}
}

// publishCdr publishes one CDR until the stream confirms it, with the same
// Nats-Msg-Id every time, so an attempt the server stored but did not
// acknowledge is not stored again: the retry is answered as a duplicate.
// Such a duplicate is this request's own CDR when the stored bytes are the
// ones just sent (the envelope carries the request's acceptance time); it
// is then counted as stored. When the stored message cannot be read (the
// segment writer may already have taken it off the work queue) it is
// counted as a duplicate: stored either way. An error means the outcome
// is unknown, or the stream refused the CDR.
func (s *Service) publishCdr(ctx context.Context, m cdrMsg) (cdrOutcome, error) {
	wait := s.publish.Backoff
	var last error
	for attempt := range s.publish.Attempts {
		if attempt > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return outcomeUnknown, fmt.Errorf("publish %s: %w (last attempt: %w)", m.id, ctx.Err(), last)
			case <-t.C:
			}
			wait *= 2
		}
		ack, err := s.publishCdrOnce(ctx, m)
		if err == nil {
			if !ack.Duplicate {
				return outcomeStored, nil
			}
			return s.duplicateOutcome(ctx, ack.Sequence, m, attempt > 0), nil
		}
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jsStoreFailed {
			return outcomeRefused, fmt.Errorf("publish %s: %w: %w", m.id, errCdrStreamFull, err)
		}
		last = err
		s.metrics.publishRetries.Inc()
	}
	return outcomeUnknown, fmt.Errorf("publish %s: %d attempts: %w", m.id, s.publish.Attempts, last)
}

// publishCdrOnce is one attempt, bounded by the publish timeout.
func (s *Service) publishCdrOnce(ctx context.Context, m cdrMsg) (*jetstream.PubAck, error) {
	// A message of its own per attempt: the client keeps the last one's
	// until its PubAck or timeout, and publishing sets its headers.
	msg := &nats.Msg{Subject: s.names.CdrSubject(), Data: m.data, Header: nats.Header{}}
	msg.Header.Set("Content-Type", bus.EnvelopeContentType)
	fut, err := s.cdrJS.PublishMsgAsync(msg, jetstream.WithMsgID(m.id), jetstream.WithStallWait(s.publish.Timeout))
	if err != nil {
		return nil, err
	}
	// The context's PubAck timeout normally ends a lost attempt; this
	// timer bounds it on a context without one.
	t := time.NewTimer(s.publish.Timeout)
	defer t.Stop()
	select {
	case ack := <-fut.Ok():
		return ack, nil
	case err := <-fut.Err():
		return nil, err
	case <-t.C:
		return nil, jetstream.ErrAsyncPublishTimeout
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// duplicateOutcome judges a duplicate PubAck by the message the stream
// holds: the very bytes sent after a failed attempt are this request's own
// CDR (stored); the same CDR accepted earlier is a duplicate; other
// content under the id is a conflict. A message the segment writer has
// already taken off the work queue cannot be compared and counts as a
// duplicate.
func (s *Service) duplicateOutcome(ctx context.Context, seq uint64, m cdrMsg, retried bool) cdrOutcome {
	ctx, cancel := context.WithTimeout(ctx, s.publish.Timeout)
	defer cancel()
	stream, err := s.js.Stream(ctx, s.names.CdrStream())
	if err != nil {
		return outcomeDuplicate
	}
	msg, err := stream.GetMsg(ctx, seq)
	if err != nil {
		return outcomeDuplicate
	}
	if bytes.Equal(msg.Data, m.data) {
		if retried {
			return outcomeStored
		}
		return outcomeDuplicate
	}
	env, err := bus.DecodeEnvelope(msg.Data)
	if err != nil {
		return outcomeDuplicate
	}
	stored, err := cdr.FromEvent(env)
	if err != nil {
		return outcomeDuplicate
	}
	if !cdr.SameContent(stored, m.cdr) {
		return outcomeConflict
	}
	return outcomeDuplicate
}
