package ledger

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/callvault/callvault/pkg/cdr"
)

// The partition index, per domain (one hash tag, so every script runs on
// one cluster slot):
//
//	ns:{d}:cdrdays           ZSET  day -> day number        the partitions
//	ns:{d}:cdrseg:<day>      HASH  segment -> "n bytes min max"
//	ns:{d}:cdrstat           HASH  cdrs, bytes, segments    the domain's totals
//
// and, across domains, ns:{_cdr}:dirty (ZSET "domain/day" -> last write,
// ms): the partitions a compaction may have work in.
type keys struct{ ns string }

func (k keys) tag(domain string) string          { return k.ns + ":{" + domain + "}:" }
func (k keys) days(domain string) string         { return k.tag(domain) + "cdrdays" }
func (k keys) segs(domain, day string) string    { return k.tag(domain) + "cdrseg:" + day }
func (k keys) stat(domain string) string         { return k.tag(domain) + "cdrstat" }
func (k keys) pending(domain, day string) string { return k.tag(domain) + "cdrpending:" + day }
func (k keys) gone(domain, day string) string    { return k.tag(domain) + "cdrgone:" + day }
func (k keys) dirty() string                     { return k.ns + ":{_cdr}:dirty" }
func (k keys) compactLease(part string) string   { return k.ns + ":{_cdr}:compact:" + part }
func (k keys) domains() string                   { return k.ns + ":{_cdr}:domains" }
func (k keys) export(domain, id string) string   { return k.tag(domain) + "cdrexport:" + id }
func (k keys) exportList(domain string) string   { return k.tag(domain) + "cdrexports" }
func (k keys) exportOwner() string               { return k.ns + ":{_cdrx}:owner" }
func (k keys) exportPending() string             { return k.ns + ":{_cdrx}:pending" }
func (k keys) exportLease(id string) string      { return k.ns + ":{_cdrx}:lease:" + id }

// SegmentKey is where a segment object lives in the CDS.
func SegmentKey(domain, day, name string) string {
	return "cdr/" + domain + "/" + day + "/" + name + ".seg"
}

// parseSegmentKey splits a CDS key made by SegmentKey.
func parseSegmentKey(key string) (domain, day, name string, ok bool) {
	rest, found := strings.CutPrefix(key, "cdr/")
	if !found {
		return "", "", "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || !strings.HasSuffix(parts[2], ".seg") {
		return "", "", "", false
	}
	name = strings.TrimSuffix(parts[2], ".seg")
	if name == "" {
		return "", "", "", false
	}
	if _, err := cdr.ParseDay(parts[1]); err != nil {
		return "", "", "", false
	}
	return parts[0], parts[1], name, true
}

// SegmentMeta is what the index keeps of one segment.
type SegmentMeta struct {
	Name     string
	Count    int64
	Bytes    int64
	MinStart int64
	MaxStart int64
}

func (m SegmentMeta) encode() string {
	return fmt.Sprintf("%d %d %d %d", m.Count, m.Bytes, m.MinStart, m.MaxStart)
}

func decodeMeta(name, v string) (SegmentMeta, error) {
	f := strings.Fields(v)
	if len(f) != 4 {
		return SegmentMeta{}, fmt.Errorf("segment %s: index entry %q is malformed", name, v)
	}
	var n [4]int64
	for i, s := range f {
		x, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return SegmentMeta{}, fmt.Errorf("segment %s: index entry %q is malformed", name, v)
		}
		n[i] = x
	}
	return SegmentMeta{Name: name, Count: n[0], Bytes: n[1], MinStart: n[2], MaxStart: n[3]}, nil
}

// recordScript adds a segment to its partition and clears its pending
// mark. A segment already there (the same messages written again after a
// lost ack) replaces its entry without counting twice; one a compaction
// already replaced (its messages are in the compacted segment) is not
// indexed again and answers 2. KEYS: days, segs, stat, pending, gone.
// ARGV: day, day number, name, meta, count, bytes.
var recordScript = redis.NewScript(`
redis.call('HDEL', KEYS[4], ARGV[3])
if redis.call('SISMEMBER', KEYS[5], ARGV[3]) == 1 then return 2 end
local old = redis.call('HGET', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
if old then
  local oc, ob = string.match(old, '^(%d+) (%d+)')
  redis.call('HINCRBY', KEYS[3], 'cdrs', tonumber(ARGV[5]) - tonumber(oc))
  redis.call('HINCRBY', KEYS[3], 'bytes', tonumber(ARGV[6]) - tonumber(ob))
  return 0
end
redis.call('HINCRBY', KEYS[3], 'cdrs', ARGV[5])
redis.call('HINCRBY', KEYS[3], 'bytes', ARGV[6])
redis.call('HINCRBY', KEYS[3], 'segments', 1)
return 1
`)

