package catalog

import (
	"context"
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

// markScript writes a mark that is absent even at 0, so that a Redis
// rebuilt from streams with nothing to apply still reads as present.
const markScript = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur or tonumber(ARGV[2]) > tonumber(cur) then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
`

// MarkApplied records that stream has been applied up to seq (it never
// moves back). It only moves marks that exist: a Redis emptied while an
// event was being applied must stay without marks (and so refuse to
// answer) until a rebuild has restored it, not be marked current by the
// event that happened to finish.
func (c *Catalog) MarkApplied(ctx context.Context, stream string, seq uint64) error {
	if err := c.mark.Run(ctx, c.rdb, []string{c.k.applied()}, stream, seq).Err(); err != nil {
		return fmt.Errorf("catalog mark %s applied: %w", stream, err)
	}
	return nil
}

// MarkCurrent writes both marks at once: after a rebuild, or at a first
// start on empty streams. It is the only way the marks come into being.
func (c *Catalog) MarkCurrent(ctx context.Context, ingest, config uint64) error {
	if err := c.rdb.HSet(ctx, c.k.applied(), AppliedIngest, ingest, AppliedConfig, config, layoutField, Layout).Err(); err != nil {
		return fmt.Errorf("catalog mark current: %w", err)
	}
	return nil
}

// Applied reads the progress marks.
func (c *Catalog) Applied(ctx context.Context) (Applied, error) {
	vals, err := c.rdb.HMGet(ctx, c.k.applied(), AppliedIngest, AppliedConfig, layoutField).Result()
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
