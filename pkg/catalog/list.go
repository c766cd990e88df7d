package catalog

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrBadCursor is returned for a page token this catalog did not issue.
var ErrBadCursor = errors.New("catalog: malformed page token")

// Query selects recordings of one domain, newest first.
type Query struct {
	Domain string
	User   string
	CallID string
	From   time.Time // inclusive; zero for no bound
	To     time.Time // exclusive; zero for no bound
	Limit  int
	Cursor string
}

// Page is one page of results.
type Page struct {
	Recordings []Recording
	Next       string
}

// cursor is the position after the last item returned: items sort by
// (started_at desc, id desc), so the pair is a total order.
type cursor struct {
	score int64
	id    string
}

func (c cursor) encode() string {
	return base64.RawURLEncoding.EncodeToString([]byte("v1:" + strconv.FormatInt(c.score, 10) + ":" + c.id))
}

func decodeCursor(s string) (cursor, bool, error) {
	if s == "" {
		return cursor{}, false, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursor{}, false, ErrBadCursor
	}
	parts := strings.SplitN(string(raw), ":", 3)
	if len(parts) != 3 || parts[0] != "v1" || parts[2] == "" {
		return cursor{}, false, ErrBadCursor
	}
	score, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return cursor{}, false, ErrBadCursor
	}
	return cursor{score: score, id: parts[2]}, true, nil
}

// before reports whether (score, id) sorts after the cursor, i.e. belongs
// to a later page.
func (c cursor) before(score int64, id string) bool {
	return score < c.score || (score == c.score && id < c.id)
}

// item is one listed recording and its place in the order.
type item struct {
	score int64
	id    string
	s     stored
}

func sortItems(items []item) {
	slices.SortFunc(items, func(a, b item) int {
		if a.score != b.score {
			if a.score > b.score {
				return -1
			}
			return 1
		}
		return strings.Compare(b.id, a.id)
	})
}

// bounds is the time window of a query and its cursor: items sort by
// (started_at, id) descending, and a page holds those before the cursor.
type bounds struct {
	from, to   int64 // ms; to is exclusive
	cur        cursor
	hasCur     bool
	user, call string
}

func (b bounds) keep(it item) bool {
	switch {
	case it.score < b.from || it.score >= b.to:
		return false
	case b.hasCur && !b.cur.before(it.score, it.id):
		return false
	case b.user != "" && it.s.User != b.user:
		return false
	case b.call != "" && it.s.CallID != b.call:
		return false
	}
	return it.s.State == StateAdmitted && it.s.Kind == KindRecording
}

// top is the newest time a listing starts from: the cursor, the upper
// bound, or a day past now (ingest accepts that much clock skew).
func (b bounds) top() int64 {
	t := b.to - 1
	if b.hasCur && b.cur.score < t {
		t = b.cur.score
	}
	return t
}

