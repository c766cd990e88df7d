package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
)

// Replay feeds every envelope of stream (optionally only some subjects),
// from the first message up to the last one present when Replay starts,
// to fn in order. Poison messages are skipped and counted: their dead
// letters were written when they first arrived. It returns how many
// envelopes fn accepted.
func Replay(ctx context.Context, js jetstream.JetStream, stream string, subjects []string, fn func(context.Context, *eventv1.Envelope, uint64) error) (int, int, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, 0, fmt.Errorf("replay %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("replay %s: %w", stream, err)
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		return 0, 0, nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: subjects})
	if err != nil {
		return 0, 0, fmt.Errorf("replay %s: %w", stream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(512))
	if err != nil {
		return 0, 0, fmt.Errorf("replay %s: %w", stream, err)
	}
	defer it.Stop()
	applied, skipped := 0, 0
	for {
		// Filtered subjects may end before the stream's last sequence;
		// an idle gap means there is nothing more to read.
		nextCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		msg, err := it.Next(jetstream.NextContext(nextCtx))
		cancel()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return applied, skipped, nil
		}
		if err != nil {
			return applied, skipped, fmt.Errorf("replay %s: %w", stream, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return applied, skipped, fmt.Errorf("replay %s: %w", stream, err)
		}
		env, err := DecodeEnvelope(msg.Data())
		if err != nil {
			skipped++
		} else if err := fn(ctx, env, md.Sequence.Stream); err != nil {
			if !IsPoison(err) {
				return applied, skipped, fmt.Errorf("replay %s seq %d: %w", stream, md.Sequence.Stream, err)
			}
			skipped++
		} else {
			applied++
		}
		if md.Sequence.Stream >= last {
			return applied, skipped, nil
		}
	}
}
