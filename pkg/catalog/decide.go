package catalog

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// State is what admission (or a later deletion) decided about an artifact.
// The record keeps it, so a redelivered event repeats the recorded
// decision instead of deciding again under today's caps.
type State string

const (
	StateAdmitted State = "a"
	StateRefused  State = "r"
	StateDeleted  State = "d"
)

// Effects still owed for a decision, kept in the record after its state
// letter and cleared one by one once done. They run in the order of the
// string.
const (
	EffectPublish     = 'P' // publish the admitted or refused decision event
	EffectRemoveMedia = 'M' // delete the artifact's media from the CDS
	EffectTombstone   = 'T' // publish the tombstone (after the media is gone)
)

// Pending effects of each decision.
const (
	pendingAdmitted = "P"
	pendingDeleted  = "MT"
)

// CapMode says how a cap is enforced at admission.
type CapMode string

const (
	// NoCap: nothing is enforced (the kind is still tracked).
	NoCap CapMode = ""
	// RefuseAtLimit refuses once the tracked set holds Limit entries (a
	// voicemail box).
	RefuseAtLimit CapMode = "set_refuse"
	// EvictOldest evicts the oldest entry of the tracked set, through the
	// same hold and minimum checks as every deletion (an SMS folder).
	EvictOldest CapMode = "set_evict"
	// MonthlyLimit refuses once the month's counter reaches Limit (the
	// monthly recording cap).
	MonthlyLimit CapMode = "counter_refuse"
)

// CapCheck is the effective cap of the artifact being admitted.
type CapCheck struct {
	Mode  CapMode
	Limit int64
	// EvictBefore: with EvictOldest, only an entry received before it (the
	// admission time minus the minimum storage duration) may be evicted.
	EvictBefore time.Time
}

// Decision is the outcome of admitting one artifact.
type Decision struct {
	// Repeat is true when the decision was recorded by an earlier delivery:
	// nothing was decided now.
	Repeat bool
	State  State
	// Reason of a refusal, e.g. "box_full", "monthly_cap", "id_conflict".
	Reason string
	// Pending effects still owed, in order (see Effect*).
	Pending string
	// EvictedID is the artifact the cap evicted to make room.
	EvictedID string
	// CallLevel is the level of the call index the admitted recording's
	// call entry went to; the admitted event carries it, so a replay puts
	// the entry where the live admission did.
	CallLevel int
	// TotalBytes is the domain's usage after a fresh admission.
	TotalBytes int64
}

// Admitted reports whether the artifact is in the catalog.
func (d Decision) Admitted() bool { return d.State == StateAdmitted }

// Tracking of each kind: a set (boxes, folders) or a monthly counter
// (recordings). Every admission of the kind is tracked whether or not a
// cap applies today, so a cap set later counts what is already stored and
// a rebuild writes the same keys as the live admissions did.
const (
	trackSet     = "set"
	trackCounter = "counter"
)

// Artifact is what admission decides on: a recording or a message, with
// its keys derived from its tenant and kind.
type Artifact struct {
	ID, Reseller, Domain, User, CallID string
	// Kind is the catalog kind ("recording", "voicemail", "sms", ...);
	// Category the usage category it counts under.
	Kind, Category string
	// Score orders the time indexes: started_at or received_at, in ms.
	Score     int64
	Size      int64
	ObjectKey string
	Seq       uint64
	// AcceptedAt is when ingest accepted the artifact: months, daily usage
	// and minimums count from it, never from the clock.
	AcceptedAt time.Time
	trackType  string
	trackKey   string
	rec        stored
}

// placement is where an artifact's record and index entries go.
type placement struct {
	class        string
	hour         int64
	bucket       string
	field        string
	eid          string
	bitmap       string
	bit          int64
	years        string
	yearBit      int64
	uidx, uscore string
	callKey, ch  string
	level        int
	track        string
}

func (c *Catalog) place(a Artifact, level int) placement {
	at := time.UnixMilli(a.Score).UTC()
	p := placement{class: classOf(a.Kind), hour: hourOf(at), field: hashID(a.ID).field, eid: encodeID(a.ID), level: level}
	p.bucket = c.k.bucket(a.Domain, p.class, p.hour)
	p.bitmap, p.bit = c.k.hourBit(a.Domain, p.class, p.hour)
	p.years, p.yearBit = c.k.years(a.Domain, p.class), int64(at.Year()-1970)
	p.uidx, p.callKey, p.track = c.k.absent(a.Domain), c.k.absent(a.Domain), c.k.absent(a.Domain)
	if a.Kind == KindRecording && a.User != "" {
		p.uidx = c.k.userIndex(a.Domain, a.User, monthOf(at))
		p.uscore = strconv.FormatInt(a.Score-monthStart(at).UnixMilli(), 10)
	}
	if a.Kind == KindRecording && a.CallID != "" {
		p.callKey, p.ch = c.k.callKey(a.Domain, a.CallID, level)
	}
	if a.trackKey != "" {
		p.track = a.trackKey
	}
	return p
}

