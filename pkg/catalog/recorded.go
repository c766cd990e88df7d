package catalog

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// applyManyScript writes recorded admissions of one domain (replay), as
// applyScript would one after the other, in one call: the usage, daily
// and monthly counters are added up and written once.
// KEYS: 1 usage, 2 daily, then per admission 6: art, idx, uidx (or art),
// call (or art), track, evicted (or art). ARGV per admission: the shared
// admission arguments (1-9), 10 evicted id, 11 accepted at (ms), 12 the
// number of field arguments, then the fields, ending with the state (and
// the evicted id) as admitLua writes them.
const applyManyScript = removeLua + `
local usage, daily, counters, expires = {}, {}, {}, {}
local total, written = 0, 0
local a, k = 1, 3
while a <= #ARGV do
  local id, score, size, category = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3]
  local trackType, evicted, nf = ARGV[a + 6], ARGV[a + 9], tonumber(ARGV[a + 11])
  local art, idx, uidx, call, track, victim = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5]
  if redis.call('EXISTS', art) == 0 then
    if evicted ~= '' then
      local v = redis.call('HMGET', victim, 'st', 'size', 'id')
      if v[3] and (not v[1] or v[1] == 'a') then
        remove(idx, uidx, call, KEYS[1], track, trackType, evicted, tonumber(v[2] or '0'), category)
        redis.call('HSET', victim, 'st', 'd', 'rs', 'cap_evicted', 'ru', 'folder cap: the oldest makes room for ' .. id, 'ac', 'policy', 'dt', ARGV[a + 10])
      end
    end
    redis.call('HSET', art, unpack(ARGV, a + 12, a + 11 + nf))
    redis.call('ZADD', idx, score, id)
    if ARGV[a + 4] == '1' then redis.call('ZADD', uidx, score, id) end
    if ARGV[a + 5] == '1' then redis.call('SADD', call, id) end
    local u = usage[category]
    if not u then
      u = {0, 0}
      usage[category] = u
    end
    u[1], u[2] = u[1] + size, u[2] + 1
    total = total + size
    daily[ARGV[a + 8]] = (daily[ARGV[a + 8]] or 0) + size
    if trackType == 'set' then
      redis.call('ZADD', track, score, id)
    elseif trackType == 'counter' then
      counters[track] = (counters[track] or 0) + 1
      expires[track] = ARGV[a + 7]
    end
    written = written + 1
  end
  a = a + 12 + nf
  k = k + 6
end
if written > 0 then
  for category, u in pairs(usage) do
    redis.call('HINCRBY', KEYS[1], category .. ':bytes', u[1])
    redis.call('HINCRBY', KEYS[1], category .. ':count', u[2])
  end
  redis.call('HINCRBY', KEYS[1], 'total:bytes', total)
  for day, n in pairs(daily) do redis.call('HINCRBY', KEYS[2], day, n) end
  for key, n in pairs(counters) do
    redis.call('INCRBY', key, n)
    redis.call('EXPIREAT', key, tonumber(expires[key]))
  end
end
return written
`

// applyGroup is the most admissions of one domain one applyMany call
// writes.
const applyGroup = 128

// Deletion is one recorded deletion (a tombstone), as replay applies it.
type Deletion struct {
	Domain, ID, Reason, Rule, Actor string
	At                              time.Time
}

// Recorded is one recorded decision of any kind, for ApplyRecorded: an
// admission, a refusal or a deletion, as Op says.
type Recorded struct {
	Op        RecordedOp
	Admission Admission
	Refusal   Refusal
	Deletion  Deletion
}

// RecordedOp says which decision a Recorded holds.
type RecordedOp uint8

// The decisions a Recorded can hold.
const (
	OpAdmission RecordedOp = iota + 1
	OpRefusal
	OpDeletion
)

// ApplyRecorded writes recorded decisions of every kind in stream order,
// as ApplyAdmissions, ApplyRefusals and ApplyDeleted would one by one, in
// two round trips per batch: one reads the records the deletions remove,
// one pipeline writes everything. A deletion of an artifact admitted
// earlier in the same batch takes the keys it touches from that
// admission; one of an artifact refused earlier in the batch starts a new
// pipeline, so that it reads the record the refusal wrote. Applying a
// batch twice changes nothing.
func (c *Catalog) ApplyRecorded(ctx context.Context, batch []Recorded) error {
	for len(batch) > 0 {
		n := segment(batch)
		if err := retryOnReload(func() error { return c.applyRecorded(ctx, batch[:n]) }); err != nil {
			return err
		}
		batch = batch[n:]
	}
	return nil
}

// segment returns how many decisions from the start of batch can share a
// pipeline: up to the first deletion of an artifact refused before it in
// the batch. A deletion of an artifact admitted before it in the batch
// needs no read: the admission says which keys the deletion touches.
func segment(batch []Recorded) int {
	var refused map[[2]string]bool
	for i, r := range batch {
		switch r.Op {
		case OpAdmission:
			delete(refused, [2]string{r.Admission.Artifact.Domain, r.Admission.Artifact.ID})
		case OpRefusal:
			if refused == nil {
				refused = map[[2]string]bool{}
			}
			refused[[2]string{r.Refusal.Domain, r.Refusal.ID}] = true
		case OpDeletion:
			if refused[[2]string{r.Deletion.Domain, r.Deletion.ID}] && i > 0 {
				return i
			}
		}
	}
	return len(batch)
}

