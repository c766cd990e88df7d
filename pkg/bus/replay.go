package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
)

// ErrReplayTimeout is returned when a replay has not reached its end
// within its bound: a stall that lasted too long, or a server that is gone.
var ErrReplayTimeout = errors.New("replay did not finish within its bound")

// ErrReplayCount is returned when a replay reached its end having read a
// different number of messages than the stream held when it began.
var ErrReplayCount = errors.New("replay read a different number of messages than the stream held")

// ReplayOption changes how Replay reads.
type ReplayOption func(*replayConfig)

type replayConfig struct {
	timeout time.Duration
	retry   time.Duration
}

// ReplayTimeout bounds the whole replay, handler time included. Without
// it the bound is DefaultReplayTimeout of the number of messages to read.
func ReplayTimeout(d time.Duration) ReplayOption {
	return func(c *replayConfig) { c.timeout = d }
}

// DefaultReplayTimeout is the bound of a replay of n messages: two
// minutes, plus a second for every 5,000 messages (a fifth of the slowest
// rebuild rate seen), so that a long stall fails a replay of any size
// while a large one is never cut short.
func DefaultReplayTimeout(n int) time.Duration {
	return 2*time.Minute + time.Duration(n/5000)*time.Second
}

// replayTarget is where a replay ends: the stream's last sequence when it
// began, and how many messages matching the filter were at or before it.
// When appends kept moving the stream while the counts were taken, the
// count is a lower bound (exact is false).
type replayTarget struct {
	last  uint64
	want  int
	exact bool
}

// target reads the stream's state. With a filter it counts the matching
// messages per subject, between two reads of the last sequence: when the
// two agree, nothing was appended in between and the count is exact.
func target(ctx context.Context, s jetstream.Stream, subjects []string) (replayTarget, error) {
	var t replayTarget
	for attempt := 0; attempt < 3; attempt++ {
		info, err := s.Info(ctx)
		if err != nil {
			return t, err
		}
		if len(subjects) == 0 {
			return replayTarget{last: info.State.LastSeq, want: int(info.State.Msgs), exact: true}, nil
		}
		counts := map[string]uint64{}
		for _, subj := range subjects {
			fi, err := s.Info(ctx, jetstream.WithSubjectFilter(subj))
			if err != nil {
				return t, err
			}
			for name, n := range fi.State.Subjects {
				counts[name] = n // overlapping filters name a subject once
			}
		}
		end, err := s.Info(ctx)
		if err != nil {
			return t, err
		}
		want := 0
		for _, n := range counts {
			want += int(n)
		}
		t = replayTarget{last: end.State.LastSeq, want: want, exact: end.State.LastSeq == info.State.LastSeq}
		if t.exact {
			return t, nil
		}
	}
	return t, nil
}

// Replay feeds every envelope of stream (optionally only some subjects),
// from the first message up to the last one present when Replay starts,
// to fn in order. Messages appended while it runs are left alone. Poison
// messages are skipped and counted: their dead letters were written when
// they first arrived. It returns how many envelopes fn accepted and how
// many were skipped.
//
// The end is known before the first read, so a slow or stalled server
// only makes Replay wait: a stall is waited through until the bound
// (ReplayTimeout) passes, which is ErrReplayTimeout. Having read up to
// the end, Replay checks that it read as many messages as the stream held
// when it began, or fails with ErrReplayCount.
func Replay(ctx context.Context, js jetstream.JetStream, stream string, subjects []string, fn func(context.Context, *eventv1.Envelope, uint64) error, opts ...ReplayOption) (int, int, error) {
	applied, skipped, err := replay(ctx, js, stream, subjects, fn, opts)
	if err != nil {
		return applied, skipped, fmt.Errorf("replay %s: %w", stream, err)
	}
	return applied, skipped, nil
}

func replay(ctx context.Context, js jetstream.JetStream, stream string, subjects []string, fn func(context.Context, *eventv1.Envelope, uint64) error, opts []ReplayOption) (int, int, error) {
	cfg := replayConfig{retry: 250 * time.Millisecond}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, 0, err
	}
	t, err := target(ctx, s, subjects)
	if err != nil {
		return 0, 0, err
	}
	if t.want == 0 {
		return 0, 0, nil
	}
	if cfg.timeout <= 0 {
		cfg.timeout = DefaultReplayTimeout(t.want)
	}
	bounded, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()

	r := reader{s: s, subjects: subjects}
	defer r.stop()
	applied, skipped := 0, 0
	for {
		msg, err := r.next(bounded)
		if err != nil {
			if ctx.Err() != nil {
				return applied, skipped, ctx.Err()
			}
			if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, nats.ErrConnectionClosed) {
				return applied, skipped, err // waiting will not bring it back
			}
			if bounded.Err() != nil {
				return applied, skipped, fmt.Errorf("%w (%s): read %d of %d messages up to seq %d: %w",
					ErrReplayTimeout, cfg.timeout, applied+skipped, t.want, t.last, err)
			}
			// A failed read is a stall or a reset that did not work out:
			// start again after the last message handled.
			r.stop()
			select {
			case <-bounded.Done():
			case <-time.After(cfg.retry):
			}
			continue
		}
		md, err := msg.Metadata()
		if err != nil {
			return applied, skipped, err
		}
		seq := md.Sequence.Stream
		if seq > t.last {
			break // appended after the start
		}
		r.after = seq
		env, err := DecodeEnvelope(msg.Data())
		if err != nil {
			skipped++
		} else if err := fn(ctx, env, seq); err != nil {
			if !IsPoison(err) {
				return applied, skipped, fmt.Errorf("seq %d: %w", seq, err)
			}
			skipped++
		} else {
			applied++
		}
		if seq == t.last || md.NumPending == 0 || (t.exact && applied+skipped >= t.want) {
			break
		}
	}
	if n := applied + skipped; n != t.want && (t.exact || n < t.want) {
		return applied, skipped, fmt.Errorf("%w: read %d, the stream held %d up to seq %d", ErrReplayCount, n, t.want, t.last)
	}
	return applied, skipped, nil
}

// reader is an ordered consumer that, once stopped, starts again after
// the last sequence handled.
type reader struct {
	s        jetstream.Stream
	subjects []string
	after    uint64
	it       jetstream.MessagesContext
}

func (r *reader) next(ctx context.Context) (jetstream.Msg, error) {
	if r.it == nil {
		// A consumer the server lost is recreated inside Next; a few
		// attempts, then Next fails and the replay decides: wait on
		// within its bound, or give up.
		cfg := jetstream.OrderedConsumerConfig{FilterSubjects: r.subjects, MaxResetAttempts: 2}
		if r.after > 0 {
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, r.after+1
		}
		cons, err := r.s.OrderedConsumer(ctx, cfg)
		if err != nil {
			return nil, err
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(replayPrefetch))
		if err != nil {
			return nil, err
		}
		r.it = it
	}
	// Next does not watch ctx while it recreates the consumer: stopping
	// the iterator when ctx ends cuts that short.
	it := r.it
	release := context.AfterFunc(ctx, it.Stop)
	defer release()
	return it.Next(jetstream.NextContext(ctx))
}

func (r *reader) stop() {
	if r.it != nil {
		r.it.Stop()
		r.it = nil
	}
}

// replayPrefetch is how many messages the consumer asks for at a time.
const replayPrefetch = 512
