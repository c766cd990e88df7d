package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/cdr"
	"github.com/callvault/callvault/pkg/cds"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
)

// orphanAge is how old a segment object outside the index must be before
// compaction removes it: far longer than a writer takes from storing a
// segment to indexing it.
const orphanAge = 10 * time.Minute

// undirtyScript clears a partition's compaction mark unless it was
// written again since score. KEYS: dirty. ARGV: member, score.
var undirtyScript = redis.NewScript(`
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) <= tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
`)

func (l *Ledger) compactEvery(ctx context.Context) error {
	t := time.NewTicker(l.set.CompactEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := l.CompactDue(ctx); err != nil && ctx.Err() == nil {
				l.log.Warn("CDR compaction", "err", err)
			}
		}
	}
}

// CompactDue compacts every closed partition written to since its last
// compaction and quiet for DayGrace. It answers how many it compacted.
func (l *Ledger) CompactDue(ctx context.Context) (int, error) {
	now := l.now()
	marks, err := l.rdb.ZRangeByScoreWithScores(ctx, l.k.dirty(), &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(now.Add(-l.set.DayGrace).UnixMilli(), 10),
	}).Result()
	if err != nil {
		return 0, fmt.Errorf("read compaction marks: %w", err)
	}
	done := 0
	for _, z := range marks {
		member, _ := z.Member.(string)
		domain, day, ok := strings.Cut(member, "/")
		start, derr := cdr.ParseDay(day)
		if !ok || derr != nil {
			l.rdb.ZRem(ctx, l.k.dirty(), member)
			continue
		}
		if now.Before(start.Add(24*time.Hour + l.set.DayGrace)) {
			continue // the day is still open for CDRs
		}
		lease := l.k.compactLease(member)
		got, err := l.rdb.SetNX(ctx, lease, "1", 10*time.Minute).Result()
		if err != nil {
			return done, fmt.Errorf("compaction lease %s: %w", member, err)
		}
		if !got {
			continue
		}
		n, err := l.CompactPartition(ctx, domain, day)
		l.rdb.Del(context.WithoutCancel(ctx), lease)
		if err != nil {
			return done, err
		}
		if n > 0 {
			done++
		}
		undirtyScript.Run(ctx, l.rdb, []string{l.k.dirty()}, member, z.Score)
	}
	return done, nil
}

