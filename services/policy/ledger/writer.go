package ledger

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/cdr"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
)

// SegmentContentType is the media type segment objects are stored with.
const SegmentContentType = "application/vnd.callvault.cdr-segment"

// partition buffers one (domain, day)'s CDRs until they are flushed.
type partition struct {
	domain, day string
	// by stream sequence: a redelivery of a buffered message replaces its
	// handle instead of adding a second copy.
	msgs    map[uint64]jetstream.Msg
	cdrs    map[uint64]*cdrv1.Cdr
	first   time.Time
	retryAt time.Time
	backoff time.Duration
	touched time.Time // last in-progress ack
}

type writer struct {
	l     *Ledger
	parts map[string]*partition
	n     int
}

func (l *Ledger) writerSpec() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       WriterConsumer,
		Description:   "writes CDRs into day-partition segments; acks once a segment is durable and indexed",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       l.set.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: l.set.MaxBuffered * 2,
		FilterSubject: l.names.CdrSubjects(),
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

func (l *Ledger) runWriter(ctx context.Context) error {
	var cons jetstream.Consumer
	for {
		var err error
		cons, err = l.js.CreateOrUpdateConsumer(ctx, l.names.CdrStream(), l.writerSpec())
		if err == nil {
			break
		}
		l.log.Warn("CDR writer: consumer not ready, retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(min(4096, l.set.MaxBuffered)))
	if err != nil {
		return fmt.Errorf("CDR writer: %w", err)
	}
	in := make(chan jetstream.Msg, 256)
	go func() {
		defer close(in)
		for {
			m, err := it.Next()
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				l.log.Warn("CDR writer: fetch", "err", err)
				continue
			}
			select {
			case in <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	w := &writer{l: l, parts: map[string]*partition{}}
	tick := time.NewTicker(max(l.set.FlushAge/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			it.Stop()
			// What can be flushed now is; the rest is redelivered.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			w.flushDue(fctx, true)
			cancel()
			return nil
		case m, ok := <-in:
			if !ok {
				it.Stop()
				return nil
			}
			w.take(ctx, m)
			for w.n >= l.set.MaxBuffered && ctx.Err() == nil {
				if !w.flushLargest(ctx) {
					break
				}
			}
		case <-tick.C:
			w.flushDue(ctx, false)
		}
	}
}

func (w *writer) take(ctx context.Context, m jetstream.Msg) {
	l := w.l
	md, err := m.Metadata()
	if err != nil {
		l.log.Error("CDR writer: message without metadata", "err", err)
		_ = m.Term()
		return
	}
	seq := md.Sequence.Stream
	env, err := bus.DecodeEnvelope(m.Data())
	var c *cdrv1.Cdr
	if err == nil {
		c, err = cdr.FromEvent(env)
	}
	if err != nil {
		w.poison(ctx, m, seq, err)
		return
	}
	day := cdr.Day(c.GetStartedAt().AsTime())
	key := c.GetDomain() + "/" + day
	p := w.parts[key]
	if p == nil {
		p = &partition{domain: c.GetDomain(), day: day, msgs: map[uint64]jetstream.Msg{}, cdrs: map[uint64]*cdrv1.Cdr{}, first: l.now()}
		w.parts[key] = p
	}
	if _, dup := p.msgs[seq]; !dup {
		w.n++
	}
	p.msgs[seq], p.cdrs[seq] = m, c
	l.m.buffered.Set(float64(w.n))
}

func (w *writer) poison(ctx context.Context, m jetstream.Msg, seq uint64, why error) {
	l := w.l
	reason := "not a valid CDR event: " + why.Error()
	err := bus.PublishDeadLetter(ctx, l.js, l.names, WriterConsumer, l.names.CdrStream(), m.Subject(), seq, m.Data(), reason,
		"dlq:"+WriterConsumer+":"+strconv.FormatUint(seq, 10))
	if err != nil {
		// Not terminated: it comes back and is tried again.
		l.log.Error("CDR writer: dead letter failed, message kept", "seq", seq, "err", err)
		_ = m.NakWithDelay(5 * time.Second)
		return
	}
	l.m.poison.Inc()
	l.log.Warn("CDR writer: message sent to the dead-letter stream", "seq", seq, "reason", reason)
	_ = m.TermWithReason(reason)
}

// flushDue flushes partitions that are full or old enough (all, when all
// is set), and keeps the messages of failing ones from being redelivered.
func (w *writer) flushDue(ctx context.Context, all bool) {
	now := w.l.now()
	for key, p := range w.parts {
		if ctx.Err() != nil {
			return
		}
		due := all || len(p.msgs) >= w.l.set.SegmentCDRs || now.Sub(p.first) >= w.l.set.FlushAge
		if !due {
			continue
		}
		if !all && now.Before(p.retryAt) {
			w.keepAlive(p, now)
			continue
		}
		w.flush(ctx, key, p)
	}
}

// keepAlive tells the server the messages of a partition waiting to be
// retried are still being worked on.
func (w *writer) keepAlive(p *partition, now time.Time) {
	if now.Sub(p.touched) < w.l.writerSpec().AckWait/3 {
		return
	}
	p.touched = now
	for _, m := range p.msgs {
		_ = m.InProgress()
	}
}

// flushLargest flushes the partition holding the most CDRs; it reports
// whether it freed any.
func (w *writer) flushLargest(ctx context.Context) bool {
	var key string
	var best *partition
	for k, p := range w.parts {
		if best == nil || len(p.msgs) > len(best.msgs) {
			key, best = k, p
		}
	}
	if best == nil {
		return false
	}
	if w.l.now().Before(best.retryAt) {
		// Failing: wait for its retry instead of spinning.
		select {
		case <-ctx.Done():
		case <-time.After(time.Until(best.retryAt)):
		}
	}
	return w.flush(ctx, key, best)
}

// flush writes p as one segment (in parts of SegmentCDRs when it holds
// more), indexes it, then acks its messages. It reports success.
func (w *writer) flush(ctx context.Context, key string, p *partition) bool {
	l := w.l
	seqs := make([]uint64, 0, len(p.msgs))
	for s := range p.msgs {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	for len(seqs) > 0 {
		n := min(len(seqs), l.set.SegmentCDRs)
		chunk := seqs[:n]
		if err := l.writeSegment(ctx, p, chunk); err != nil {
			l.m.failures.Inc()
			p.backoff = min(max(2*p.backoff, 500*time.Millisecond), 30*time.Second)
			p.retryAt = l.now().Add(p.backoff)
			l.log.Warn("CDR writer: flush failed, will retry", "partition", key, "cdrs", n, "retry_in", p.backoff, "err", err)
			return false
		}
		for _, s := range chunk {
			_ = p.msgs[s].Ack()
			delete(p.msgs, s)
			delete(p.cdrs, s)
		}
		w.n -= n
		seqs = seqs[n:]
	}
	delete(w.parts, key)
	l.m.buffered.Set(float64(w.n))
	return true
}

// segmentName names the segment of exactly these stream messages, so a
// rewrite of the same messages (a crash or a lost ack after the put)
// replaces the object and its index entry instead of adding a copy.
// The CDRs' ids go in with the sequences: a stream created again numbers
// from 1, and other CDRs under the same numbers must not take the name.
func segmentName(prefix string, seqs []uint64, ids []string) string {
	h := sha256.New()
	var b [8]byte
	for i, s := range seqs {
		binary.BigEndian.PutUint64(b[:], s)
		h.Write(b[:])
		h.Write([]byte(ids[i]))
		h.Write([]byte{0})
	}
	return prefix + hex.EncodeToString(h.Sum(nil)[:16])
}

// writerName names the writer's segment of p's messages seqs.
func writerName(p *partition, seqs []uint64) string {
	ids := make([]string, len(seqs))
	for i, s := range seqs {
		ids[i] = cdr.EventID(p.domain, p.cdrs[s].GetId())
	}
	return segmentName("w-", seqs, ids)
}

func (l *Ledger) writeSegment(ctx context.Context, p *partition, seqs []uint64) error {
	cdrs := make([]*cdrv1.Cdr, 0, len(seqs))
	for _, s := range seqs {
		cdrs = append(cdrs, p.cdrs[s])
	}
	name := writerName(p, seqs)
	obj, h, err := cdr.Encode(p.domain, p.day, cdrs, l.set.BlockCDRs, l.now())
	if err != nil {
		return err
	}
	key := SegmentKey(p.domain, p.day, name)
	if err := l.idx.markPending(ctx, p.domain, p.day, name, l.now()); err != nil {
		return err
	}
	if _, err := l.store.Put(ctx, key, bytes.NewReader(obj), SegmentContentType); err != nil {
		return fmt.Errorf("store segment %s: %w", key, err)
	}
	if l.hooks.afterPut != nil {
		l.hooks.afterPut(key)
	}
	meta := SegmentMeta{Name: name, Count: int64(h.Count), Bytes: int64(len(obj)), MinStart: h.MinStart, MaxStart: h.MaxStart}
	if err := l.idx.record(ctx, p.domain, p.day, meta, l.now()); err != nil {
		return err
	}
	if l.hooks.afterIndex != nil {
		l.hooks.afterIndex(key)
	}
	l.m.written.Add(float64(h.Count))
	l.m.segments.WithLabelValues("writer").Inc()
	l.m.bytes.Add(float64(len(obj)))
	return nil
}

func hashHex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}