// packed is the artifact's record with state and owed effects.
func (a Artifact) packed(state State, pending string, level int) string {
	s := a.rec
	s.State, s.Pending, s.Level = state, pending, level
	if a.Kind != KindRecording || a.CallID == "" {
		s.Level = 0
	}
	return s.pack(a.Domain, false)
}

// refusal is the record a refusal of a keeps: only what its owed effects
// need, and what the refused event carries, so a replay writes the same.
func (a Artifact) refusal() Refusal {
	return Refusal{Domain: a.Domain, ID: a.ID, Kind: a.Kind, ObjectKey: a.ObjectKey, Size: a.Size, Seq: a.Seq, AcceptedAt: a.AcceptedAt, At: a.rec.At}
}

// stored is the refusal's record, with state and owed effects in st
// (the reason is the script's to write).
func (r Refusal) stored(st string) stored {
	s := stored{State: State(st[:1]), Pending: st[1:], ID: r.ID, Kind: r.Kind, Size: r.Size, ObjectKey: r.ObjectKey,
		AcceptedAt: r.AcceptedAt, Seq: r.Seq, At: time.UnixMilli(0).UTC()}
	if r.Kind == KindRecording {
		s.Mode = "automatic"
	}
	return s
}

const decideScript = recLua + indexLua + `
local conflict = ARGV[15] == 'conflict'
local cur = false
if not conflict then cur = redis.call('HGET', KEYS[1], ARGV[1]) end
if not cur then cur = redis.call('HGET', KEYS[11], ARGV[1]) end
if cur then
  local t = up(cur)
  if t[2] ~= ARGV[2] then return {5} end
  return {0, string.sub(t[1], 1, 1), t[16] or '', string.sub(t[1], 2), t[17] or '', tostring(t[12])}
end
local function refuse(reason)
  local t = up(ARGV[22])
  t[16] = reason
  redis.call('HSET', KEYS[11], ARGV[1], pk(t))
  return {1, 'r', reason, 'MP', '', '0'}
end
if conflict then return refuse('id_conflict') end
local callKey, lvl = KEYS[4], tonumber(ARGV[14])
if ARGV[6] ~= '' then
  local l = level(tonumber(redis.call('GET', KEYS[10]) or '0'))
  if l == lvl + 1 then
    callKey, lvl = KEYS[12], l
  elseif l == lvl + 2 then
    callKey, lvl = KEYS[14], l
  elseif l ~= lvl then
    return {4, tostring(l)}
  end
end
local mode, limit, size, category = ARGV[16], tonumber(ARGV[17]), tonumber(ARGV[8]), ARGV[9]
local rec, evicted = ARGV[3], ''
if lvl ~= tonumber(ARGV[14]) then
  local t = up(rec)
  t[12] = lvl
  rec = pk(t)
end
if mode == 'set_refuse' then
  if redis.call('ZCARD', KEYS[6]) >= limit then return refuse('box_full') end
elseif mode == 'counter_refuse' then
  if tonumber(redis.call('GET', KEYS[6]) or '0') >= limit then return refuse('monthly_cap') end
elseif mode == 'set_evict' then
  if redis.call('ZCARD', KEYS[6]) >= limit then
    local oldest = redis.call('ZRANGE', KEYS[6], 0, 0, 'WITHSCORES')
    if oldest[1] ~= ARGV[19] then return {2} end
    if tonumber(oldest[2]) >= tonumber(ARGV[18]) then return refuse('folder_full_within_minimum') end
    local vraw = redis.call('HGET', KEYS[9], ARGV[19])
    if not vraw then return {2} end
    local v = up(vraw)
    if string.find(v[1], 'P', 2, true) then return {3} end
    if held(KEYS[8], v[6], callOf(v)) then return refuse('folder_full_under_hold') end
    unindex(v, ARGV[19], KEYS[3], KEYS[4], '', '', KEYS[5], KEYS[6], 'set', category)
    redis.call('HSET', KEYS[9], ARGV[19], markDeleted(v, 'MT', 'cap_evicted', 'folder cap: the oldest makes room for ' .. ARGV[20], 'policy', ARGV[21]))
    evicted = v[2]
    local t = up(rec)
    t[17] = evicted
    rec = pk(t)
  end
end
index(KEYS[1], ARGV[1], rec, KEYS[2], ARGV[4], KEYS[3], ARGV[5], callKey, ARGV[6], ARGV[7], KEYS[10], KEYS[6], ARGV[10], ARGV[11], KEYS[13], ARGV[23])
redis.call('HINCRBY', KEYS[5], category .. ':bytes', size)
redis.call('HINCRBY', KEYS[5], category .. ':count', 1)
local total = redis.call('HINCRBY', KEYS[5], 'total:bytes', size)
redis.call('HINCRBY', KEYS[7], ARGV[13], size)
if ARGV[10] == 'counter' then
  redis.call('INCR', KEYS[6])
  redis.call('EXPIREAT', KEYS[6], tonumber(ARGV[12]))
end
return {1, 'a', '', 'P', evicted, tostring(lvl), tostring(total)}
`

