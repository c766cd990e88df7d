package catalog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Replay writes recorded decisions as the live scripts did, without
// deciding anything: no cap is checked and nothing is owed.

// Admission is one recorded admission decision, as replay applies it.
type Admission struct {
	Artifact  Artifact
	EvictedID string
	// CallLevel is the call index level the live admission used.
	CallLevel int
}

// Refusal is one recorded refusal: what its record keeps, and the
// artifact's own time, which its id's claim names.
type Refusal struct {
	Domain, ID, Kind, ObjectKey, Reason string
	Size                                int64
	Seq                                 uint64
	AcceptedAt                          time.Time
	At                                  time.Time
}

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
	// opEviction is what an admission that evicted did to its victim
	// (marked deleted, out of the folder, its usage given back), without
	// the admission itself: the build writes the admission with plain
	// commands and this after it.
	opEviction
)

// applyManyScript writes recorded admissions of one domain, as the decide
// script wrote them one after the other, in one call: usage, daily bytes
// and monthly counters are added up and written once. An artifact an
// admission evicted is removed and marked deleted in the same step, as
// it was live.
// KEYS: 1 usage, 2 daily, 3 call count, then per admission 7: bucket,
// bitmap, user index, call bucket, track, the victim's bucket, years.
// ARGV per admission (17): field, record, bit, user score, call field,
// hour, size, category, track type, score, counter expiry, day, victim
// field, victim's encoded id, accepted at (ms), id, year bit.
const applyManyScript = recLua + indexLua + `
local usage, daily, counters, expires = {}, {}, {}, {}
local total, written, calls = 0, 0, 0
local a, k = 1, 4
while a <= #ARGV do
  local bucket, field = KEYS[k], ARGV[a]
  if redis.call('HEXISTS', bucket, field) == 0 then
    local rec, size, category, trackType, track = ARGV[a + 1], tonumber(ARGV[a + 6]), ARGV[a + 7], ARGV[a + 8], KEYS[k + 4]
    local u = usage[category]
    if not u then
      u = {0, 0}
      usage[category] = u
    end
    if ARGV[a + 12] ~= '' then
      local vraw = redis.call('HGET', KEYS[k + 5], ARGV[a + 12])
      if vraw then
        local v = up(vraw)
        if string.sub(v[1], 1, 1) == 'a' then
          redis.call('ZREM', track, ARGV[a + 12])
          u[1], u[2], total = u[1] - v[5], u[2] - 1, total - v[5]
          redis.call('HSET', KEYS[k + 5], ARGV[a + 12], markDeleted(v, '', 'cap_evicted', 'folder cap: the oldest makes room for ' .. ARGV[a + 15], 'policy', ARGV[a + 14]))
        end
      end
      local t = up(rec)
      t[17] = ARGV[a + 13]
      rec = pk(t)
    end
    index(bucket, field, rec, KEYS[k + 1], ARGV[a + 2], KEYS[k + 2], ARGV[a + 3], KEYS[k + 3], ARGV[a + 4], ARGV[a + 5], '', track, trackType, ARGV[a + 9], KEYS[k + 6], ARGV[a + 16])
    if ARGV[a + 4] ~= '' then calls = calls + 1 end
    u[1], u[2], total = u[1] + size, u[2] + 1, total + size
    daily[ARGV[a + 11]] = (daily[ARGV[a + 11]] or 0) + size
    if trackType == 'counter' then
      counters[track] = (counters[track] or 0) + 1
      expires[track] = ARGV[a + 10]
    end
    written = written + 1
  end
  a = a + 17
  k = k + 7
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
  if calls > 0 then redis.call('INCRBY', KEYS[3], calls) end
end
return written
`

