package ledger

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/cdr"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
)

// ExportBatch is how many CDRs one call of an export's fn carries.
const ExportBatch = 512

// Domains answers a domain's reseller of record (catalog.ErrNotFound for
// one never provisioned).
type Domains interface {
	GetDomain(ctx context.Context, domain string) (catalog.Domain, error)
}

// authorize checks that p may read q's domain and narrows q to what p may
// see: a user token sees its own calls only. Anything outside p's scope
// is not found, never forbidden, so existence does not leak.
func (l *Ledger) authorize(ctx context.Context, p auth.Principal, q *cdrv1.Query) (*cdrv1.Query, error) {
	if err := cdr.ValidateQuery(q, ""); err != nil {
		return nil, err
	}
	if l.domains == nil {
		return nil, fmt.Errorf("CDR ledger: %w: no domain registry", apierr.ErrUnavailable)
	}
	d, err := l.domains.GetDomain(ctx, q.GetDomain())
	switch {
	case errors.Is(err, catalog.ErrNotFound):
		return nil, fmt.Errorf("domain %s: %w", q.GetDomain(), apierr.ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("domain %s: %w: %v", q.GetDomain(), apierr.ErrUnavailable, err)
	}
	switch {
	case p.Level == auth.LevelUser:
		if !p.Covers(d.Reseller, d.Domain, p.User) || (q.GetUser() != "" && q.GetUser() != p.User) {
			return nil, fmt.Errorf("domain %s: %w", q.GetDomain(), apierr.ErrNotFound)
		}
		q = cloneQuery(q)
		q.User = p.User
	case !p.CoversDomain(d.Domain, d.Reseller):
		return nil, fmt.Errorf("domain %s: %w", q.GetDomain(), apierr.ErrNotFound)
	}
	return q, nil
}

// Export streams the CDRs q selects (see cdr.Ledger).
func (l *Ledger) Export(ctx context.Context, p auth.Principal, q *cdrv1.Query, fn func([]*cdrv1.Cdr) error) error {
	q, err := l.authorize(ctx, p, q)
	if err != nil {
		return err
	}
	_, err = l.scan(ctx, q, func(int) {}, fn)
	return err
}

// scan reads q's partitions in order and calls fn with batches. progress
// is told how many partitions were read. It answers the rows sent.
func (l *Ledger) scan(ctx context.Context, q *cdrv1.Query, progress func(done int), fn func([]*cdrv1.Cdr) error) (int64, error) {
	from, to := q.GetFrom().AsTime(), q.GetTo().AsTime()
	days, err := l.idx.daysBetween(ctx, q.GetDomain(), cdr.DayNumber(from), cdr.DayNumber(to.Add(-1))+1)
	if err != nil {
		return 0, err
	}
	if q.GetNewestFirst() {
		slices.Reverse(days)
	}
	out := &batcher{fn: fn, buf: make([]*cdrv1.Cdr, 0, ExportBatch)}
	for i, day := range days {
		if err := l.scanPartition(ctx, q, day, out); err != nil {
			return out.rows, err
		}
		progress(i + 1)
	}
	if err := out.flush(); err != nil {
		return out.rows, err
	}
	l.m.exported.Add(float64(out.rows))
	return out.rows, nil
}

type batcher struct {
	fn   func([]*cdrv1.Cdr) error
	buf  []*cdrv1.Cdr
	rows int64
}

func (b *batcher) add(c *cdrv1.Cdr) error {
	b.buf = append(b.buf, c)
	if len(b.buf) >= ExportBatch {
		return b.flush()
	}
	return nil
}

func (b *batcher) flush() error {
	if len(b.buf) == 0 {
		return nil
	}
	b.rows += int64(len(b.buf))
	err := b.fn(b.buf)
	// fn may keep the slice (a gRPC send has marshalled it by now, a
	// caller collecting rows keeps it): a new one each time.
	b.buf = make([]*cdrv1.Cdr, 0, ExportBatch)
	return err
}

// scanPartition merges one partition's segments in order, opening a
// segment only once the merge reaches its first CDR, so segments that
// follow one another in time (the usual case) are read one at a time.
// Copies of one CDR (a segment rewritten after a lost ack) meet in the
// merge and are sent once.
func (l *Ledger) scanPartition(ctx context.Context, q *cdrv1.Query, day string, out *batcher) error {
	segs, err := l.idx.segments(ctx, q.GetDomain(), day)
	if err != nil {
		return err
	}
	return l.scanSegments(ctx, q, day, segs, out)
}

// scanSegments merges the given segments of a partition.
func (l *Ledger) scanSegments(ctx context.Context, q *cdrv1.Query, day string, segs []SegmentMeta, out *batcher) error {
	from, to := q.GetFrom().AsTime().UnixNano(), q.GetTo().AsTime().UnixNano()
	desc := q.GetNewestFirst()
	segs = slices.DeleteFunc(slices.Clone(segs), func(s SegmentMeta) bool { return s.MaxStart < from || s.MinStart >= to })
	// The order segments join the merge: by where they start in the
	// direction of reading.
	slices.SortFunc(segs, func(a, b SegmentMeta) int {
		if desc {
			return cmp.Compare(b.MaxStart, a.MaxStart)
		}
		return cmp.Compare(a.MinStart, b.MinStart)
	})
	h := &mergeHeap{desc: desc}
	var last *cdrv1.Cdr
	next := 0
	for {
		// Join every segment that may hold a CDR before the heap's top.
		for next < len(segs) && (h.Len() == 0 || joins(segs[next], h.items[0].cur, desc)) {
			it, err := l.openSegment(ctx, q.GetDomain(), day, segs[next].Name, from, to, desc)
			next++
			if err != nil {
				return err
			}
			c, err := it.next(ctx)
			if err != nil {
				return err
			}
			if c != nil {
				it.cur = c
				heap.Push(h, it)
			}
		}
		if h.Len() == 0 {
			return nil
		}
		top := h.items[0]
		c := top.cur
		n, err := top.next(ctx)
		if err != nil {
			return err
		}
		if n == nil {
			heap.Pop(h)
		} else {
			top.cur = n
			heap.Fix(h, 0)
		}
		if last != nil && cdr.Less(last, c) == 0 {
			continue // another copy of the CDR just sent
		}
		last = c
		if cdr.Matches(c, q) {
			if err := out.add(c); err != nil {
				return err
			}
		}
	}
}

// joins reports whether segment s may hold a CDR that comes no later than
// top in the reading order.
func joins(s SegmentMeta, top *cdrv1.Cdr, desc bool) bool {
	at := top.GetStartedAt().AsTime().UnixNano()
	if desc {
		return s.MaxStart >= at
	}
	return s.MinStart <= at
}

type mergeHeap struct {
	items []*segIter
	desc  bool
}

func (h *mergeHeap) Len() int { return len(h.items) }
func (h *mergeHeap) Less(i, j int) bool {
	c := cdr.Less(h.items[i].cur, h.items[j].cur)
	if h.desc {
		return c > 0
	}
	return c < 0
}
func (h *mergeHeap) Swap(i, j int) { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *mergeHeap) Push(x any)    { h.items = append(h.items, x.(*segIter)) }
func (h *mergeHeap) Pop() any {
	it := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return it
}

// segIter reads one segment's CDRs within [from, to) block by block, in
// either direction, holding one decoded block.
type segIter struct {
	l        *Ledger
	key      string
	bodyOff  int64
	blocks   []cdr.BlockInfo
	from, to int64
	desc     bool
	block    []*cdrv1.Cdr
	pos      int
	cur      *cdrv1.Cdr
}

// openSegment reads a segment's header and picks the blocks that overlap
// the range.
func (l *Ledger) openSegment(ctx context.Context, domain, day, name string, from, to int64, desc bool) (*segIter, error) {
	key := SegmentKey(domain, day, name)
	h, off, err := l.readHeader(ctx, key)
	if err != nil {
		return nil, err
	}
	blocks := slices.DeleteFunc(slices.Clone(h.Blocks), func(b cdr.BlockInfo) bool { return b.MaxStart < from || b.MinStart >= to })
	if desc {
		slices.Reverse(blocks)
	}
	return &segIter{l: l, key: key, bodyOff: off, blocks: blocks, from: from, to: to, desc: desc}, nil
}

// readHeader reads the header of the segment at key.
func (l *Ledger) readHeader(ctx context.Context, key string) (cdr.Header, int64, error) {
	want := int64(cdr.HeaderProbe)
	for range 3 {
		buf, err := l.readRange(ctx, key, 0, want)
		if err != nil {
			return cdr.Header{}, 0, err
		}
		h, off, need, err := cdr.ParseHeader(buf)
		if err != nil {
			return cdr.Header{}, 0, fmt.Errorf("segment %s: %w", key, err)
		}
		if need == 0 {
			return h, off, nil
		}
		if int64(len(buf)) < want {
			return cdr.Header{}, 0, fmt.Errorf("segment %s: %w: truncated header", key, cdr.ErrNotSegment)
		}
		want = need
	}
	return cdr.Header{}, 0, fmt.Errorf("segment %s: %w: header keeps growing", key, cdr.ErrNotSegment)
}

func (l *Ledger) readRange(ctx context.Context, key string, off, n int64) ([]byte, error) {
	rc, err := l.store.Open(ctx, key, off, n)
	if err != nil {
		return nil, fmt.Errorf("read segment %s: %w", key, err)
	}
	defer rc.Close()
	buf, err := io.ReadAll(io.LimitReader(rc, n))
	if err != nil {
		return nil, fmt.Errorf("read segment %s: %w", key, err)
	}
	return buf, nil
}

// next answers the next CDR in range, or nil at the end.
func (it *segIter) next(ctx context.Context) (*cdrv1.Cdr, error) {
	for {
		for it.pos < len(it.block) {
			c := it.block[it.pos]
			it.pos++
			if at := c.GetStartedAt().AsTime().UnixNano(); at >= it.from && at < it.to {
				return c, nil
			}
		}
		if len(it.blocks) == 0 {
			it.block = nil
			return nil, nil
		}
		b := it.blocks[0]
		it.blocks = it.blocks[1:]
		frame, err := it.l.readRange(ctx, it.key, it.bodyOff+b.Offset, b.Length)
		if err != nil {
			return nil, err
		}
		it.block, err = cdr.DecodeBlock(frame, b, it.block[:0])
		if err != nil {
			return nil, fmt.Errorf("segment %s: %w", it.key, err)
		}
		if it.desc {
			slices.Reverse(it.block)
		}
		it.pos = 0
	}
}

func cloneQuery(q *cdrv1.Query) *cdrv1.Query {
	return &cdrv1.Query{Domain: q.GetDomain(), From: q.GetFrom(), To: q.GetTo(), User: q.GetUser(), Number: q.GetNumber(), CallId: q.GetCallId(), NewestFirst: q.GetNewestFirst()}
}