func (c *Catalog) applyRecorded(ctx context.Context, batch []Recorded) error {
	// The records the deletions remove: their kind, user, call and folder
	// name the keys the gate script touches.
	var reads []*redis.MapStringStringCmd
	for _, r := range batch {
		if r.Op == OpDeletion {
			if reads == nil {
				reads = make([]*redis.MapStringStringCmd, 0, len(batch))
			}
			reads = append(reads, nil)
		}
	}
	if reads != nil {
		pipe := c.rdb.Pipeline()
		i := 0
		for _, r := range batch {
			if r.Op == OpDeletion {
				reads[i] = pipe.HGetAll(ctx, c.k.artifact(r.Deletion.Domain, r.Deletion.ID))
				i++
			}
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("catalog apply deletions: read records: %w", err)
		}
	}

	pipe := c.rdb.Pipeline()
	type gated struct {
		d   Deletion
		cmd *redis.Cmd
	}
	var gates []gated
	// Admissions wait in a group per domain, written in one call when the
	// group is full or before any other decision of the domain, so each
	// domain's decisions keep their order. Domains share no keys the
	// scripts write, so their groups may go in any order.
	groups := map[string][]Admission{}
	var domains []string
	flushGroup := func(domain string) {
		if g := groups[domain]; len(g) > 0 {
			c.applyManyRun(ctx, pipe, domain, g)
			groups[domain] = g[:0]
		}
	}
	admitted := map[[2]string]Artifact{}
	i := 0
	for _, r := range batch {
		switch r.Op {
		case OpAdmission:
			a := r.Admission.Artifact
			admitted[[2]string{a.Domain, a.ID}] = a
			pipe.HSetNX(ctx, c.k.ids(a.ID), a.ID, a.Domain)
			g, ok := groups[a.Domain]
			if !ok {
				domains = append(domains, a.Domain)
			}
			groups[a.Domain] = append(g, r.Admission)
			if len(g)+1 >= applyGroup {
				flushGroup(a.Domain)
			}
		case OpRefusal:
			f := r.Refusal
			flushGroup(f.Domain)
			if f.Reason != ErrIDConflict {
				pipe.HSetNX(ctx, c.k.ids(f.ID), f.ID, f.Domain)
			}
			c.runRefused(ctx, pipe, f)
		case OpDeletion:
			m, err := reads[i].Result()
			i++
			if err != nil {
				return fmt.Errorf("catalog apply deletion %s: %w", r.Deletion.ID, err)
			}
			d := r.Deletion
			var keys []string
			var trackType, category, kind, user, callID string
			if a, ok := admitted[[2]string{d.Domain, d.ID}]; ok {
				// Admitted earlier in this batch: the read saw the record
				// before it, the admission names the keys. Should Redis
				// hold another record of the id, the script answers
				// "moved" and the deletion is applied again below.
				keys, trackType, category = c.gateKeysOf(a)
				kind, user, callID = a.Kind, a.User, a.CallID
			} else {
				if len(m) == 0 {
					continue // never admitted here: nothing to delete
				}
				rec := recordOf(d.Domain, d.ID, m)
				if rec.State != StateAdmitted {
					continue // already deleted, or refused
				}
				keys, trackType, category = c.gateKeys(rec)
				kind, user, callID = rec.Kind, rec.User, rec.CallID
			}
			flushGroup(d.Domain)
			cmd := c.gateS.Run(ctx, pipe, keys, d.ID, "", d.At.UnixMilli(), d.Reason, d.Rule, d.Actor, kind, user, callID,
				trackType, flag(false), "", category)
			gates = append(gates, gated{d: d, cmd: cmd})
		}
	}
	for _, d := range domains {
		flushGroup(d)
	}
	if err := c.execScripts(ctx, pipe, "apply recorded decisions"); err != nil {
		return err
	}
	// A record that changed between the read and the write ("moved") is
	// deleted again on its own, reading it afresh.
	for _, g := range gates {
		res, err := g.cmd.StringSlice()
		if err != nil {
			return fmt.Errorf("catalog apply deletion %s: %w", g.d.ID, err)
		}
		if len(res) > 0 && res[0] == "moved" {
			if err := c.ApplyDeleted(ctx, g.d.Domain, g.d.ID, g.d.At, g.d.Reason, g.d.Rule, g.d.Actor); err != nil {
				return err
			}
		}
	}
	return nil
}

// applyManyRun queues one applyMany call for admissions of domain.
func (c *Catalog) applyManyRun(ctx context.Context, pipe redis.Pipeliner, domain string, group []Admission) {
	keys := make([]string, 0, 2+6*len(group))
	keys = append(keys, c.k.usage(domain), c.k.daily(domain))
	n := 0
	for _, ad := range group {
		n += 16 + len(ad.Artifact.fields)
	}
	args := make([]any, 0, n)
	for _, ad := range group {
		a := ad.Artifact
		sk := c.scriptKeys(a, ad.EvictedID) // art, idx, uidx, call, usage, track, daily, holds, victim
		keys = append(keys, sk[0], sk[1], sk[2], sk[3], sk[5], sk[8])
		args = append(args, a.admitArgs()...)
		var extra []any
		if ad.EvictedID != "" {
			extra = append(extra, "ev", ad.EvictedID)
		}
		args = append(args, ad.EvictedID, a.AcceptedAt.UnixMilli(), len(a.fields)+len(extra))
		args = append(args, a.fields...)
		args = append(args, extra...)
	}
	c.applyMany.Run(ctx, pipe, keys, args...)
}