// evictScript applies what a recorded admission did to the artifact it
// evicted, as applyMany does: an admitted victim leaves the folder, gives
// its usage back and is marked deleted by the cap.
// KEYS: the victim's bucket, the folder, usage. ARGV: the victim's field,
// the admitted id, accepted at (ms), category.
const evictScript = recLua + indexLua + `
local vraw = redis.call('HGET', KEYS[1], ARGV[1])
if not vraw then return 0 end
local v = up(vraw)
if string.sub(v[1], 1, 1) ~= 'a' then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[4] .. ':bytes', -v[5])
redis.call('HINCRBY', KEYS[3], ARGV[4] .. ':count', -1)
redis.call('HINCRBY', KEYS[3], 'total:bytes', -v[5])
redis.call('HSET', KEYS[1], ARGV[1], markDeleted(v, '', 'cap_evicted', 'folder cap: the oldest makes room for ' .. ARGV[2], 'policy', ARGV[3]))
return 1
`

// refusedScript writes a recorded refusal.
const refusedScript = recLua + `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
local t = up(ARGV[2])
t[16] = ARGV[3]
redis.call('HSET', KEYS[1], ARGV[1], pk(t))
return 1
`

// applyGroup is the most admissions of one domain one applyMany call
// writes.
const applyGroup = 128

// ApplyAdmissions writes recorded admissions in one pipeline, in order.
func (c *Catalog) ApplyAdmissions(ctx context.Context, batch []Admission) error {
	rs := make([]Recorded, len(batch))
	for i, a := range batch {
		rs[i] = Recorded{Op: OpAdmission, Admission: a}
	}
	return c.ApplyRecorded(ctx, rs)
}

// ApplyRefusals writes recorded refusals in one pipeline.
func (c *Catalog) ApplyRefusals(ctx context.Context, batch []Refusal) error {
	rs := make([]Recorded, len(batch))
	for i, r := range batch {
		rs[i] = Recorded{Op: OpRefusal, Refusal: r}
	}
	return c.ApplyRecorded(ctx, rs)
}

// ApplyRecorded writes recorded decisions of every kind in stream order,
// as the live scripts wrote them one by one, in two round trips per batch
// (three when it deletes what an earlier batch admitted): the claims and
// records the deletions remove are read, then one pipeline writes
// everything. A deletion of an artifact admitted earlier in the same
// batch takes its keys from that admission. Applying a batch twice
// changes nothing.
func (c *Catalog) ApplyRecorded(ctx context.Context, batch []Recorded) error {
	if len(batch) == 0 {
		return nil
	}
	return retryOnReload(func() error { return c.applyRecorded(ctx, batch) })
}

