package catalog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/callvault/callvault/pkg/bus"
)

// Applied says how far Redis has applied each stream: the highest ingest
// sequence decided and the highest config sequence applied. Present is
// false in a Redis that holds no callvault state at all.
type Applied struct {
	Present        bool
	Ingest, Config uint64
	// Layout is the catalog layout the marks were written with ("" before
	// layouts were marked).
	Layout string
	// Gen names the rebuild (or first start) that wrote the marks.
	Gen string
}

// Layout names the catalog's key layout. MarkCurrent writes it beside the
// marks; a Redis marked with another (or none) holds keys this code does
// not read, some under the same names (a box's members were ids, they are
// id hashes now), so it is not used until it is emptied and rebuilt.
const Layout = bus.CatalogLayout

const layoutField = bus.AppliedLayoutField

// Streams whose progress Applied records.
const (
	AppliedIngest = "ingest"
	AppliedConfig = "config"
)

func (k keys) applied() string { return bus.AppliedKey(k.ns) }

// genField names the rebuild that wrote the marks: MarkCurrent gives it
// a new random value, so a writer that read it before a rebuild finds it
// changed (or gone, while the rebuild runs) when it marks its work.
const genField = "gen"

// markScript moves a mark forward, for the writer that read the marks of
// generation ARGV[3]. It only moves marks that exist: a Redis emptied
// while an event was being applied must stay without marks (and so refuse
// to answer) until a rebuild has restored it, not be marked current by
// the event that happened to finish. It returns 1 when it moved (or kept)
// the mark, 0 when the marks are gone and -1 when another rebuild wrote
// them: either way a rebuild ran while the writer worked.
const markScript = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if (redis.call('HGET', KEYS[1], 'gen') or '') ~= ARGV[3] then return -1 end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur or tonumber(ARGV[2]) > tonumber(cur) then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
`

// ErrRebuiltMeanwhile: a rebuild started (or finished) while a writer
// applied events it had checked the marks for. What it wrote may have
// been half wiped, so its events are retried after another rebuild.
var ErrRebuiltMeanwhile = errors.New("catalog: Redis was rebuilt while the events were applied; they are retried after another rebuild")

// MarkApplied records that stream has been applied up to seq by a writer
// that read the marks of generation gen (Applied.Gen) before it began.
// It returns ErrMarksGone when the marks are gone (a rebuild is starting),
// ErrRebuiltMeanwhile when another rebuild wrote them since.
func (c *Catalog) MarkApplied(ctx context.Context, stream string, seq uint64, gen string) error {
	n, err := c.mark.Run(ctx, c.rdb, []string{c.k.applied()}, stream, seq, gen).Int()
	if err != nil {
		return fmt.Errorf("catalog mark %s applied: %w", stream, err)
	}
	switch n {
	case 1:
		return nil
	case 0:
		return ErrMarksGone
	}
	return ErrRebuiltMeanwhile
}

// ErrMarksGone: the marks were removed while a writer applied events (a
// rebuild is starting, or Redis was emptied). A writer still registered
// (EnterWriter) kept the rebuild from emptying anything meanwhile; its
// events are retried once the rebuild is over.
var ErrMarksGone = fmt.Errorf("%w: the applied marks were removed meanwhile", ErrRebuiltMeanwhile)

// MarkCurrent writes both marks at once: after a rebuild, or at a first
// start on empty streams. It is the only way the marks come into being.
func (c *Catalog) MarkCurrent(ctx context.Context, ingest, config uint64) error {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	if err := c.rdb.HSet(ctx, c.k.applied(), AppliedIngest, ingest, AppliedConfig, config, layoutField, Layout, genField, hex.EncodeToString(b)).Err(); err != nil {
		return fmt.Errorf("catalog mark current: %w", err)
	}
	return nil
}

// Applied reads the progress marks.
func (c *Catalog) Applied(ctx context.Context) (Applied, error) {
	vals, err := c.rdb.HMGet(ctx, c.k.applied(), AppliedIngest, AppliedConfig, layoutField, genField).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return Applied{}, fmt.Errorf("catalog applied: %w", err)
	}
	var a Applied
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue
		}
		if i == 2 {
			a.Layout = s
			continue
		}
		if i == 3 {
			a.Gen = s
			continue
		}
		a.Present = true
		n, _ := strconv.ParseUint(s, 10, 64)
		if i == 0 {
			a.Ingest = n
		} else {
			a.Config = n
		}
	}
	return a, nil
}

// AppliedKey is the key of the applied marks: while it is absent, Redis
// holds no callvault state.
func (c *Catalog) AppliedKey() string { return c.k.applied() }

// ClearApplied removes the marks, so that every reader refuses to answer
// (503) until a rebuild that is starting now has finished and marked
// again: a half-rebuilt Redis would otherwise accept a token whose
// revocation it has not replayed yet.
func (c *Catalog) ClearApplied(ctx context.Context) error {
	c.nums.Clear()
	if err := c.rdb.Del(ctx, c.k.applied()).Err(); err != nil {
		return fmt.Errorf("catalog clear applied: %w", err)
	}
	return nil
}
