package bus

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// NewConcurrentConsumer returns a consumer that runs h on up to workers
// messages at once and settles each on its own outcome as soon as it
// ends: a slow message holds one worker, never the others (a batch would
// wait for its slowest).
func NewConcurrentConsumer(js jetstream.JetStream, names Names, spec ConsumerSpec, workers int, h Handler, log *slog.Logger, m *Metrics) *Consumer {
	c := NewConsumer(js, names, spec, h, log, m)
	c.workers = max(workers, 1)
	return c
}

// runConcurrent reads messages from cons while a worker is free and
// handles each on its own goroutine until ctx ends, then drains: the
// messages already fetched are handled before it returns.
func (c *Consumer) runConcurrent(ctx context.Context, cons jetstream.Consumer) error {
	base := context.WithoutCancel(ctx)
	it, err := cons.Messages(jetstream.PullMaxMessages(c.workers), jetstream.WithMessagesErrOnMissingHeartbeat(false))
	if err != nil {
		return fmt.Errorf("consume %s: %w", c.spec.Durable, err)
	}
	defer it.Stop()
	slots := make(chan struct{}, c.workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	draining := false
	for {
		// A message is fetched only once a worker is free for it.
		if draining {
			slots <- struct{}{}
		} else {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				draining = true
				it.Drain()
				continue
			}
		}
		m, err := c.next(ctx, it, &draining)
		if m == nil {
			<-slots
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			c.handle(base, m)
		}()
	}
}
