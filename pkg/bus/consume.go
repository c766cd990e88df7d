package bus

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers a dead letter carries.
const (
	HeaderDeadReason   = "Callvault-Dead-Reason"
	HeaderDeadStream   = "Callvault-Dead-Stream"
	HeaderDeadSubject  = "Callvault-Dead-Subject"
	HeaderDeadSequence = "Callvault-Dead-Sequence"
	HeaderDeadConsumer = "Callvault-Dead-Consumer"
	HeaderDeadAttempts = "Callvault-Dead-Attempts"
)

type poisonError struct{ err error }

func (p poisonError) Error() string { return p.err.Error() }
func (p poisonError) Unwrap() error { return p.err }

// Poison marks err as permanent: retrying the same message cannot succeed,
// so it goes to the dead-letter stream at once.
func Poison(err error) error { return poisonError{err: err} }

// IsPoison reports whether err was marked with Poison.
func IsPoison(err error) bool {
	var p poisonError
	return errors.As(err, &p)
}

// Handler processes one message. It returns nil once the side effect is
// durable, a Poison error for input that can never succeed, and any other
// error for a transient fault. It must be idempotent: a message can arrive
// again after a crash or a lost ack.
type Handler func(ctx context.Context, msg jetstream.Msg) error

// ConsumerSpec is a durable pull consumer. MaxDeliver and BackOff are part
// of every spec on purpose: the last attempt dead-letters the message.
type ConsumerSpec struct {
	Stream         string
	Durable        string
	FilterSubjects []string
	// MaxDeliver bounds handler attempts; the last one dead-letters the
	// message. The server itself never gives up on a message (its
	// MaxDeliver is unlimited), so a message whose dead letter could not
	// be written comes back and is dead-lettered then.
	MaxDeliver int
	// AckWait is how long a delivered message may stay unacknowledged
	// before the server redelivers it. It should be comfortably above
	// HandlerTimeout; while a handler runs the consumer also sends
	// in-progress acks every third of AckWait.
	AckWait time.Duration
	// BackOff spaces retries after a handler failure (NakWithDelay). It is
	// deliberately not the server's consumer BackOff, which would replace
	// AckWait for the first delivery with BackOff[0].
	BackOff []time.Duration
	// HandlerTimeout bounds one handler call.
	HandlerTimeout time.Duration
	// MaxAckPending bounds the messages in flight; 1 applies a stream
	// strictly in order. Zero means 1000.
	MaxAckPending int
}

// DeadLetterTimeout bounds the publish of one dead letter. It runs on a
// context of its own: the handler's may have expired already.
const DeadLetterTimeout = 10 * time.Second

// maxDeadLetterRetryDelay caps the wait before a message whose dead letter
// could not be written is tried again.
const maxDeadLetterRetryDelay = 30 * time.Second

// DefaultSpec fills the delivery settings callvault uses everywhere.
func DefaultSpec(stream, durable string, filters ...string) ConsumerSpec {
	return ConsumerSpec{
		Stream:         stream,
		Durable:        durable,
		FilterSubjects: filters,
		MaxDeliver:     8,
		AckWait:        45 * time.Second,
		BackOff:        []time.Duration{time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute},
		HandlerTimeout: 20 * time.Second,
	}
}

// Consumer runs a Handler over a durable pull consumer.
type Consumer struct {
	js      jetstream.JetStream
	names   Names
	spec    ConsumerSpec
	handler Handler
	log     *slog.Logger
	metrics *Metrics

	// reasons remembers why a message was to be dead-lettered when the
	// dead-letter publish failed, so the redelivery carries the handler's
	// reason rather than a generic one. Keyed by stream sequence.
	mu      sync.Mutex
	reasons map[uint64]string

	// batch, when set, handles up to batchSize messages at a time instead
	// of handler one at a time.
	batch     BatchHandler
	batchSize int

	// workers, when above 0, runs handler on that many messages at once.
	workers int
}

// NewConsumer returns a consumer; Run starts it.
func NewConsumer(js jetstream.JetStream, names Names, spec ConsumerSpec, h Handler, log *slog.Logger, m *Metrics) *Consumer {
	if spec.HandlerTimeout <= 0 {
		spec.HandlerTimeout = 20 * time.Second
	}
	if spec.AckWait <= 0 {
		spec.AckWait = spec.HandlerTimeout + DeadLetterTimeout
	}
	if spec.MaxDeliver < 1 {
		spec.MaxDeliver = 1
	}
	return &Consumer{js: js, names: names, spec: spec, handler: h, log: log.With("consumer", spec.Durable), metrics: m, reasons: map[uint64]string{}}
}

// Ensure creates or updates the durable consumer.
func (c *Consumer) Ensure(ctx context.Context) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{
		Durable:        c.spec.Durable,
		AckPolicy:      jetstream.AckExplicitPolicy,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		FilterSubjects: c.spec.FilterSubjects,
		// Unlimited on the server: the consumer counts attempts and
		// dead-letters; a server-side limit would drop a message whose
		// last attempt could not write its dead letter.
		MaxDeliver:    -1,
		AckWait:       c.spec.AckWait,
		MaxAckPending: cmp.Or(c.spec.MaxAckPending, 1000),
	}
	cons, err := c.js.CreateOrUpdateConsumer(ctx, c.spec.Stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", c.spec.Durable, c.spec.Stream, err)
	}
	return cons, nil
}

