package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// BatchHandler processes messages in stream order, a batch at a time, and
// returns one outcome per message with the meaning Handler's has: nil once
// its side effect is durable, a Poison error for input that can never
// succeed, any other error for a transient fault. Each message is
// acknowledged, retried or dead-lettered on its own outcome, so a batch
// handler must be as idempotent per message as a Handler.
type BatchHandler func(ctx context.Context, msgs []jetstream.Msg) []error

// batchLinger is how long a batch waits for more messages once it has
// one: long enough to fill a batch under load, short enough that a lone
// message is not held back.
const batchLinger = 2 * time.Millisecond

// NewBatchConsumer returns a consumer that hands up to size messages at
// a time to h, in the order the server delivered them.
func NewBatchConsumer(js jetstream.JetStream, names Names, spec ConsumerSpec, size int, h BatchHandler, log *slog.Logger, m *Metrics) *Consumer {
	c := NewConsumer(js, names, spec, nil, log, m)
	c.batch, c.batchSize = h, max(size, 1)
	return c
}

// runBatches reads messages from cons and handles them in batches until
// ctx ends, then drains: the messages already fetched are handled too.
func (c *Consumer) runBatches(ctx context.Context, cons jetstream.Consumer) error {
	base := context.WithoutCancel(ctx)
	it, err := cons.Messages(jetstream.PullMaxMessages(2*c.batchSize), jetstream.WithMessagesErrOnMissingHeartbeat(false))
	if err != nil {
		return fmt.Errorf("consume %s: %w", c.spec.Durable, err)
	}
	defer it.Stop()
	batch := make([]jetstream.Msg, 0, c.batchSize)
	draining := false
	for {
		m, err := c.next(ctx, it, &draining)
		if m == nil {
			return err
		}
		batch = append(batch[:0], m)
		for len(batch) < c.batchSize {
			m, err := it.Next(jetstream.NextMaxWait(batchLinger))
			if err != nil {
				break
			}
			batch = append(batch, m)
		}
		c.handleBatch(base, batch)
	}
}

// next returns the next message of it, switching to draining once ctx
// ends (the messages already fetched are still returned). It answers a nil
// message when the iterator is drained after a stop (with a nil error) or
// closed otherwise (with the error); transient errors are logged and
// waited through.
func (c *Consumer) next(ctx context.Context, it jetstream.MessagesContext, draining *bool) (jetstream.Msg, error) {
	for {
		var m jetstream.Msg
		var err error
		if *draining {
			m, err = it.Next()
		} else {
			m, err = it.Next(jetstream.NextContext(ctx))
		}
		switch {
		case err == nil:
			return m, nil
		case errors.Is(err, jetstream.ErrMsgIteratorClosed) && *draining:
			return nil, nil
		case errors.Is(err, jetstream.ErrMsgIteratorClosed):
			return nil, fmt.Errorf("consume %s: %w", c.spec.Durable, err)
		case ctx.Err() != nil && !*draining:
			*draining = true
			it.Drain()
		case !errors.Is(err, jetstream.ErrNoHeartbeat):
			c.log.Warn("consume", "err", err)
		}
	}
}

// handleBatch runs the batch handler over the messages that still have
// attempts left and settles each message on its own outcome.
func (c *Consumer) handleBatch(base context.Context, batch []jetstream.Msg) {
	stop := c.keepAllInProgress(batch)
	defer stop()
	live := make([]jetstream.Msg, 0, len(batch))
	attempts := make([]uint64, 0, len(batch))
	for _, m := range batch {
		n, seq := uint64(1), uint64(0)
		if md, err := m.Metadata(); err == nil {
			n, seq = md.NumDelivered, md.Sequence.Stream
		}
		if n > uint64(c.spec.MaxDeliver) {
			c.deadLetter(base, m, c.lostReason(seq), uint64(c.spec.MaxDeliver))
			continue
		}
		live = append(live, m)
		attempts = append(attempts, n)
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(base, c.spec.HandlerTimeout)
	errs := c.batch(ctx, live)
	timedOut := ctx.Err() != nil
	cancel()
	for i, m := range live {
		var err error
		if i < len(errs) {
			err = errs[i]
		} else {
			err = errors.New("the batch handler gave no outcome for this message")
		}
		if err != nil && timedOut && errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("handler timed out after %s: %w", c.spec.HandlerTimeout, err)
		}
		c.settle(base, m, err, attempts[i])
	}
}

// settle acknowledges, retries or dead-letters one message on its
// handler's outcome.
func (c *Consumer) settle(base context.Context, m jetstream.Msg, err error, attempts uint64) {
	if err == nil {
		if aerr := m.Ack(); aerr != nil {
			// The side effect is done and idempotent: a redelivery is harmless.
			c.log.Warn("ack failed; message will be redelivered", "err", aerr)
		}
		c.metrics.observe(c.spec.Durable, "ok")
		return
	}
	if IsPoison(err) || attempts >= uint64(c.spec.MaxDeliver) {
		c.deadLetter(base, m, err.Error(), attempts)
		return
	}
	delay := c.retryDelay(attempts)
	c.log.Warn("handler failed; retrying", "err", err, "attempt", attempts, "delay", delay)
	if nerr := m.NakWithDelay(delay); nerr != nil {
		c.log.Warn("nak failed; ack wait will redeliver", "err", nerr)
	}
	c.metrics.observe(c.spec.Durable, "retry")
}

// keepAllInProgress sends in-progress acks for every message of a batch
// every third of AckWait until the returned function is called.
func (c *Consumer) keepAllInProgress(batch []jetstream.Msg) func() {
	every := c.spec.AckWait / 3
	if every <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for _, m := range batch {
					if err := m.InProgress(); err != nil {
						c.log.Warn("in-progress ack failed", "err", err)
					}
				}
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}
