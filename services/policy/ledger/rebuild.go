package ledger

import (
	"context"
	"fmt"
	"slices"

	"github.com/callvault/callvault/pkg/cdr"
	"github.com/callvault/callvault/pkg/cds"
)

// RebuildStats says what an index rebuild found.
type RebuildStats struct {
	Domains    int
	Partitions int
	Segments   int
	// Replaced counts objects left behind by a compaction that were
	// dropped because the segment replacing them is there.
	Replaced int
	// Skipped counts objects under the prefix that are not segments.
	Skipped int
}

type found struct {
	meta       SegmentMeta
	supersedes []string
}

// RebuildIndex rebuilds the partition index from the segment objects
// alone: every partition's segments, counts, bytes and time bounds are
// read from their headers, segments a present compaction replaced are
// left out, and each domain's index is replaced in one transaction.
// Domains the index names but the CDS holds nothing for are cleared.
func (l *Ledger) RebuildIndex(ctx context.Context) (RebuildStats, error) {
	lister, ok := l.store.(cds.Lister)
	if !ok {
		return RebuildStats{}, fmt.Errorf("rebuild CDR index: the CDS cannot list its objects")
	}
	var st RebuildStats
	parts := map[string]map[string]map[string]found{} // domain -> day -> name
	err := lister.List(ctx, "cdr/", func(o cds.Object) error {
		domain, day, name, ok := parseSegmentKey(o.Key)
		if !ok {
			st.Skipped++
			return nil
		}
		h, _, err := l.readHeader(ctx, o.Key)
		if err != nil {
			l.log.Warn("CDR index rebuild: not a segment, skipped", "key", o.Key, "err", err)
			st.Skipped++
			return nil
		}
		if h.Domain != domain || h.Day != day {
			l.log.Warn("CDR index rebuild: segment header names another partition, skipped", "key", o.Key, "header", h.Domain+"/"+h.Day)
			st.Skipped++
			return nil
		}
		if parts[domain] == nil {
			parts[domain] = map[string]map[string]found{}
		}
		if parts[domain][day] == nil {
			parts[domain][day] = map[string]found{}
		}
		parts[domain][day][name] = found{
			meta:       SegmentMeta{Name: name, Count: int64(h.Count), Bytes: o.Size, MinStart: h.MinStart, MaxStart: h.MaxStart},
			supersedes: h.Supersedes,
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("rebuild CDR index: list segments: %w", err)
	}
	known, err := l.rdb.SMembers(ctx, l.k.domains()).Result()
	if err != nil {
		return st, fmt.Errorf("rebuild CDR index: %w", err)
	}
	domains := map[string]bool{}
	for _, d := range known {
		domains[d] = true
	}
	for d := range parts {
		domains[d] = true
	}
	names := make([]string, 0, len(domains))
	for d := range domains {
		names = append(names, d)
	}
	slices.Sort(names)
	for _, domain := range names {
		days := parts[domain]
		for _, segs := range days {
			// Two passes: a chain of compactions (C2 replaced C1, which
			// replaced S1) drops every replaced one whatever the order.
			replaced := map[string]bool{}
			for _, f := range segs {
				for _, old := range f.supersedes {
					replaced[old] = true
				}
			}
			for name := range replaced {
				if _, ok := segs[name]; ok {
					delete(segs, name)
					st.Replaced++
				}
			}
		}
		if err := l.replaceDomain(ctx, domain, days); err != nil {
			return st, err
		}
		if len(days) > 0 {
			st.Domains++
		}
		for _, segs := range days {
			st.Partitions++
			st.Segments += len(segs)
		}
	}
	return st, nil
}

// replaceDomain writes one domain's index as found, in one transaction.
func (l *Ledger) replaceDomain(ctx context.Context, domain string, days map[string]map[string]found) error {
	old, err := l.rdb.ZRange(ctx, l.k.days(domain), 0, -1).Result()
	if err != nil {
		return fmt.Errorf("rebuild CDR index of %s: %w", domain, err)
	}
	tx := l.rdb.TxPipeline()
	tx.Del(ctx, l.k.days(domain), l.k.stat(domain))
	for _, day := range old {
		tx.Del(ctx, l.k.segs(domain, day))
	}
	var cdrs, bytes, segments int64
	for day, segs := range days {
		t, err := cdr.ParseDay(day)
		if err != nil {
			continue
		}
		if len(segs) == 0 {
			continue
		}
		tx.ZAdd(ctx, l.k.days(domain), redisZ(float64(cdr.DayNumber(t)), day))
		fields := make([]any, 0, 2*len(segs))
		for name, f := range segs {
			fields = append(fields, name, f.meta.encode())
			cdrs += f.meta.Count
			bytes += f.meta.Bytes
			segments++
		}
		tx.HSet(ctx, l.k.segs(domain, day), fields...)
	}
	if segments > 0 {
		tx.HSet(ctx, l.k.stat(domain), "cdrs", cdrs, "bytes", bytes, "segments", segments)
	}
	if _, err := tx.Exec(ctx); err != nil {
		return fmt.Errorf("rebuild CDR index of %s: %w", domain, err)
	}
	if segments > 0 {
		if err := l.rdb.SAdd(ctx, l.k.domains(), domain).Err(); err != nil {
			return fmt.Errorf("rebuild CDR index of %s: %w", domain, err)
		}
	}
	return nil
}