// monthExpiry is when a monthly counter may go: ten days after its month
// ends. It is absolute, so a counter rebuilt for a past month expires at
// once, exactly as the live one did.
func monthExpiry(t time.Time) int64 {
	t = t.UTC()
	return time.Date(t.Year(), t.Month()+1, 11, 0, 0, 0, 0, time.UTC).Unix()
}

// ErrPublishPending: the artifact a deletion or an eviction would remove
// still owes the publish of its own admission. Deleting it now would send
// its tombstone before (or without) its admission, so the caller retries
// once that publish is confirmed.
var ErrPublishPending = errors.New("the artifact's admission is not published yet")

// ErrHashCollision: another id of the domain has the same 64-bit hash in
// the same hour (about one chance in 10^9 over a billion recordings). The
// event is not decided; its media stays, and it reaches the dead letters.
var ErrHashCollision = errors.New("catalog: another id of the domain has the same hash in this hour")

// ErrIDConflict is the reason recorded when an id is already used by
// another domain: ids are global.
const ErrIDConflict = "id_conflict"

// claimed is where an id's claim says its record is.
type claimed struct {
	num   int64
	class string
	hour  int64
}

// claimValue packs a claim: domain number (up to 2^37), class bit, and
// the hour since 1970 in 25 bits (CheckArtifact keeps times within
// 1970 to October 5797).
func claimValue(num int64, class string, hour int64) int64 {
	v := num<<26 | (hour - claimEpoch)
	if class == classMessage {
		v |= 1 << 25
	}
	return v
}

func parseClaim(s string) (claimed, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return claimed{}, fmt.Errorf("catalog: malformed id claim %q", s)
	}
	cl := claimed{num: v >> 26, class: classRecording, hour: v&(1<<25-1) + claimEpoch}
	if v&(1<<25) != 0 {
		cl.class = classMessage
	}
	return cl, nil
}

// claimedAs is what the claim step found for one artifact.
type claimedAs struct {
	// mode is the decide script's mode: the cap mode, or "conflict" when
	// another domain owns the id.
	mode string
	// elsewhere: an earlier event of the id, with another time, holds
	// this domain's claim; its recorded decision stands.
	elsewhere bool
	// level is the call index level the domain's call count gives now.
	level int
	err   error
}