// swapScript replaces segments of a partition by their compaction, only
// when every one of them is still indexed, and remembers the replaced
// names so a late rewrite of one is not indexed again. KEYS: segs, stat,
// gone. ARGV: new name, new meta, new count, new bytes, then the old
// names.
var swapScript = redis.NewScript(`
local olds = {}
for i = 5, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if not v then return 0 end
  olds[#olds + 1] = v
end
local c, b = 0, 0
for _, v in ipairs(olds) do
  local oc, ob = string.match(v, '^(%d+) (%d+)')
  c = c + tonumber(oc)
  b = b + tonumber(ob)
end
for i = 5, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
  redis.call('SADD', KEYS[3], ARGV[i])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], 'cdrs', tonumber(ARGV[3]) - c)
redis.call('HINCRBY', KEYS[2], 'bytes', tonumber(ARGV[4]) - b)
redis.call('HINCRBY', KEYS[2], 'segments', 1 - #olds)
return 1
`)

type index struct {
	rdb redis.UniversalClient
	k   keys
}

// markPending says a writer is about to store segment name: compaction
// leaves its object alone until it is indexed (or the mark is a day old:
// the writer died, and its messages went into another segment).
func (x index) markPending(ctx context.Context, domain, day, name string, now time.Time) error {
	if err := x.rdb.HSet(ctx, x.k.pending(domain, day), name, now.UnixMilli()).Err(); err != nil {
		return fmt.Errorf("mark segment %s of %s/%s pending: %w", name, domain, day, err)
	}
	return nil
}

func (x index) record(ctx context.Context, domain, day string, m SegmentMeta, now time.Time) error {
	t, err := cdr.ParseDay(day)
	if err != nil {
		return err
	}
	if err := recordScript.Run(ctx, x.rdb, []string{x.k.days(domain), x.k.segs(domain, day), x.k.stat(domain), x.k.pending(domain, day), x.k.gone(domain, day)},
		day, cdr.DayNumber(t), m.Name, m.encode(), m.Count, m.Bytes).Err(); err != nil {
		return fmt.Errorf("index segment %s of %s/%s: %w", m.Name, domain, day, err)
	}
	// Outside the script: another slot. A lost mark only delays a
	// compaction until the partition is written again or rebuilt.
	pipe := x.rdb.Pipeline()
	pipe.ZAdd(ctx, x.k.dirty(), redis.Z{Score: float64(now.UnixMilli()), Member: domain + "/" + day})
	pipe.SAdd(ctx, x.k.domains(), domain)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("mark %s/%s for compaction: %w", domain, day, err)
	}
	return nil
}

// segments lists a partition's indexed segments.
func (x index) segments(ctx context.Context, domain, day string) ([]SegmentMeta, error) {
	m, err := x.rdb.HGetAll(ctx, x.k.segs(domain, day)).Result()
	if err != nil {
		return nil, fmt.Errorf("read partition %s/%s: %w", domain, day, err)
	}
	out := make([]SegmentMeta, 0, len(m))
	for name, v := range m {
		sm, err := decodeMeta(name, v)
		if err != nil {
			return nil, err
		}
		out = append(out, sm)
	}
	return out, nil
}

// daysBetween lists domain's partition days with from <= day < to (day
// numbers), oldest first.
func (x index) daysBetween(ctx context.Context, domain string, from, to int64) ([]string, error) {
	days, err := x.rdb.ZRangeByScore(ctx, x.k.days(domain), &redis.ZRangeBy{
		Min: strconv.FormatInt(from, 10), Max: "(" + strconv.FormatInt(to, 10),
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("read partitions of %s: %w", domain, err)
	}
	return days, nil
}

func redisZ(score float64, member string) redis.Z { return redis.Z{Score: score, Member: member} }
