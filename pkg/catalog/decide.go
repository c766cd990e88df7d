package catalog

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// State is what admission (or a later deletion) decided about an artifact.
// The artifact hash keeps it, so a redelivered event repeats the recorded
// decision instead of deciding again under today's caps.
type State string

const (
	StateAdmitted State = "a"
	StateRefused  State = "r"
	StateDeleted  State = "d"
)

// Effects still owed for a decision, kept in the artifact hash ("pe") and
// cleared one by one once done. They run in the order of the string.
const (
	EffectPublish     = 'P' // publish the admitted or refused decision event
	EffectRemoveMedia = 'M' // delete the artifact's media from the CDS
	EffectTombstone   = 'T' // publish the tombstone (after the media is gone)
)

// Pending effects of each decision.
const (
	pendingAdmitted = "P"
	pendingRefused  = "MP"
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
	fields     []any
}

const decideScript = heldLua + removeLua + admitLua + `
local st = redis.call('HGET', KEYS[1], 'st')
if not st and redis.call('EXISTS', KEYS[1]) == 1 then st = 'a' end
if st then
  local f = redis.call('HMGET', KEYS[1], 'rs', 'pe', 'ev')
  return {0, st, f[1] or '', f[2] or '', f[3] or '', '0'}
end
local id, size, category = ARGV[1], tonumber(ARGV[3]), ARGV[4]
local mode, limit = ARGV[10], tonumber(ARGV[11])
local function refuse(reason)
  redis.call('HSET', KEYS[1], 'st', 'r', 'rs', reason, 'pe', 'MP', 'id', id, 'kind', ARGV[14], ARGV[15], ARGV[16],
    'size', ARGV[3], 'seq', ARGV[17], 'accepted_at', ARGV[18])
  return {1, 'r', reason, 'MP', '', '0'}
end
local evicted = ''
if mode == 'set_refuse' then
  if redis.call('ZCARD', KEYS[6]) >= limit then return refuse('box_full') end
elseif mode == 'counter_refuse' then
  if tonumber(redis.call('GET', KEYS[6]) or '0') >= limit then return refuse('monthly_cap') end
elseif mode == 'set_evict' then
  if redis.call('ZCARD', KEYS[6]) >= limit then
    local oldest = redis.call('ZRANGE', KEYS[6], 0, 0, 'WITHSCORES')
    if oldest[1] ~= ARGV[13] then return {2} end
    if tonumber(oldest[2]) >= tonumber(ARGV[12]) then return refuse('folder_full_within_minimum') end
    local v = redis.call('HMGET', KEYS[9], 'user', 'call_id', 'size', 'category', 'pe')
    if string.find(v[5] or '', 'P', 1, true) then return {3} end
    if held(KEYS[8], v[1] or '', v[2] or '') then return refuse('folder_full_under_hold') end
    local vsize = tonumber(v[3] or '0')
    remove(KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], 'set', oldest[1], vsize, category)
    redis.call('HSET', KEYS[9], 'st', 'd', 'pe', 'MT', 'rs', 'cap_evicted', 'ru', 'folder cap: the oldest makes room for ' .. id,
      'ac', 'policy', 'dt', ARGV[18])
    evicted = oldest[1]
  end
end
local fields = {}
for i = 19, #ARGV do fields[#fields + 1] = ARGV[i] end
local total = admit(id, ARGV[2], size, category, ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], fields, 'P', evicted)
return {1, 'a', '', 'P', evicted, tostring(total)}
`