// claimAll checks each artifact and claims its id for its domain at its
// class and hour unless the id is claimed already or the domain's record
// of it is an id_conflict refusal: one round trip reads the claims, those
// refusals and the domains' call counts, a second claims the ids nobody
// holds (a redelivery of a decided id needs only the first). Only
// admission claims: a request that fails before its event is durably
// published claims nothing.
func (c *Catalog) claimAll(ctx context.Context, batch []Pending) []claimedAs {
	out := make([]claimedAs, len(batch))
	var named []string
	for i, p := range batch {
		if out[i].err = CheckArtifact(p.Artifact); out[i].err == nil {
			named = append(named, p.Artifact.Domain)
		}
	}
	nums, err := c.domainNumbers(ctx, named)
	if err != nil {
		for i := range out {
			out[i].err = cmp.Or(out[i].err, err)
		}
		return out
	}
	// First what is on record: the claim, and the domain's refusal of the
	// id if any. A domain whose record of the id is an id_conflict refusal
	// never claims it, even when the claim is gone (a rebuild restores no
	// claim for an owner whose admission was never published, and the
	// refused domain's redelivery must not take the id from it).
	claims := make([]*redis.StringCmd, len(batch))
	refusals := make([]*redis.StringCmd, len(batch))
	counts := map[string]*redis.StringCmd{}
	pipe := c.rdb.Pipeline()
	for i, p := range batch {
		if out[i].err != nil {
			continue
		}
		a := p.Artifact
		h := hashID(a.ID)
		claims[i] = pipe.HGet(ctx, c.k.claims(h), h.claim)
		refusals[i] = pipe.HGet(ctx, c.k.refused(a.Domain), h.field)
		if counts[a.Domain] == nil {
			counts[a.Domain] = pipe.Get(ctx, c.k.callCount(a.Domain))
		}
	}
	fail := func(err error) []claimedAs {
		for i, p := range batch {
			out[i].err = cmp.Or(out[i].err, fmt.Errorf("catalog claim %s: %w", p.Artifact.ID, err))
		}
		return out
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fail(err)
	}
	// Then the claims of ids nobody holds yet.
	pipe = c.rdb.Pipeline()
	unclaimed := 0
	for i, p := range batch {
		if out[i].err != nil || claims[i].Err() == nil {
			continue
		}
		a := p.Artifact
		if s, err := unpackStored(a.Domain, 0, refusals[i].Val()); refusals[i].Err() == nil && err == nil && s.ID == a.ID && s.Reason == ErrIDConflict {
			out[i].mode = "conflict"
			continue
		}
		pl := c.place(a, 0)
		h := hashID(a.ID)
		pipe.HSetNX(ctx, c.k.claims(h), h.claim, claimValue(nums[a.Domain], pl.class, pl.hour))
		claims[i] = pipe.HGet(ctx, c.k.claims(h), h.claim)
		unclaimed++
	}
	if unclaimed > 0 {
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return fail(err)
		}
	}
	for i, p := range batch {
		if out[i].err != nil {
			continue
		}
		a := p.Artifact
		n, _ := strconv.ParseInt(counts[a.Domain].Val(), 10, 64)
		out[i].level = callLevel(n)
		if out[i].mode == "conflict" {
			continue
		}
		cl, err := parseClaim(claims[i].Val())
		if err != nil {
			out[i].err = err
			continue
		}
		pl := c.place(a, 0)
		out[i].mode = string(p.Cap.Mode)
		switch {
		case cl.num != nums[a.Domain]:
			out[i].mode = "conflict"
		case cl.class != pl.class || cl.hour != pl.hour:
			out[i].elsewhere = true
		}
	}
	return out
}

// Decide admits or refuses a in one atomic step with its catalog write and
// records the decision with the effects still owed. A repeated call (a
// redelivery) returns the recorded decision with Repeat set, whatever the
// caps say now.
//
// The id is claimed first, in the global registry: the claim names the
// domain and the hour its record is in. An id another domain owns is
// refused as id_conflict in this domain's own refusals, so the
// owner's artifact is neither touched nor revealed.
func (c *Catalog) Decide(ctx context.Context, a Artifact, cap CapCheck) (Decision, error) {
	cl := c.claimAll(ctx, []Pending{{Artifact: a, Cap: cap}})[0]
	switch {
	case cl.err != nil:
		return Decision{}, cl.err
	case cl.elsewhere:
		return c.repeatAt(ctx, a.Domain, a.ID)
	}
	mode, level := cl.mode, cl.level
	evictBefore := ""
	if cap.Mode == EvictOldest {
		evictBefore = strconv.FormatInt(cap.EvictBefore.UnixMilli(), 10)
	}
	for attempt := 0; attempt < 64; attempt++ {
		if attempt > 0 {
			time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
		}
		victimBucket, victimField := "", ""
		if cap.Mode == EvictOldest && mode != "conflict" {
			zs, err := c.rdb.ZRangeWithScores(ctx, a.trackKey, 0, 0).Result()
			if err != nil {
				return Decision{}, fmt.Errorf("catalog decide %s: oldest: %w", a.ID, err)
			}
			if len(zs) == 1 {
				victimField, _ = zs[0].Member.(string)
				victimBucket = c.k.bucket(a.Domain, classMessage, floorDiv(int64(zs[0].Score), hourMS))
			}
		}
		keys, args := c.decideCall(a, cap, mode, level, evictBefore, victimBucket, victimField)
		res, err := c.decide.Run(ctx, c.rdb, keys, args...).Slice()
		if err != nil {
			return Decision{}, fmt.Errorf("catalog decide %s: %w", a.ID, err)
		}
		switch code, _ := res[0].(int64); code {
		case 2:
			continue // the folder's oldest changed under us: read it again
		case 3:
			return Decision{}, fmt.Errorf("catalog decide %s: evict: %w", a.ID, ErrPublishPending)
		case 4:
			s, _ := res[1].(string)
			level, _ = strconv.Atoi(s)
			continue // the call index grew a level: place the entry there
		case 5:
			return Decision{}, fmt.Errorf("catalog decide %s: %w", a.ID, ErrHashCollision)
		}
		return decisionOf(res), nil
	}
	return Decision{}, fmt.Errorf("catalog decide %s: the folder kept changing", a.ID)
}