// ListRecordings returns one page of q.
func (c *Catalog) ListRecordings(ctx context.Context, q Query) (Page, error) {
	cur, hasCur, err := decodeCursor(q.Cursor)
	if err != nil {
		return Page{}, err
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	b := bounds{from: math.MinInt64, to: time.Now().Add(48 * time.Hour).UnixMilli(), cur: cur, hasCur: hasCur, user: q.User, call: q.CallID}
	if !q.From.IsZero() {
		b.from = q.From.UnixMilli()
	}
	if !q.To.IsZero() && q.To.UnixMilli() < b.to {
		b.to = q.To.UnixMilli()
	}
	want := q.Limit + 1
	var items []item
	switch {
	case q.CallID != "":
		items, err = c.callItems(ctx, q.Domain, b)
	case q.User != "":
		items, err = c.userItems(ctx, q.Domain, b, want)
	default:
		items, err = c.domainItems(ctx, q.Domain, b, want)
	}
	if err != nil {
		return Page{}, err
	}
	sortItems(items)
	reseller, _, err := c.DomainOwner(ctx, q.Domain)
	if err != nil {
		return Page{}, err
	}
	page := Page{}
	for i, it := range items {
		if i == q.Limit {
			last := page.Recordings[len(page.Recordings)-1]
			page.Next = cursor{score: last.StartedAt.UnixMilli(), id: last.ID}.encode()
			break
		}
		page.Recordings = append(page.Recordings, it.s.recording(q.Domain, reseller))
	}
	return page, nil
}

// decodeBucket turns a bucket's records into the items the bounds keep.
func decodeBucket(domain string, hour int64, m map[string]string, b bounds, out []item) ([]item, error) {
	for _, raw := range m {
		s, err := unpackStored(domain, hour, raw)
		if err != nil {
			return out, fmt.Errorf("catalog list %s: %w", domain, err)
		}
		it := item{score: s.At.UnixMilli(), id: s.ID, s: s}
		if b.keep(it) {
			out = append(out, it)
		}
	}
	return out, nil
}

// domainItems walks the domain's hour buckets from the newest the bounds
// allow downwards. Buckets do not overlap in time, so once a bucket is
// read with enough items before it, no older bucket can come first.
func (c *Catalog) domainItems(ctx context.Context, domain string, b bounds, want int) ([]item, error) {
	years, err := c.yearsOf(ctx, domain)
	if err != nil {
		return nil, err
	}
	hi := floorDiv(b.top(), hourMS)
	lo := floorDiv(max(b.from, earliest.UnixMilli()), hourMS)
	var out []item
	batch := 4
	for _, year := range years {
		start := time.Date(year, 1, 1, 0, 0, 0, 0, time.UTC).Unix() / 3600
		if start > hi {
			continue
		}
		if time.Date(year+1, 1, 1, 0, 0, 0, 0, time.UTC).Unix()/3600 <= lo {
			break
		}
		hours, err := c.yearHours(ctx, domain, year, lo, hi)
		if err != nil {
			return nil, err
		}
		for len(hours) > 0 {
			n := min(batch, len(hours))
			pipe := c.rdb.Pipeline()
			cmds := make([]*redis.MapStringStringCmd, n)
			for i, h := range hours[:n] {
				cmds[i] = pipe.HGetAll(ctx, c.k.bucket(domain, classRecording, h))
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return nil, fmt.Errorf("catalog list %s: %w", domain, err)
			}
			for i, cmd := range cmds {
				if out, err = decodeBucket(domain, hours[i], cmd.Val(), b, out); err != nil {
					return nil, err
				}
				if len(out) >= want {
					return out, nil
				}
			}
			hours = hours[n:]
			batch = min(batch*2, 64)
		}
	}
	return out, nil
}

// yearHours reads the hours of one year's bitmap in [lo, hi] that hold
// records, newest first.
func (c *Catalog) yearHours(ctx context.Context, domain string, year int, lo, hi int64) ([]int64, error) {
	key, _ := c.k.hourBit(domain, classRecording, time.Date(year, 1, 1, 0, 0, 0, 0, time.UTC).Unix()/3600)
	bits, err := c.rdb.Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("catalog list %s: %w", domain, err)
	}
	base := time.Date(year, 1, 1, 0, 0, 0, 0, time.UTC).Unix() / 3600
	var out []int64
	for i := len(bits)*8 - 1; i >= 0; i-- {
		if bits[i/8]&(0x80>>(i%8)) == 0 {
			continue
		}
		h := base + int64(i)
		if h >= lo && h <= hi {
			out = append(out, h)
		}
	}
	return out, nil
}

// yearsOf lists the years the domain has recordings in, newest first.
func (c *Catalog) yearsOf(ctx context.Context, domain string) ([]int, error) {
	bits, err := c.rdb.Get(ctx, c.k.years(domain, classRecording)).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("catalog list %s: %w", domain, err)
	}
	var out []int
	for i := len(bits)*8 - 1; i >= 0; i-- {
		if bits[i/8]&(0x80>>(i%8)) != 0 {
			out = append(out, 1970+i)
		}
	}
	return out, nil
}

