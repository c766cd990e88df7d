package bus

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
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
	// MaxDeliver bounds attempts; the last one goes to the dead letters.
	MaxDeliver int
	// AckWait is how long a delivered message may stay unacknowledged.
	AckWait time.Duration
	// BackOff spaces redeliveries after a handler failure or ack timeout.
	BackOff []time.Duration
	// HandlerTimeout bounds one handler call.
	HandlerTimeout time.Duration
	// MaxAckPending bounds the messages in flight; 1 applies a stream
	// strictly in order. Zero means 1000.
	MaxAckPending int
}

// DefaultSpec fills the delivery settings callvault uses everywhere.
func DefaultSpec(stream, durable string, filters ...string) ConsumerSpec {
	return ConsumerSpec{
		Stream:         stream,
		Durable:        durable,
		FilterSubjects: filters,
		MaxDeliver:     8,
		AckWait:        30 * time.Second,
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
}

// NewConsumer returns a consumer; Run starts it.
func NewConsumer(js jetstream.JetStream, names Names, spec ConsumerSpec, h Handler, log *slog.Logger, m *Metrics) *Consumer {
	return &Consumer{js: js, names: names, spec: spec, handler: h, log: log.With("consumer", spec.Durable), metrics: m}
}

// Ensure creates or updates the durable consumer.
func (c *Consumer) Ensure(ctx context.Context) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{
		Durable:        c.spec.Durable,
		AckPolicy:      jetstream.AckExplicitPolicy,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		FilterSubjects: c.spec.FilterSubjects,
		MaxDeliver:     c.spec.MaxDeliver,
		AckWait:        c.spec.AckWait,
		BackOff:        c.spec.BackOff,
		MaxAckPending:  cmp.Or(c.spec.MaxAckPending, 1000),
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
		return err
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
	ctx, cancel := context.WithTimeout(base, c.spec.HandlerTimeout)
	defer cancel()
	err := c.handler(ctx, m)
	if err == nil {
		if aerr := m.Ack(); aerr != nil {
			// The side effect is done and idempotent: a redelivery is harmless.
			c.log.Warn("ack failed; message will be redelivered", "err", aerr)
		}
		c.metrics.observe(c.spec.Durable, "ok")
		return
	}
	attempts := uint64(1)
	if md, merr := m.Metadata(); merr == nil {
		attempts = md.NumDelivered
	}
	if IsPoison(err) || attempts >= uint64(c.spec.MaxDeliver) {
		c.deadLetter(ctx, m, err, attempts)
		return
	}
	delay := c.retryDelay(attempts)
	c.log.Warn("handler failed; retrying", "err", err, "attempt", attempts, "delay", delay)
	if nerr := m.NakWithDelay(delay); nerr != nil {
		c.log.Warn("nak failed; ack wait will redeliver", "err", nerr)
	}
	c.metrics.observe(c.spec.Durable, "retry")
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
// terminates it. If the copy fails the message is retried instead: a
// message never vanishes.
func (c *Consumer) deadLetter(ctx context.Context, m jetstream.Msg, cause error, attempts uint64) {
	reason := cause.Error()
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
	if md, err := m.Metadata(); err == nil {
		seq := strconv.FormatUint(md.Sequence.Stream, 10)
		dl.Header.Set(HeaderDeadSequence, seq)
		msgID = c.spec.Durable + ":" + seq
	}
	if _, err := c.js.PublishMsg(ctx, dl, jetstream.WithMsgID(msgID)); err != nil {
		c.log.Error("dead letter publish failed; retrying the message", "err", err, "reason", reason)
		if nerr := m.NakWithDelay(c.retryDelay(uint64(len(c.spec.BackOff)))); nerr != nil {
			c.log.Warn("nak failed", "err", nerr)
		}
		c.metrics.observe(c.spec.Durable, "retry")
		return
	}
	if err := m.TermWithReason(truncate(reason, 200)); err != nil {
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