func (c *Catalog) applyRecorded(ctx context.Context, batch []Recorded) error {
	var named []string
	for _, r := range batch {
		switch r.Op {
		case OpAdmission:
			if err := CheckArtifact(r.Admission.Artifact); err != nil {
				return err
			}
			named = append(named, r.Admission.Artifact.Domain)
		case OpRefusal:
			named = append(named, r.Refusal.Domain)
		}
	}
	nums, err := c.domainNumbers(ctx, named)
	if err != nil {
		return err
	}
	// The records deletions remove, and the buckets of the artifacts
	// admissions evicted, unless admitted in this batch.
	admittedHere := map[[2]string]Artifact{}
	victims := map[[2]string]stored{}
	evicted := map[[2]string]string{}
	var deleted [][2]string
	var evictedClaims []*redis.StringCmd
	var evictedKeys [][2]string
	claimPipe := c.rdb.Pipeline()
	for _, r := range batch {
		switch r.Op {
		case OpAdmission, opEviction:
			a := r.Admission.Artifact
			if id := r.Admission.EvictedID; id != "" {
				k := [2]string{a.Domain, id}
				if v, ok := admittedHere[k]; ok {
					evicted[k] = c.place(v, 0).bucket
				} else if _, ok := evicted[k]; !ok {
					h := hashID(id)
					evicted[k] = ""
					evictedKeys = append(evictedKeys, k)
					evictedClaims = append(evictedClaims, claimPipe.HGet(ctx, c.k.claims(h), h.claim))
				}
			}
			if r.Op == OpAdmission {
				admittedHere[[2]string{a.Domain, a.ID}] = a
			}
		case OpDeletion:
			k := [2]string{r.Deletion.Domain, r.Deletion.ID}
			if _, ok := admittedHere[k]; ok {
				continue
			}
			if _, ok := victims[k]; ok {
				continue
			}
			victims[k] = stored{}
			deleted = append(deleted, k)
		}
	}
	if err := c.findMany(ctx, deleted, victims); err != nil {
		return err
	}
	if len(evictedClaims) > 0 {
		if _, err := claimPipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("catalog apply evictions: %w", err)
		}
		for i, cmd := range evictedClaims {
			k := evictedKeys[i]
			evicted[k] = c.k.absent(k[0])
			if cl, err := parseClaim(cmd.Val()); cmd.Err() == nil && err == nil {
				evicted[k] = c.k.bucket(k[0], cl.class, cl.hour)
			}
		}
	}

	pipe := c.rdb.Pipeline()
	groups := map[string][]Admission{}
	var domains []string
	flush := func(domain string) {
		if g := groups[domain]; len(g) > 0 {
			c.applyManyRun(ctx, pipe, domain, g, evicted)
			groups[domain] = g[:0]
		}
	}
	admitted := map[[2]string]Admission{}
	for _, r := range batch {
		switch r.Op {
		case OpAdmission:
			a := r.Admission.Artifact
			admitted[[2]string{a.Domain, a.ID}] = r.Admission
			p := c.place(a, r.Admission.CallLevel)
			h := hashID(a.ID)
			pipe.HSetNX(ctx, c.k.claims(h), h.claim, claimValue(nums[a.Domain], p.class, p.hour))
			g, ok := groups[a.Domain]
			if !ok {
				domains = append(domains, a.Domain)
			}
			groups[a.Domain] = append(g, r.Admission)
			if len(g)+1 >= applyGroup {
				flush(a.Domain)
			}
		case OpRefusal:
			f := r.Refusal
			flush(f.Domain)
			h := hashID(f.ID)
			// The live decision claimed the id before refusing it (unless
			// another domain owned it). Refusals recorded without the
			// artifact's time cannot name the claim's hour, and claim
			// nothing.
			if f.Reason != ErrIDConflict && !f.At.IsZero() {
				pipe.HSetNX(ctx, c.k.claims(h), h.claim, claimValue(nums[f.Domain], classOf(f.Kind), hourOf(f.At)))
			}
			c.refused.Run(ctx, pipe, []string{c.k.refused(f.Domain)}, h.field, f.stored("r").pack(f.Domain, true), f.Reason)
		case opEviction:
			ad := r.Admission
			a := ad.Artifact
			flush(a.Domain)
			victim := [2]string{a.Domain, ad.EvictedID}
			track := c.k.absent(a.Domain)
			if a.trackType == trackSet {
				track = a.trackKey
			}
			c.evict.Run(ctx, pipe, []string{evicted[victim], track, c.k.usage(a.Domain)},
				hashID(ad.EvictedID).field, a.ID, a.AcceptedAt.UnixMilli(), a.Category)
		case OpDeletion:
			d := r.Deletion
			flush(d.Domain)
			var g gated
			k := [2]string{d.Domain, d.ID}
			if ad, ok := admitted[k]; ok {
				g = c.gateOfArtifact(ad.Artifact, ad.CallLevel, ad.Artifact.Category)
			} else {
				s := victims[k]
				if s.ID == "" || s.State != StateAdmitted {
					continue // never admitted here, refused, or deleted already
				}
				g = c.gateOf(d.Domain, s)
			}
			c.gateS.Run(ctx, pipe, g.keys, g.field, encodeID(d.ID), "", d.At.UnixMilli(), d.Reason, d.Rule, d.Actor, flag(false), "",
				g.category, g.trackType, g.ch, g.hour)
		}
	}
	for _, d := range domains {
		flush(d)
	}
	return c.execScripts(ctx, pipe, "apply recorded decisions")
}