// CompactPartition merges a partition's segments into one, without the
// duplicate copies a rewrite left, then removes the segments it replaced
// and any left outside the index by a crash. It answers how many segments
// it replaced (0: nothing to do).
func (l *Ledger) CompactPartition(ctx context.Context, domain, day string) (int, error) {
	segs, err := l.idx.segments(ctx, domain, day)
	if err != nil {
		return 0, err
	}
	if len(segs) < 2 {
		return 0, l.removeOrphans(ctx, domain, day, nil)
	}
	names := make([]string, len(segs))
	for i, s := range segs {
		names[i] = s.Name
	}
	slices.Sort(names)
	name := compactName(names)
	key := SegmentKey(domain, day, name)

	tmp, err := os.CreateTemp("", "cdr-compact-*")
	if err != nil {
		return 0, fmt.Errorf("compact %s/%s: %w", domain, day, err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	b := cdr.NewBuilder(tmp, domain, day, l.set.BlockCDRs)
	start, _ := cdr.ParseDay(day)
	q := &cdrv1.Query{Domain: domain, From: timestamppb.New(start), To: timestamppb.New(start.Add(24 * time.Hour))}
	out := &batcher{fn: func(cs []*cdrv1.Cdr) error {
		for _, c := range cs {
			if err := b.Add(c); err != nil {
				return err
			}
		}
		return nil
	}}
	err = l.scanSegments(ctx, q, day, segs, out)
	if err == nil {
		err = out.flush() // the last, partial batch
	}
	if err != nil {
		return 0, fmt.Errorf("compact %s/%s: %w", domain, day, err)
	}
	h, err := b.Finish(names, l.now())
	if err != nil {
		return 0, fmt.Errorf("compact %s/%s: %w", domain, day, err)
	}
	prefix, err := cdr.Prefix(h)
	if err != nil {
		return 0, err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("compact %s/%s: %w", domain, day, err)
	}
	size := int64(len(prefix)) + h.BodyBytes
	if _, err := l.store.Put(ctx, key, io.MultiReader(bytes.NewReader(prefix), io.LimitReader(tmp, h.BodyBytes)), SegmentContentType); err != nil {
		return 0, fmt.Errorf("store compacted segment %s: %w", key, err)
	}
	meta := SegmentMeta{Name: name, Count: int64(h.Count), Bytes: size, MinStart: h.MinStart, MaxStart: h.MaxStart}
	args := []any{name, meta.encode(), meta.Count, meta.Bytes}
	for _, n := range names {
		args = append(args, n)
	}
	swapped, err := swapScript.Run(ctx, l.rdb, []string{l.k.segs(domain, day), l.k.stat(domain), l.k.gone(domain, day)}, args...).Int()
	if err != nil {
		return 0, fmt.Errorf("index compacted segment %s: %w", key, err)
	}
	if swapped == 0 {
		// Another compaction got there first (it wrote this very name from
		// the same segments) or a segment went away: keep what is indexed.
		if indexed, _ := l.rdb.HExists(ctx, l.k.segs(domain, day), name).Result(); !indexed {
			_ = l.store.Delete(ctx, key)
		}
		return 0, nil
	}
	if l.hooks.afterSwap != nil {
		l.hooks.afterSwap(key)
	}
	l.m.compacted.Inc()
	l.m.segments.WithLabelValues("compaction").Inc()
	l.m.bytes.Add(float64(size))
	return len(names), l.removeOrphans(ctx, domain, day, names)
}

func compactName(names []string) string {
	var b strings.Builder
	for _, n := range names {
		b.WriteString(n)
		b.WriteByte('\n')
	}
	return "c-" + hashHex([]byte(b.String()))
}

// removeOrphans deletes the partition's segment objects the index does
// not name: those just replaced, and those a crash left between storing a
// segment and indexing it (whose CDRs a later segment holds, as their
// messages were redelivered), once they are older than orphanAge.
func (l *Ledger) removeOrphans(ctx context.Context, domain, day string, replaced []string) error {
	lister, ok := l.store.(cds.Lister)
	if !ok {
		return nil
	}
	segs, err := l.idx.segments(ctx, domain, day)
	if err != nil {
		return err
	}
	indexed := map[string]bool{}
	for _, s := range segs {
		indexed[s.Name] = true
	}
	// A segment a writer is storing or about to index is not an orphan,
	// however old its object looks by this process's clock; a mark a day
	// old is a writer that died.
	pending, err := l.rdb.HGetAll(ctx, l.k.pending(domain, day)).Result()
	if err != nil {
		return fmt.Errorf("read pending segments of %s/%s: %w", domain, day, err)
	}
	for name, ms := range pending {
		at, _ := strconv.ParseInt(ms, 10, 64)
		if l.now().Sub(time.UnixMilli(at)) < 24*time.Hour {
			indexed[name] = true
		}
	}
	gone, err := l.rdb.SMembers(ctx, l.k.gone(domain, day)).Result()
	if err != nil {
		return fmt.Errorf("read replaced segments of %s/%s: %w", domain, day, err)
	}
	replaced = append(slices.Clone(replaced), gone...)
	var doomed []string
	cutoff := l.now().Add(-orphanAge)
	err = lister.List(ctx, "cdr/"+domain+"/"+day+"/", func(o cds.Object) error {
		d, dy, name, ok := parseSegmentKey(o.Key)
		if !ok || d != domain || dy != day || indexed[name] {
			return nil
		}
		if slices.Contains(replaced, name) || o.Modified.Before(cutoff) {
			doomed = append(doomed, o.Key)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list partition %s/%s: %w", domain, day, err)
	}
	for _, key := range doomed {
		if err := l.store.Delete(ctx, key); err != nil && !errors.Is(err, cds.ErrNotFound) {
			return fmt.Errorf("remove replaced segment %s: %w", key, err)
		}
	}
	return nil
}