// scriptKeys are the keys every admission script declares: 1 art, 2 idx,
// 3 uidx, 4 call, 5 usage, 6 track, 7 daily, 8 holds, 9 victim. Absent
// optional keys are replaced by the domain's never-written placeholder
// (victim: the artifact's own key, only read when there is one), so every
// key is declared and shares the domain's slot.
func (c *Catalog) scriptKeys(a Artifact, victim string) []string {
	art := c.k.artifact(a.Domain, a.ID)
	uidx, call, victimKey := c.k.absent(a.Domain), c.k.absent(a.Domain), art
	if a.User != "" {
		uidx = c.k.userIndex(a.Domain, a.User, a.Kind)
	}
	if a.CallID != "" {
		call = c.k.call(a.Domain, a.CallID)
	}
	if victim != "" {
		victimKey = c.k.artifact(a.Domain, victim)
	}
	track := a.trackKey
	if track == "" {
		track = c.k.usage(a.Domain)
	}
	return []string{art, c.k.index(a.Domain, a.Kind), uidx, call, c.k.usage(a.Domain), track, c.k.daily(a.Domain), c.k.holds(a.Domain), victimKey}
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// admitArgs are the arguments shared by the decide and apply scripts:
// 1 id, 2 score, 3 size, 4 category, 5 hasUser, 6 hasCall, 7 trackType,
// 8 expireAt, 9 day.
func (a Artifact) admitArgs() []any {
	return []any{a.ID, a.Score, a.Size, a.Category, flag(a.User != ""), flag(a.CallID != ""), a.trackType, monthExpiry(a.AcceptedAt), a.AcceptedAt.UTC().Format("20060102")}
}

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

// ErrIDConflict is the reason recorded when an id is already used by
// another domain: ids are global.
const ErrIDConflict = "id_conflict"

// Decide admits or refuses a in one atomic step with its catalog write and
// records the decision in the artifact hash with the effects still owed.
// A repeated call (a redelivery) returns the recorded decision with
// Repeat set, whatever the caps say now.
func (c *Catalog) Decide(ctx context.Context, a Artifact, cap CapCheck) (Decision, error) {
	owner, err := c.claimID(ctx, a.ID, a.Domain)
	if err != nil {
		return Decision{}, err
	}
	if owner != a.Domain {
		return c.decideConflict(ctx, a)
	}
	evictBefore := ""
	if cap.Mode == EvictOldest {
		evictBefore = strconv.FormatInt(cap.EvictBefore.UnixMilli(), 10)
	}
	for attempt := 0; attempt < 64; attempt++ {
		if attempt > 0 {
			time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
		}
		victim := ""
		if cap.Mode == EvictOldest {
			ids, err := c.rdb.ZRange(ctx, a.trackKey, 0, 0).Result()
			if err != nil {
				return Decision{}, fmt.Errorf("catalog decide %s: oldest: %w", a.ID, err)
			}
			if len(ids) == 1 {
				victim = ids[0]
			}
		}
		keyField, keyValue := storedKey(a.Kind, a.Domain, a.ID, a.ObjectKey)
		args := append(a.admitArgs(), string(cap.Mode), cap.Limit, evictBefore, victim, a.Kind, keyField, keyValue, a.Seq, a.AcceptedAt.UnixMilli())
		res, err := c.decide.Run(ctx, c.rdb, c.scriptKeys(a, victim), append(args, a.fields...)...).Slice()
		if err != nil {
			return Decision{}, fmt.Errorf("catalog decide %s: %w", a.ID, err)
		}
		switch code, _ := res[0].(int64); code {
		case 2:
			continue // the folder's oldest changed under us: read it again
		case 3:
			return Decision{}, fmt.Errorf("catalog decide %s: evict %s: %w", a.ID, victim, ErrPublishPending)
		}
		return decisionOf(res), nil
	}
	return Decision{}, fmt.Errorf("catalog decide %s: the folder kept changing", a.ID)
}

func decisionOf(res []any) Decision {
	str := func(i int) string { s, _ := res[i].(string); return s }
	code, _ := res[0].(int64)
	d := Decision{Repeat: code == 0, State: State(str(1)), Reason: str(2), Pending: str(3), EvictedID: str(4)}
	d.TotalBytes, _ = strconv.ParseInt(str(5), 10, 64)
	return d
}

// decideConflict records the refusal of an id another domain owns. The
// record lives in this domain's slot, so the owner's artifact is never
// touched or revealed.
const conflictScript = `
local st = redis.call('HGET', KEYS[1], 'st')
if not st and redis.call('EXISTS', KEYS[1]) == 1 then st = 'a' end
if st then
  local f = redis.call('HMGET', KEYS[1], 'rs', 'pe', 'ev')
  return {0, st, f[1] or '', f[2] or '', f[3] or '', '0'}
end
redis.call('HSET', KEYS[1], 'st', 'r', 'rs', 'id_conflict', 'pe', 'MP', 'id', ARGV[1], 'kind', ARGV[2], ARGV[3], ARGV[4],
  'size', ARGV[5], 'seq', ARGV[6], 'accepted_at', ARGV[7])
return {1, 'r', 'id_conflict', 'MP', '', '0'}
`

func (c *Catalog) decideConflict(ctx context.Context, a Artifact) (Decision, error) {
	keyField, keyValue := storedKey(a.Kind, a.Domain, a.ID, a.ObjectKey)
	res, err := c.conflict.Run(ctx, c.rdb, []string{c.k.artifact(a.Domain, a.ID)}, a.ID, a.Kind, keyField, keyValue, a.Size, a.Seq, a.AcceptedAt.UnixMilli()).Slice()
	if err != nil {
		return Decision{}, fmt.Errorf("catalog decide %s: %w", a.ID, err)
	}
	return decisionOf(res), nil
}

// claimID registers id -> domain unless another domain holds it, and
// returns the owner. Only admission claims: a request that fails before
// its event is durably published claims nothing.
func (c *Catalog) claimID(ctx context.Context, id, domain string) (string, error) {
	key := c.k.ids(id)
	set, err := c.rdb.HSetNX(ctx, key, id, domain).Result()
	if err != nil {
		return "", fmt.Errorf("catalog claim %s: %w", id, err)
	}
	if set {
		return domain, nil
	}
	owner, err := c.rdb.HGet(ctx, key, id).Result()
	if err != nil {
		return "", fmt.Errorf("catalog claim %s: %w", id, err)
	}
	return owner, nil
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
	Size                     int64
	StartedAt                time.Time
	DeletedAt                time.Time
}

// ErrNoRecord is returned for an artifact the catalog has never decided.
var ErrNoRecord = errors.New("catalog: no record")

// Record reads the decision record of an artifact of any state.
func (c *Catalog) Record(ctx context.Context, domain, id string) (Record, error) {
	m, err := c.rdb.HGetAll(ctx, c.k.artifact(domain, id)).Result()
	if err != nil {
		return Record{}, fmt.Errorf("catalog record %s: %w", id, err)
	}
	if len(m) == 0 {
		return Record{}, fmt.Errorf("catalog record %s: %w", id, ErrNoRecord)
	}
	return recordOf(domain, id, m), nil
}

// recordOf parses the hash of a decision record.
func recordOf(domain, id string, m map[string]string) Record {
	st := State(m["st"])
	if st == "" {
		st = StateAdmitted
	}
	num := func(f string) int64 { v, _ := strconv.ParseInt(m[f], 10, 64); return v }
	r := Record{
		ID: id, Domain: domain, User: m["user"], CallID: m["call_id"], Kind: m["kind"], Folder: m["folder"], Mode: m["mode"], Reseller: m["reseller"], State: st, Reason: m["rs"], Rule: m["ru"],
		Actor: m["ac"], Pending: m["pe"], EvictedID: m["ev"], ObjectKey: objectKeyOf(m, m["kind"], domain, id), Size: num("size"),
		StartedAt: time.UnixMilli(num("started_at")).UTC(),
	}
	if m["dt"] != "" {
		r.DeletedAt = time.UnixMilli(num("dt")).UTC()
	}
	return r
}

// doneScript removes one effect from the pending list once it is done.
const doneScript = `
local pe = redis.call('HGET', KEYS[1], 'pe')
if not pe then return 0 end
local i = string.find(pe, ARGV[1], 1, true)
if not i then return 0 end
pe = string.sub(pe, 1, i - 1) .. string.sub(pe, i + 1)
if pe == '' then redis.call('HDEL', KEYS[1], 'pe') else redis.call('HSET', KEYS[1], 'pe', pe) end
return 1
`

// Done records that one pending effect of an artifact's decision is
// confirmed. Doing it again is harmless.
func (c *Catalog) Done(ctx context.Context, domain, id string, effect byte) error {
	if err := c.done.Run(ctx, c.rdb, []string{c.k.artifact(domain, id)}, string(effect)).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("catalog effect %c of %s: %w", effect, id, err)
	}
	return nil
}