// findMany reads the records of many (domain, id) pairs into out, as find
// does for one, in two round trips: the claims and refusals, then the
// buckets the claims name. A pair with no record is left out.
func (c *Catalog) findMany(ctx context.Context, pairs [][2]string, out map[[2]string]stored) error {
	if len(pairs) == 0 {
		return nil
	}
	type probe struct {
		claim, refused *redis.StringCmd
		bucket         *redis.StringCmd
		hour           int64
	}
	probes := make([]probe, len(pairs))
	pipe := c.rdb.Pipeline()
	for i, k := range pairs {
		h := hashID(k[1])
		probes[i].claim = pipe.HGet(ctx, c.k.claims(h), h.claim)
		probes[i].refused = pipe.HGet(ctx, c.k.refused(k[0]), h.field)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("catalog read records: %w", err)
	}
	pipe = c.rdb.Pipeline()
	n := 0
	for i, k := range pairs {
		if probes[i].claim.Err() != nil {
			continue
		}
		cl, err := parseClaim(probes[i].claim.Val())
		if err != nil {
			return err
		}
		num, ok, err := c.lookupNumber(ctx, k[0])
		if err != nil {
			return err
		}
		if ok && cl.num == num {
			probes[i].bucket, probes[i].hour = pipe.HGet(ctx, c.k.bucket(k[0], cl.class, cl.hour), hashID(k[1]).field), cl.hour
			n++
		}
	}
	if n > 0 {
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("catalog read records: %w", err)
		}
	}
	for i, k := range pairs {
		p := probes[i]
		raw, hour := "", int64(0)
		switch {
		case p.bucket != nil && p.bucket.Err() == nil:
			raw, hour = p.bucket.Val(), p.hour
		case p.refused.Err() == nil:
			raw = p.refused.Val()
		default:
			delete(out, k)
			continue
		}
		s, err := unpackStored(k[0], hour, raw)
		if err != nil {
			return fmt.Errorf("catalog record %s: %w", k[1], err)
		}
		if s.ID != k[1] {
			delete(out, k)
			continue
		}
		out[k] = s
	}
	return nil
}

// applyManyRun queues one applyMany call for admissions of domain.
func (c *Catalog) applyManyRun(ctx context.Context, pipe redis.Pipeliner, domain string, group []Admission, evicted map[[2]string]string) {
	keys := make([]string, 0, 3+7*len(group))
	keys = append(keys, c.k.usage(domain), c.k.daily(domain), c.k.callCount(domain))
	args := make([]any, 0, 17*len(group))
	for _, ad := range group {
		a := ad.Artifact
		p := c.place(a, ad.CallLevel)
		victimBucket, victimField, victimEID := p.bucket, "", ""
		if ad.EvictedID != "" {
			victimField, victimEID = hashID(ad.EvictedID).field, encodeID(ad.EvictedID)
			victimBucket = evicted[[2]string{domain, ad.EvictedID}]
		}
		track := p.track
		keys = append(keys, p.bucket, p.bitmap, p.uidx, p.callKey, track, victimBucket, p.years)
		args = append(args, p.field, a.packed(StateAdmitted, "", ad.CallLevel), p.bit, p.uscore, p.ch, p.hour, a.Size, a.Category,
			a.trackType, a.Score, monthExpiry(a.AcceptedAt), a.AcceptedAt.UTC().Format("20060102"), victimField, victimEID,
			a.AcceptedAt.UnixMilli(), a.ID, p.yearBit)
	}
	c.applyMany.Run(ctx, pipe, keys, args...)
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
	for _, s := range []*redis.Script{c.decide, c.done, c.gateS, c.applyMany, c.refused, c.provision, c.number, c.mark, c.appendS, c.evict} {
		if err := s.Load(ctx, c.rdb).Err(); err != nil {
			return fmt.Errorf("catalog: load script: %w", err)
		}
	}
	return nil
}
