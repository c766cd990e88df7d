package catalog

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
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

// ListRecordings returns one page of q.
func (c *Catalog) ListRecordings(ctx context.Context, q Query) (Page, error) {
	cur, hasCur, err := decodeCursor(q.Cursor)
	if err != nil {
		return Page{}, err
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	var ids []scored
	if q.CallID != "" {
		ids, err = c.callMembers(ctx, q, cur, hasCur)
	} else {
		ids, err = c.rangeIndex(ctx, q, cur, hasCur)
	}
	if err != nil {
		return Page{}, err
	}
	recs, err := c.load(ctx, q.Domain, ids)
	if err != nil {
		return Page{}, err
	}
	page := Page{}
	for _, r := range recs {
		if q.User != "" && r.User != q.User {
			continue
		}
		if len(page.Recordings) == q.Limit {
			last := page.Recordings[len(page.Recordings)-1]
			page.Next = cursor{score: last.StartedAt.UnixMilli(), id: last.ID}.encode()
			break
		}
		page.Recordings = append(page.Recordings, r)
	}
	return page, nil
}

type scored struct {
	id    string
	score int64
}

// rangeIndex walks the user's or the domain's time index from the cursor
// (or the upper bound) downwards and returns up to Limit+1 ids.
func (c *Catalog) rangeIndex(ctx context.Context, q Query, cur cursor, hasCur bool) ([]scored, error) {
	key := c.k.index(q.Domain, KindRecording)
	if q.User != "" {
		key = c.k.userIndex(q.Domain, q.User, KindRecording)
	}
	maxS := "+inf"
	if !q.To.IsZero() {
		maxS = "(" + strconv.FormatInt(q.To.UnixMilli(), 10)
	}
	if hasCur && (q.To.IsZero() || cur.score < q.To.UnixMilli()) {
		maxS = strconv.FormatInt(cur.score, 10)
	}
	minS := "-inf"
	if !q.From.IsZero() {
		minS = strconv.FormatInt(q.From.UnixMilli(), 10)
	}
	want := q.Limit + 1
	var out []scored
	const batch = 256
	for offset := int64(0); len(out) < want; offset += batch {
		zs, err := c.rdb.ZRevRangeByScoreWithScores(ctx, key, &redis.ZRangeBy{Max: maxS, Min: minS, Offset: offset, Count: batch}).Result()
		if err != nil {
			return nil, fmt.Errorf("catalog list %s: %w", q.Domain, err)
		}
		for _, z := range zs {
			id, _ := z.Member.(string)
			s := int64(z.Score)
			if hasCur && !cur.before(s, id) {
				continue
			}
			out = append(out, scored{id: id, score: s})
			if len(out) == want {
				break
			}
		}
		if len(zs) < batch {
			break
		}
	}
	return out, nil
}

// callMembers reads a call's recordings (a handful), filters and sorts them.
func (c *Catalog) callMembers(ctx context.Context, q Query, cur cursor, hasCur bool) ([]scored, error) {
	ids, err := c.rdb.SMembers(ctx, c.k.call(q.Domain, q.CallID)).Result()
	if err != nil {
		return nil, fmt.Errorf("catalog list %s call %s: %w", q.Domain, q.CallID, err)
	}
	scores := make([]*redis.FloatCmd, len(ids))
	pipe := c.rdb.Pipeline()
	for i, id := range ids {
		scores[i] = pipe.ZScore(ctx, c.k.index(q.Domain, KindRecording), id)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("catalog list %s call %s: %w", q.Domain, q.CallID, err)
	}
	var out []scored
	for i, id := range ids {
		f, err := scores[i].Result()
		if err != nil {
			continue // removed from the index: deleted
		}
		s := int64(f)
		if (!q.From.IsZero() && s < q.From.UnixMilli()) || (!q.To.IsZero() && s >= q.To.UnixMilli()) {
			continue
		}
		if hasCur && !cur.before(s, id) {
			continue
		}
		out = append(out, scored{id: id, score: s})
	}
	slices.SortFunc(out, func(a, b scored) int {
		if a.score != b.score {
			if a.score > b.score {
				return -1
			}
			return 1
		}
		return strings.Compare(b.id, a.id)
	})
	if q.User == "" && len(out) > q.Limit+1 { // the user filter runs after the load: keep them all
		out = out[:q.Limit+1]
	}
	return out, nil
}

func (c *Catalog) load(ctx context.Context, domain string, ids []scored) ([]Recording, error) {
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	pipe := c.rdb.Pipeline()
	for i, s := range ids {
		cmds[i] = pipe.HGetAll(ctx, c.k.artifact(domain, s.id))
	}
	if len(ids) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("catalog load %s: %w", domain, err)
		}
	}
	out := make([]Recording, 0, len(ids))
	for _, cmd := range cmds {
		r, err := parseRecording(cmd.Val())
		if errors.Is(err, ErrNotFound) {
			continue // deleted between the index read and the load
		}
		out = append(out, r)
	}
	return out, nil
}