// decideCall is the decide script's keys and arguments for a at call
// index level (the script may also use level+1 or level+2: their keys are
// declared too). ARGV[15] is the script's mode ('conflict' or the cap mode); the
// cap mode proper is ARGV[16], kept apart so a conflict never reads a cap.
func (c *Catalog) decideCall(a Artifact, cap CapCheck, mode string, level int, evictBefore, victimBucket, victimField string) ([]string, []any) {
	p := c.place(a, level)
	next, next2 := c.k.absent(a.Domain), c.k.absent(a.Domain)
	if p.ch != "" {
		next, _ = c.k.callKey(a.Domain, a.CallID, level+1)
		next2, _ = c.k.callKey(a.Domain, a.CallID, level+2)
	}
	if victimBucket == "" {
		victimBucket = p.bucket
	}
	keys := []string{p.bucket, p.bitmap, p.uidx, p.callKey, c.k.usage(a.Domain), c.trackOrUsage(a), c.k.daily(a.Domain),
		c.k.holds(a.Domain), victimBucket, c.k.callCount(a.Domain), c.k.refused(a.Domain), next, p.years, next2}
	args := []any{p.field, p.eid, a.packed(StateAdmitted, pendingAdmitted, level), p.bit, p.uscore, p.ch, p.hour, a.Size, a.Category,
		a.trackType, a.Score, monthExpiry(a.AcceptedAt), a.AcceptedAt.UTC().Format("20060102"), level, mode, string(cap.Mode), cap.Limit,
		evictBefore, victimField, a.ID, a.AcceptedAt.UnixMilli(), a.refusal().stored("rMP").pack(a.Domain, true), p.yearBit}
	return keys, args
}

func (c *Catalog) trackOrUsage(a Artifact) string {
	if a.trackKey != "" {
		return a.trackKey
	}
	return c.k.usage(a.Domain)
}

func decisionOf(res []any) Decision {
	str := func(i int) string {
		if i >= len(res) {
			return ""
		}
		s, _ := res[i].(string)
		return s
	}
	code, _ := res[0].(int64)
	d := Decision{Repeat: code == 0, State: State(str(1)), Reason: str(2), Pending: str(3), EvictedID: decodeID(str(4))}
	d.CallLevel, _ = strconv.Atoi(str(5))
	d.TotalBytes, _ = strconv.ParseInt(str(6), 10, 64)
	return d
}

// repeatAt answers the decision recorded where the claim points.
func (c *Catalog) repeatAt(ctx context.Context, domain, id string) (Decision, error) {
	s, _, err := c.find(ctx, domain, id)
	if err != nil {
		return Decision{}, fmt.Errorf("catalog decide %s: the id is claimed at another time and %w", id, err)
	}
	return Decision{Repeat: true, State: s.State, Reason: s.Reason, Pending: s.Pending, EvictedID: s.EvictedID, CallLevel: s.Level}, nil
}

// Record is an artifact's decision record as stored.
type Record struct {
	ID, Domain, User, CallID string
	Kind, Folder, Mode       string
	Reseller                 string
	State                    State
	Reason, Rule, Actor      string
	Pending                  string
	EvictedID                string
	ObjectKey                string
	SHA256                   string
	Size                     int64
	Seq                      uint64
	StartedAt                time.Time
	AcceptedAt               time.Time
	DeletedAt                time.Time
}

// ErrNoRecord is returned for an artifact the catalog has never decided.
var ErrNoRecord = errors.New("catalog: no record")