// Run consumes until ctx ends, then drains: messages already fetched are
// handled and acknowledged before Run returns.
func (c *Consumer) Run(ctx context.Context) error {
	cons, err := c.Ensure(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped before it started: a clean stop
		}
		return err
	}
	if c.batch != nil {
		return c.runBatches(ctx, cons)
	}
	if c.workers > 0 {
		return c.runConcurrent(ctx, cons)
	}
	// Handlers run on a context that outlives ctx so a drain can finish the
	// messages in hand; each call is still bounded by HandlerTimeout.
	base := context.WithoutCancel(ctx)
	cc, err := cons.Consume(func(m jetstream.Msg) { c.handle(base, m) },
		jetstream.PullMaxMessages(64),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if !errors.Is(err, jetstream.ErrNoHeartbeat) {
				c.log.Warn("consume", "err", err)
			}
		}))
	if err != nil {
		return fmt.Errorf("consume %s: %w", c.spec.Durable, err)
	}
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	return nil
}

func (c *Consumer) handle(base context.Context, m jetstream.Msg) {
	// Keep the message ours for as long as we work on it, dead letter
	// included: the server must not hand it to anyone else meanwhile.
	stop := c.keepInProgress(m)
	defer stop()

	attempts, seq := uint64(1), uint64(0)
	if md, merr := m.Metadata(); merr == nil {
		attempts, seq = md.NumDelivered, md.Sequence.Stream
	}
	if attempts > uint64(c.spec.MaxDeliver) {
		// Every attempt is used: the last one failed to write its dead
		// letter, or the process died or overran the ack wait during it.
		c.deadLetter(base, m, c.lostReason(seq), uint64(c.spec.MaxDeliver))
		return
	}

	ctx, cancel := context.WithTimeout(base, c.spec.HandlerTimeout)
	err := c.handler(ctx, m)
	if err != nil && ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("handler timed out after %s: %w", c.spec.HandlerTimeout, err)
	}
	cancel()
	c.settle(base, m, err, attempts)
}

// keepInProgress sends in-progress acks every third of AckWait until the
// returned function is called, so a slow handler is never redelivered
// while it still runs.
func (c *Consumer) keepInProgress(m jetstream.Msg) func() {
	return c.keepAllInProgress([]jetstream.Msg{m})
}

func (c *Consumer) lostReason(seq uint64) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.reasons[seq]; ok {
		return r
	}
	return fmt.Sprintf("no outcome after %d attempts: the last one did not finish (crash or ack wait exceeded) or its dead letter failed", c.spec.MaxDeliver)
}

func (c *Consumer) retryDelay(attempt uint64) time.Duration {
	if len(c.spec.BackOff) == 0 {
		return time.Second
	}
	i := int(attempt) - 1
	if i >= len(c.spec.BackOff) {
		i = len(c.spec.BackOff) - 1
	}
	if i < 0 {
		i = 0
	}
	return c.spec.BackOff[i]
}

// deadLetter copies m to the dead-letter stream with the reason, then
// terminates it. The publish gets a bounded context of its own, never the
// handler's, which may have expired. If the copy fails the message is
// nak'd and comes back (the server never stops redelivering), and the
// redelivery is dead-lettered: a message never vanishes.
func (c *Consumer) deadLetter(base context.Context, m jetstream.Msg, reason string, attempts uint64) {
	dl := &nats.Msg{Subject: c.names.DeadLetterSubject(c.spec.Durable), Data: m.Data(), Header: nats.Header{}}
	for k, v := range m.Headers() {
		if k != jetstream.MsgIDHeader {
			dl.Header[k] = v
		}
	}
	dl.Header.Set(HeaderDeadReason, reason)
	dl.Header.Set(HeaderDeadStream, c.spec.Stream)
	dl.Header.Set(HeaderDeadSubject, m.Subject())
	dl.Header.Set(HeaderDeadConsumer, c.spec.Durable)
	dl.Header.Set(HeaderDeadAttempts, strconv.FormatUint(attempts, 10))
	msgID := c.spec.Durable + ":" + m.Subject()
	var seq uint64
	if md, err := m.Metadata(); err == nil {
		seq = md.Sequence.Stream
		s := strconv.FormatUint(seq, 10)
		dl.Header.Set(HeaderDeadSequence, s)
		msgID = c.spec.Durable + ":" + s
	}
	ctx, cancel := context.WithTimeout(base, DeadLetterTimeout)
	defer cancel()
	if _, err := c.js.PublishMsg(ctx, dl, jetstream.WithMsgID(msgID)); err != nil {
		c.mu.Lock()
		c.reasons[seq] = reason
		c.mu.Unlock()
		delay := min(c.retryDelay(attempts), maxDeadLetterRetryDelay)
		c.log.Error("dead letter publish failed; the message will come back", "err", err, "reason", reason, "delay", delay)
		if nerr := m.NakWithDelay(delay); nerr != nil {
			c.log.Warn("nak failed; ack wait will redeliver", "err", nerr)
		}
		c.metrics.observe(c.spec.Durable, "retry")
		return
	}
	c.mu.Lock()
	delete(c.reasons, seq)
	c.mu.Unlock()
	if err := m.TermWithReason(truncate(reason, 200)); err != nil {
		// The dead letter is written; a redelivery writes it again under
		// the same Nats-Msg-Id, which the stream drops as a duplicate.
		c.log.Warn("term failed", "err", err)
	}
	c.log.Warn("message dead-lettered", "reason", reason, "subject", m.Subject(), "attempts", attempts)
	c.metrics.observe(c.spec.Durable, "dead_letter")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
