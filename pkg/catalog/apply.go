package catalog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// applyScript writes a recorded admission (replay): no cap is checked and
// nothing is owed. An artifact the admission evicted is removed and
// marked deleted in the same step, as it was live.
// KEYS as the decide script; ARGV: the shared admission arguments (1-9),
// 10 evicted id, 11 accepted at (ms), 12 pending, then the fields.
const applyScript = removeLua + admitLua + `
if redis.call('EXISTS', KEYS[1]) == 1 then return '0' end
local id, category = ARGV[1], ARGV[4]
if ARGV[10] ~= '' then
  local v = redis.call('HMGET', KEYS[9], 'st', 'size', 'id')
  if v[3] and (not v[1] or v[1] == 'a') then
    remove(KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], ARGV[7], ARGV[10], tonumber(v[2] or '0'), category)
    redis.call('HSET', KEYS[9], 'st', 'd', 'rs', 'cap_evicted', 'ru', 'folder cap: the oldest makes room for ' .. id, 'ac', 'policy', 'dt', ARGV[11])
  end
end
local fields = {}
for i = 13, #ARGV do fields[#fields + 1] = ARGV[i] end
return tostring(admit(id, ARGV[2], tonumber(ARGV[3]), category, ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], fields, ARGV[12], ARGV[10]))
`

// refusedScript writes a recorded refusal (replay).
const refusedScript = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'st', 'r', 'rs', ARGV[2], 'id', ARGV[1], 'kind', ARGV[3], ARGV[4], ARGV[5], 'size', ARGV[6], 'seq', ARGV[7], 'accepted_at', ARGV[8])
return 1
`

// runRefused queues the refused script for a recorded refusal.
func (c *Catalog) runRefused(ctx context.Context, pipe redis.Pipeliner, r Refusal) {
	keyField, keyValue := storedKey(r.Kind, r.Domain, r.ID, r.ObjectKey)
	c.refused.Run(ctx, pipe, []string{c.k.artifact(r.Domain, r.ID)}, r.ID, r.Reason, r.Kind, keyField, keyValue, r.Size, r.Seq, r.AcceptedAt.UnixMilli())
}

// Admission is one recorded admission decision, as replay applies it.
type Admission struct {
	Artifact  Artifact
	EvictedID string
}

// Refusal is one recorded refusal.
type Refusal struct {
	Domain, ID, Kind, ObjectKey, Reason string
	Size                                int64
	Seq                                 uint64
	AcceptedAt                          time.Time
}

// ApplyAdmissions writes recorded admissions in one pipeline, in order.
// Each claims its id as the live admission did. A record that exists is
// left alone, so applying twice changes nothing.
func (c *Catalog) ApplyAdmissions(ctx context.Context, batch []Admission) error {
	if len(batch) == 0 {
		return nil
	}
	return retryOnReload(func() error { return c.applyAdmissions(ctx, batch) })
}

func (c *Catalog) applyAdmissions(ctx context.Context, batch []Admission) error {
	pipe := c.rdb.Pipeline()
	for _, ad := range batch {
		a := ad.Artifact
		pipe.HSetNX(ctx, c.k.ids(a.ID), a.ID, a.Domain)
		args := append(a.admitArgs(), ad.EvictedID, a.AcceptedAt.UnixMilli(), "")
		c.apply.Run(ctx, pipe, c.scriptKeys(a, ad.EvictedID), append(args, a.fields...)...)
	}
	return c.execScripts(ctx, pipe, "apply admissions")
}

// ApplyRefusals writes recorded refusals in one pipeline.
func (c *Catalog) ApplyRefusals(ctx context.Context, batch []Refusal) error {
	if len(batch) == 0 {
		return nil
	}
	return retryOnReload(func() error { return c.applyRefusals(ctx, batch) })
}

func (c *Catalog) applyRefusals(ctx context.Context, batch []Refusal) error {
	pipe := c.rdb.Pipeline()
	for _, r := range batch {
		if r.Reason != ErrIDConflict {
			pipe.HSetNX(ctx, c.k.ids(r.ID), r.ID, r.Domain)
		}
		c.runRefused(ctx, pipe, r)
	}
	return c.execScripts(ctx, pipe, "apply refusals")
}

// execScripts runs a pipeline of scripts. Script.Run in a pipeline only
// sends EVALSHA; a server that has not seen the scripts answers NOSCRIPT,
// so they are loaded and the caller runs its batch again (every batch is
// idempotent).
func (c *Catalog) execScripts(ctx context.Context, pipe redis.Pipeliner, what string) error {
	_, err := pipe.Exec(ctx)
	if err == nil {
		return nil
	}
	if redis.HasErrorPrefix(err, "NOSCRIPT") {
		if lerr := c.loadScripts(ctx); lerr != nil {
			return lerr
		}
		return errReload
	}
	return fmt.Errorf("catalog %s: %w", what, err)
}

var errReload = errors.New("catalog: scripts reloaded")

// retryOnReload runs f again once when its pipeline found the scripts
// missing (a restarted or new Redis).
func retryOnReload(f func() error) error {
	err := f()
	if errors.Is(err, errReload) {
		err = f()
	}
	return err
}

func (c *Catalog) loadScripts(ctx context.Context) error {
	for _, s := range []*redis.Script{c.decide, c.conflict, c.done, c.gateS, c.apply, c.refused, c.applyMany} {
		if err := s.Load(ctx, c.rdb).Err(); err != nil {
			return fmt.Errorf("catalog: load script: %w", err)
		}
	}
	return nil
}