// find reads the record of id in domain wherever it is: in the bucket its
// claim names when the domain owns the id, else (or when the bucket has
// none) in the domain's refusals. It returns the key the record is in.
func (c *Catalog) find(ctx context.Context, domain, id string) (stored, string, error) {
	h := hashID(id)
	pipe := c.rdb.Pipeline()
	claim := pipe.HGet(ctx, c.k.claims(h), h.claim)
	refused := pipe.HGet(ctx, c.k.refused(domain), h.field)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return stored{}, "", fmt.Errorf("catalog record %s: %w", id, err)
	}
	if claim.Err() == nil {
		cl, err := parseClaim(claim.Val())
		if err != nil {
			return stored{}, "", err
		}
		num, ok, err := c.lookupNumber(ctx, domain)
		if err != nil {
			return stored{}, "", err
		}
		if ok && cl.num == num {
			key := c.k.bucket(domain, cl.class, cl.hour)
			s, err := c.storedAt(ctx, domain, id, key, cl.hour)
			if !errors.Is(err, ErrNoRecord) {
				return s, key, err
			}
		}
	}
	if refused.Err() != nil {
		return stored{}, "", fmt.Errorf("catalog record %s: %w", id, ErrNoRecord)
	}
	s, err := unpackStored(domain, 0, refused.Val())
	if err != nil {
		return stored{}, "", fmt.Errorf("catalog record %s: %w", id, err)
	}
	if s.ID != id {
		return stored{}, "", fmt.Errorf("catalog record %s: %w", id, ErrNoRecord)
	}
	return s, c.k.refused(domain), nil
}

// storedAt reads and checks the record of id in key.
func (c *Catalog) storedAt(ctx context.Context, domain, id, key string, hour int64) (stored, error) {
	raw, err := c.rdb.HGet(ctx, key, hashID(id).field).Result()
	if errors.Is(err, redis.Nil) {
		return stored{}, fmt.Errorf("catalog record %s: %w", id, ErrNoRecord)
	}
	if err != nil {
		return stored{}, fmt.Errorf("catalog record %s: %w", id, err)
	}
	s, err := unpackStored(domain, hour, raw)
	if err != nil {
		return stored{}, fmt.Errorf("catalog record %s: %w", id, err)
	}
	if s.ID != id {
		return stored{}, fmt.Errorf("catalog record %s: %w", id, ErrNoRecord)
	}
	return s, nil
}

// Record reads the decision record of an artifact of any state.
func (c *Catalog) Record(ctx context.Context, domain, id string) (Record, error) {
	s, _, err := c.find(ctx, domain, id)
	if err != nil {
		return Record{}, err
	}
	reseller, _, err := c.DomainOwner(ctx, domain)
	if err != nil {
		return Record{}, err
	}
	return s.record(domain, reseller), nil
}

// doneScript removes one effect from a record's owed effects once it is
// done.
const doneScript = recLua + `
for _, key in ipairs(KEYS) do
  local raw = redis.call('HGET', key, ARGV[1])
  if raw then
    local t = up(raw)
    if t[2] == ARGV[2] then
      local i = string.find(t[1], ARGV[3], 2, true)
      if not i then return 0 end
      t[1] = string.sub(t[1], 1, i - 1) .. string.sub(t[1], i + 1)
      redis.call('HSET', key, ARGV[1], pk(t))
      return 1
    end
  end
end
return 0
`

// Done records that one pending effect of an artifact's decision is
// confirmed. Doing it again is harmless.
func (c *Catalog) Done(ctx context.Context, domain, id string, effect byte) error {
	bucket, err := c.claimedBucket(ctx, domain, id)
	if err != nil {
		return err
	}
	// The script looks in the bucket the claim names, then in the
	// domain's refusals, and changes only a record of this very id.
	keys := []string{bucket, c.k.refused(domain)}
	if err := c.done.Run(ctx, c.rdb, keys, hashID(id).field, encodeID(id), string(effect)).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("catalog effect %c of %s: %w", effect, id, err)
	}
	return nil
}

// claimedBucket is the bucket the id's claim names when domain owns the
// id, or the domain's never-written placeholder.
func (c *Catalog) claimedBucket(ctx context.Context, domain, id string) (string, error) {
	h := hashID(id)
	v, err := c.rdb.HGet(ctx, c.k.claims(h), h.claim).Result()
	if errors.Is(err, redis.Nil) {
		return c.k.absent(domain), nil
	}
	if err != nil {
		return "", fmt.Errorf("catalog record %s: %w", id, err)
	}
	cl, err := parseClaim(v)
	if err != nil {
		return "", err
	}
	num, ok, err := c.lookupNumber(ctx, domain)
	if err != nil {
		return "", err
	}
	if !ok || cl.num != num {
		return c.k.absent(domain), nil
	}
	return c.k.bucket(domain, cl.class, cl.hour), nil
}