// userItems walks the user's monthly indexes from the newest month the
// bounds allow downwards, a year of months per round trip (only years the
// domain has recordings in), reading the records each names.
func (c *Catalog) userItems(ctx context.Context, domain string, b bounds, want int) ([]item, error) {
	years, err := c.yearsOf(ctx, domain)
	if err != nil {
		return nil, err
	}
	top := monthStart(time.UnixMilli(b.top()))
	var months []time.Time
	for _, y := range years {
		for m := 12; m >= 1; m-- {
			start := time.Date(y, time.Month(m), 1, 0, 0, 0, 0, time.UTC)
			if start.After(top) || start.AddDate(0, 1, 0).UnixMilli() <= b.from {
				continue
			}
			months = append(months, start)
		}
	}
	var out []item
	for len(months) > 0 {
		n := min(12, len(months))
		pipe := c.rdb.Pipeline()
		cmds := make([]*redis.ZSliceCmd, n)
		for i, m := range months[:n] {
			cmds[i] = pipe.ZRevRangeByScoreWithScores(ctx, c.k.userIndex(domain, b.user, monthOf(m)), c.monthRange(m, b, 0))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("catalog list %s user %s: %w", domain, b.user, err)
		}
		for i, m := range months[:n] {
			zs := cmds[i].Val()
			start := m.UnixMilli()
			for offset := int64(len(zs)); ; offset += int64(len(zs)) {
				if out, err = c.loadIndexed(ctx, domain, start, zs, b, out); err != nil {
					return nil, err
				}
				if len(zs) < userPage {
					break
				}
				// Enough, unless the next entries tie with the last kept one.
				if len(out) >= want && int64(zs[len(zs)-1].Score)+start < out[want-1].score {
					break
				}
				if zs, err = c.rdb.ZRevRangeByScoreWithScores(ctx, c.k.userIndex(domain, b.user, monthOf(m)), c.monthRange(m, b, offset)).Result(); err != nil {
					return nil, fmt.Errorf("catalog list %s user %s: %w", domain, b.user, err)
				}
			}
			if len(out) >= want {
				return out, nil // months do not overlap: no older one comes first
			}
		}
		months = months[n:]
	}
	return out, nil
}

// userPage is how many entries of a user's month one read takes.
const userPage = 256

// monthRange is the score range of month m the bounds allow, from offset.
func (c *Catalog) monthRange(m time.Time, b bounds, offset int64) *redis.ZRangeBy {
	start := m.UnixMilli()
	minS := "0"
	if b.from > start {
		minS = strconv.FormatInt(b.from-start, 10)
	}
	return &redis.ZRangeBy{Max: strconv.FormatInt(b.top()-start, 10), Min: minS, Offset: offset, Count: userPage}
}

// loadIndexed reads the records an index names (member: the id's hash,
// score: ms since start) from their hour buckets.
func (c *Catalog) loadIndexed(ctx context.Context, domain string, start int64, zs []redis.Z, b bounds, out []item) ([]item, error) {
	if len(zs) == 0 {
		return out, nil
	}
	pipe := c.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(zs))
	hours := make([]int64, len(zs))
	for i, z := range zs {
		field, _ := z.Member.(string)
		hours[i] = floorDiv(start+int64(z.Score), hourMS)
		cmds[i] = pipe.HGet(ctx, c.k.bucket(domain, classRecording, hours[i]), field)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("catalog list %s: %w", domain, err)
	}
	for i, cmd := range cmds {
		if cmd.Err() != nil {
			continue // deleted between the index read and the load
		}
		s, err := unpackStored(domain, hours[i], cmd.Val())
		if err != nil {
			return nil, fmt.Errorf("catalog list %s: %w", domain, err)
		}
		it := item{score: s.At.UnixMilli(), id: s.ID, s: s}
		if b.keep(it) {
			out = append(out, it)
		}
	}
	return out, nil
}

// callItems reads a call's entry at every level of the call index, then
// the buckets of the hours it names.
func (c *Catalog) callItems(ctx context.Context, domain string, b bounds) ([]item, error) {
	n, err := c.rdb.Get(ctx, c.k.callCount(domain)).Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("catalog list %s call: %w", domain, err)
	}
	top := callLevel(n)
	pipe := c.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, 0, top+1)
	for l := 0; l <= top; l++ {
		key, field := c.k.callKey(domain, b.call, l)
		cmds = append(cmds, pipe.HGet(ctx, key, field))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("catalog list %s call: %w", domain, err)
	}
	seen := map[int64]bool{}
	var hours []int64
	for _, cmd := range cmds {
		for _, p := range strings.Split(cmd.Val(), ",") {
			h, err := strconv.ParseInt(p, 10, 64)
			if err != nil || seen[h] || (h+1)*hourMS <= b.from || h*hourMS > b.top() {
				continue
			}
			seen[h] = true
			hours = append(hours, h)
		}
	}
	if len(hours) == 0 {
		return nil, nil
	}
	pipe = c.rdb.Pipeline()
	buckets := make([]*redis.MapStringStringCmd, len(hours))
	for i, h := range hours {
		buckets[i] = pipe.HGetAll(ctx, c.k.bucket(domain, classRecording, h))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("catalog list %s call: %w", domain, err)
	}
	var out []item
	for i, cmd := range buckets {
		if out, err = decodeBucket(domain, hours[i], cmd.Val(), b, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}
