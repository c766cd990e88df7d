package router

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
)

// The router's keys. It is their only writer; the catalog's rebuild never
// touches them (they are not among the keys it derives). The router's own
// keys share the hash tag {_archive} (no domain can be called that), so
// its scripts run on one slot of a cluster; a domain's archive records
// live in the domain's slot.
//
//	ns:{_archive}:configs        hash  config id -> ArchiveConfigRecord
//	ns:{_archive}:configseq      hash  config id -> stream sequence applied (kept after a deletion)
//	ns:{_archive}:scopes         hash  "level:match" -> the ids of that scope's configurations, space-separated
//	ns:{_archive}:scopeof        hash  config id -> its "level:match"
//	ns:{_archive}:status:<id>    hash  ok_at, err, err_at (unix ms), archived
//	ns:{_archive}:waiting:<id>   set   domain/artifact waiting for config id
//	ns:{_archive}:parked         zset  domain/artifact -> when to try next (ms)
//	ns:{_archive}:leases         hash  domain/artifact -> lease end (ms) of the drainer trying it
//	ns:{_archive}:jobs           hash  domain/artifact -> ArtifactAdmitted envelope
//	ns:{_archive}:jobinfo        hash  domain/artifact -> admission sequence "\n" 1 when it had a target
//	ns:{_archive}:lock, :built   the change lock; the restore marker
//	ns:{domain}:arch             hash  artifact id -> ArtifactArchived
//	ns:{domain}:archwait         hash  artifact id -> config id "\n" last error
//	ns:{domain}:archcount        hash  artifact id -> config id whose archived count is still owed
//	ns:{domain}:archintent:<id>  set   config id "\n" key "\n" SHA-256 of each encrypted upload about to commit
type keys struct{ ns string }

func (k keys) g(name string) string         { return k.ns + ":{_archive}:" + name }
func (k keys) configs() string              { return k.g("configs") }
func (k keys) configSeq() string            { return k.g("configseq") }
func (k keys) scopes() string               { return k.g("scopes") }
func (k keys) scopeOf() string              { return k.g("scopeof") }
func (k keys) status(id string) string      { return k.g("status:" + id) }
func (k keys) waiting(id string) string     { return k.g("waiting:" + id) }
func (k keys) parked() string               { return k.g("parked") }
func (k keys) leases() string               { return k.g("leases") }
func (k keys) jobs() string                 { return k.g("jobs") }
func (k keys) jobInfo() string              { return k.g("jobinfo") }
func (k keys) lock() string                 { return k.g("lock") }
func (k keys) built() string                { return k.g("built") }
func (k keys) done(domain string) string    { return k.ns + ":{" + domain + "}:arch" }
func (k keys) pending(domain string) string { return k.ns + ":{" + domain + "}:archwait" }
func (k keys) owed(domain string) string    { return k.ns + ":{" + domain + "}:archcount" }
func (k keys) intent(domain, id string) string {
	return k.ns + ":{" + domain + "}:archintent:" + id
}

func member(domain, id string) string { return domain + "/" + id }

type store struct {
	rdb redis.UniversalClient
	k   keys
}

// applyConfigScript puts (ARGV[3] = 1) or removes a configuration record
// when the event's stream sequence is newer than the one applied, so an
// old event replayed after a newer change never undoes it. A sequence of
// 0 (the live apply of a change whose sequence is unknown) always applies.
//
// It also keeps the scope index (which configurations a level and match
// has), so a decision reads only the few configurations that can match
// its artifact, never all of them.
var applyConfigScript = redis.NewScript(`
local id = ARGV[1]
local seq = tonumber(ARGV[2])
local had = tonumber(redis.call('HGET', KEYS[2], id) or '0')
if seq > 0 and seq <= had then return 0 end
local function drop(scope)
  local kept = {}
  for other in string.gmatch(redis.call('HGET', KEYS[4], scope) or '', '%S+') do
    if other ~= id then table.insert(kept, other) end
  end
  if #kept == 0 then redis.call('HDEL', KEYS[4], scope)
  else redis.call('HSET', KEYS[4], scope, table.concat(kept, ' ')) end
end
local old = redis.call('HGET', KEYS[3], id)
if old then drop(old) end
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], id, ARGV[4])
  local cur = redis.call('HGET', KEYS[4], ARGV[5])
  if cur then cur = cur .. ' ' .. id else cur = id end
  redis.call('HSET', KEYS[4], ARGV[5], cur)
  redis.call('HSET', KEYS[3], id, ARGV[5])
else
  redis.call('HDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[3], id)
end
if seq > had then redis.call('HSET', KEYS[2], id, seq) end
return 1
`)

// scopeKey names a configuration's level and match in the scope index.
func scopeKey(level, match string) string { return level + ":" + match }

// putConfig stores a configuration record (applying its event at stream
// sequence seq); it reports whether it applied.
func (s *store) putConfig(ctx context.Context, c *eventv1.ArchiveConfigRecord, seq uint64) (bool, error) {
	b, err := proto.Marshal(c)
	if err != nil {
		return false, err
	}
	n, err := applyConfigScript.Run(ctx, s.rdb, s.configKeys(), c.GetId(), seq, "1", b, scopeKey(c.GetLevel(), c.GetMatch())).Int()
	return n == 1, err
}

func (s *store) configKeys() []string {
	return []string{s.k.configs(), s.k.configSeq(), s.k.scopeOf(), s.k.scopes()}
}

// candidatesScript returns the records of the configurations of the
// scopes named, in one round trip.
var candidatesScript = redis.NewScript(`
local out = {}
for _, scope in ipairs(ARGV) do
  for id in string.gmatch(redis.call('HGET', KEYS[2], scope) or '', '%S+') do
    local b = redis.call('HGET', KEYS[1], id)
    if b then table.insert(out, b) end
  end
end
return out
`)

// candidates reads the configurations that can take an artifact of a
// domain under a reseller: that domain's, that reseller's and the
// system's.
func (s *store) candidates(ctx context.Context, reseller, domain string) ([]*eventv1.ArchiveConfigRecord, error) {
	return s.configsOf(ctx, scopeKey(levelDomain, domain), scopeKey(levelReseller, reseller), scopeKey(levelSystem, ""))
}

// configsOf reads the configurations of the scopes named.
func (s *store) configsOf(ctx context.Context, scopes ...string) ([]*eventv1.ArchiveConfigRecord, error) {
	args := make([]any, len(scopes))
	for i, sc := range scopes {
		args[i] = sc
	}
	res, err := candidatesScript.Run(ctx, s.rdb, []string{s.k.configs(), s.k.scopes()}, args...).StringSlice()
	if err != nil {
		return nil, err
	}
	out := make([]*eventv1.ArchiveConfigRecord, 0, len(res))
	for _, b := range res {
		c := &eventv1.ArchiveConfigRecord{}
		if err := proto.Unmarshal([]byte(b), c); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func (s *store) removeConfig(ctx context.Context, id string, seq uint64) (bool, error) {
	n, err := applyConfigScript.Run(ctx, s.rdb, s.configKeys(), id, seq, "0", "", "").Int()
	return n == 1, err
}

func (s *store) config(ctx context.Context, id string) (*eventv1.ArchiveConfigRecord, error) {
	b, err := s.rdb.HGet(ctx, s.k.configs(), id).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, errNoConfig
	}
	if err != nil {
		return nil, err
	}
	c := &eventv1.ArchiveConfigRecord{}
	return c, proto.Unmarshal(b, c)
}

var errNoConfig = errors.New("no such configuration")

func (s *store) allConfigs(ctx context.Context) ([]*eventv1.ArchiveConfigRecord, error) {
	m, err := s.rdb.HGetAll(ctx, s.k.configs()).Result()
	if err != nil {
		return nil, err
	}
	out := make([]*eventv1.ArchiveConfigRecord, 0, len(m))
	for id, b := range m {
		c := &eventv1.ArchiveConfigRecord{}
		if err := proto.Unmarshal([]byte(b), c); err != nil {
			return nil, fmt.Errorf("configuration %s: %w", id, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// Status is a configuration's transfer record.
type Status struct {
	OKAt, ErrAt time.Time
	Err         string
	Waiting     int64
	Archived    int64
}

func (s *store) status(ctx context.Context, id string) (Status, error) {
	pipe := s.rdb.Pipeline()
	h := pipe.HGetAll(ctx, s.k.status(id))
	w := pipe.SCard(ctx, s.k.waiting(id))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Status{}, err
	}
	m := h.Val()
	ms := func(f string) time.Time {
		n, err := strconv.ParseInt(m[f], 10, 64)
		if err != nil || n == 0 {
			return time.Time{}
		}
		return time.UnixMilli(n).UTC()
	}
	archived, _ := strconv.ParseInt(m["archived"], 10, 64)
	return Status{OKAt: ms("ok_at"), ErrAt: ms("err_at"), Err: m["err"], Waiting: w.Val(), Archived: archived}, nil
}

// archived reads an artifact's archive record.
func (s *store) archived(ctx context.Context, domain, id string) (*eventv1.ArtifactArchived, error) {
	b, err := s.rdb.HGet(ctx, s.k.done(domain), id).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	a := &eventv1.ArtifactArchived{}
	return a, proto.Unmarshal(b, a)
}

// archivedMany reads the archive records of several artifacts of a
// domain in one round trip (nil where there is none).
func (s *store) archivedMany(ctx context.Context, domain string, ids []string) ([]*eventv1.ArtifactArchived, error) {
	out := make([]*eventv1.ArtifactArchived, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	vals, err := s.rdb.HMGet(ctx, s.k.done(domain), ids...).Result()
	if err != nil {
		return nil, err
	}
	for i, v := range vals {
		str, ok := v.(string)
		if !ok {
			continue
		}
		a := &eventv1.ArtifactArchived{}
		if err := proto.Unmarshal([]byte(str), a); err != nil {
			return nil, fmt.Errorf("archive record of %s: %w", ids[i], err)
		}
		out[i] = a
	}
	return out, nil
}

// configsByID reads the configurations named (missing ones are absent
// from the answer) in one round trip.
func (s *store) configsByID(ctx context.Context, ids []string) (map[string]*eventv1.ArchiveConfigRecord, error) {
	out := map[string]*eventv1.ArchiveConfigRecord{}
	if len(ids) == 0 {
		return out, nil
	}
	vals, err := s.rdb.HMGet(ctx, s.k.configs(), ids...).Result()
	if err != nil {
		return nil, err
	}
	for i, v := range vals {
		str, ok := v.(string)
		if !ok {
			continue
		}
		c := &eventv1.ArchiveConfigRecord{}
		if err := proto.Unmarshal([]byte(str), c); err != nil {
			return nil, fmt.Errorf("configuration %s: %w", ids[i], err)
		}
		out[ids[i]] = c
	}
	return out, nil
}

// failing reports whether a configuration's latest outcome is an error.
func (s *store) failing(ctx context.Context, cfg string) (bool, error) {
	v, err := s.rdb.HMGet(ctx, s.k.status(cfg), "ok_at", "err_at").Result()
	if err != nil {
		return false, err
	}
	ms := func(x any) int64 {
		str, _ := x.(string)
		n, _ := strconv.ParseInt(str, 10, 64)
		return n
	}
	return ms(v[1]) > ms(v[0]), nil
}

// Waiting is an artifact that waits for a configuration.
type Waiting struct {
	ConfigID string
	Err      string
}

func (s *store) waitingFor(ctx context.Context, domain string, ids []string) (map[string]Waiting, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	vals, err := s.rdb.HMGet(ctx, s.k.pending(domain), ids...).Result()
	if err != nil {
		return nil, err
	}
	out := map[string]Waiting{}
	for i, v := range vals {
		str, ok := v.(string)
		if !ok {
			continue
		}
		cfg, msg, _ := cut(str)
		out[ids[i]] = Waiting{ConfigID: cfg, Err: msg}
	}
	return out, nil
}

func cut(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// recordDone applies an archive record (the event). It reports whether
// the record was new. Two steps, because a domain's keys and the router's
// own live in different slots of a cluster:
//
//  1. in one transaction on the domain's slot: the record (HSETNX), and,
//     when it is new, a note that its configuration's count is owed
//     (archcount);
//  2. settleDone: what follows from the record, each part idempotent: the
//     owed count (claimed, then added, put back if the addition fails),
//     the end of the wait (archwait, which names the wait set to leave,
//     removed only once it was left), the parked job, the encrypted
//     intents.
//
// A failure between or inside step 2 leaves the notes, so a repeat (the
// redelivery, the parked retry, or an attempt finding the record) settles
// what is still owed, and two settles at once count once (the count note
// is claimed before it is added; only a crash between the claim and the
// addition loses a count).
func (s *store) recordDone(ctx context.Context, domain string, a *eventv1.ArtifactArchived, at time.Time) (bool, error) {
	b, err := proto.Marshal(a)
	if err != nil {
		return false, err
	}
	id := a.GetArtifactId()
	n, err := recordDoneScript.Run(ctx, s.rdb, []string{s.k.done(domain), s.k.owed(domain)}, id, b, a.GetConfigId()).Int()
	if err != nil {
		return false, err
	}
	return n == 1, s.settleDone(ctx, domain, a, at)
}

// recordDoneScript writes a record unless one exists and, when it is new
// and names a configuration, notes the count it owes.
var recordDoneScript = redis.NewScript(`
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[2], ARGV[1], ARGV[3]) end
return 1
`)

// settleDone carries out what an archive record owes (step 2 of
// recordDone); it is safe to run any number of times.
func (s *store) settleDone(ctx context.Context, domain string, a *eventv1.ArtifactArchived, at time.Time) error {
	id := a.GetArtifactId()
	m := member(domain, id)
	// The owed count is claimed (taken off the note) before it is added,
	// so two settles at once (two instances, a duplicate) add it once; an
	// addition that fails puts the note back.
	cfg, err := claimOwedScript.Run(ctx, s.rdb, []string{s.k.owed(domain)}, id).Text()
	if err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	if cfg != "" {
		pipe := s.rdb.Pipeline()
		pipe.HIncrBy(ctx, s.k.status(cfg), "archived", 1)
		if !at.IsZero() {
			pipe.HSet(ctx, s.k.status(cfg), "ok_at", at.UnixMilli())
		}
		if _, err := pipe.Exec(ctx); err != nil {
			if rerr := s.rdb.HSet(context.WithoutCancel(ctx), s.k.owed(domain), id, cfg).Err(); rerr != nil {
				return fmt.Errorf("%w (and the owed count could not be noted again: %w)", err, rerr)
			}
			return err
		}
	}
	w, err := s.rdb.HGet(ctx, s.k.pending(domain), id).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	pipe := s.rdb.Pipeline()
	if wcfg, _, _ := cut(w); wcfg != "" {
		pipe.SRem(ctx, s.k.waiting(wcfg), m)
	}
	if a.GetConfigId() != "" {
		pipe.SRem(ctx, s.k.waiting(a.GetConfigId()), m)
	}
	pipe.ZRem(ctx, s.k.parked(), m)
	pipe.HDel(ctx, s.k.jobs(), m)
	pipe.HDel(ctx, s.k.jobInfo(), m)
	pipe.HDel(ctx, s.k.leases(), m)
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	// The wait note goes last, once the wait set it names was left.
	pipe = s.rdb.TxPipeline()
	pipe.HDel(ctx, s.k.pending(domain), id)
	pipe.Del(ctx, s.k.intent(domain, id))
	_, err = pipe.Exec(ctx)
	return err
}

// claimOwedScript takes the owed-count note of an artifact (returning the
// configuration it names) so only one settle adds it.
var claimOwedScript = redis.NewScript(`
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then redis.call('HDEL', KEYS[1], ARGV[1]) end
return v
`)

// markWaitingScript records what an artifact waits on, unless its archive
// record exists (an attempt that lost to another must not leave a wait
// behind the winner). It returns the configuration waited for before ("" for
// none), or false when the artifact is archived.
var markWaitingScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return false end
local prev = redis.call('HGET', KEYS[2], ARGV[1]) or ''
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return prev
`)

// markWaiting records that an artifact waits for cfg after msg, moving
// it off whatever configuration it waited for before; failed marks the
// configuration's status error (false when nothing failed, e.g. nothing
// matches for now). cfg may be empty (waiting for any match). Nothing
// changes for an artifact already archived.
func (s *store) markWaiting(ctx context.Context, domain, id, cfg, msg string, at time.Time, failed bool) error {
	res, err := markWaitingScript.Run(ctx, s.rdb, []string{s.k.done(domain), s.k.pending(domain)}, id, cfg+"\n"+msg).Result()
	if errors.Is(err, redis.Nil) {
		return nil // archived meanwhile
	}
	if err != nil {
		return err
	}
	prev, _ := res.(string)
	m := member(domain, id)
	pipe := s.rdb.Pipeline()
	if prevCfg, _, _ := cut(prev); prev != "" && prevCfg != cfg && prevCfg != "" {
		pipe.SRem(ctx, s.k.waiting(prevCfg), m)
	}
	if cfg != "" {
		pipe.SAdd(ctx, s.k.waiting(cfg), m)
		if failed {
			pipe.HSet(ctx, s.k.status(cfg), "err", msg, "err_at", at.UnixMilli())
		}
	}
	_, err = pipe.Exec(ctx)
	return err
}

// park keeps the work of an artifact whose target keeps failing, so the
// consumer can move on; the drainer tries it again at next.
func (s *store) park(ctx context.Context, domain, id string, env []byte, next time.Time, j jobInfo) error {
	m := member(domain, id)
	pipe := s.rdb.TxPipeline()
	pipe.HSet(ctx, s.k.jobs(), m, env)
	pipe.HSet(ctx, s.k.jobInfo(), m, j.String())
	pipe.ZAdd(ctx, s.k.parked(), redis.Z{Score: float64(next.UnixMilli()), Member: m})
	_, err := pipe.Exec(ctx)
	return err
}

// claimDue hands out up to n parked jobs that are due, each leased (and
// pushed back) so that no other drainer takes it meanwhile, nor does a
// wake-up make it due again.
var claimDueScript = redis.NewScript(`
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, m in ipairs(due) do
  local job = redis.call('HGET', KEYS[2], m)
  if job then
    redis.call('ZADD', KEYS[1], ARGV[2], m)
    redis.call('HSET', KEYS[3], m, ARGV[2])
    table.insert(out, m)
    table.insert(out, job)
    table.insert(out, redis.call('HGET', KEYS[4], m) or '')
  else
    redis.call('ZREM', KEYS[1], m)
    redis.call('HDEL', KEYS[3], m)
  end
end
return out
`)

// parkedJob is a claimed parked job.
type parkedJob struct {
	member string
	env    []byte
	info   jobInfo
}

// jobInfo is what a parked job knows beside its decision.
type jobInfo struct {
	seq uint64 // the admission's stream sequence
	// hadTarget: it waited for a configuration (so, when nothing matches
	// any more, it keeps waiting rather than being recorded not archived).
	hadTarget bool
}

func (j jobInfo) String() string {
	t := "0"
	if j.hadTarget {
		t = "1"
	}
	return strconv.FormatUint(j.seq, 10) + "\n" + t
}

func parseJobInfo(s string) jobInfo {
	seq, t, _ := cut(s)
	n, _ := strconv.ParseUint(seq, 10, 64)
	return jobInfo{seq: n, hadTarget: t == "1"}
}

func (s *store) claimDue(ctx context.Context, now time.Time, lease time.Duration, n int) ([]parkedJob, error) {
	if n <= 0 {
		return nil, nil
	}
	res, err := claimDueScript.Run(ctx, s.rdb, []string{s.k.parked(), s.k.jobs(), s.k.leases(), s.k.jobInfo()}, now.UnixMilli(), now.Add(lease).UnixMilli(), n).StringSlice()
	if err != nil {
		return nil, err
	}
	out := make([]parkedJob, 0, len(res)/3)
	for i := 0; i+2 < len(res); i += 3 {
		out = append(out, parkedJob{member: res[i], env: []byte(res[i+1]), info: parseJobInfo(res[i+2])})
	}
	return out, nil
}

// reschedule sets when a parked job is tried next and ends its lease.
func (s *store) reschedule(ctx context.Context, m string, next time.Time) error {
	pipe := s.rdb.TxPipeline()
	pipe.ZAddXX(ctx, s.k.parked(), redis.Z{Score: float64(next.UnixMilli()), Member: m})
	pipe.HDel(ctx, s.k.leases(), m)
	_, err := pipe.Exec(ctx)
	return err
}

// unpark drops a parked job (it was archived, or cannot be).
func (s *store) unpark(ctx context.Context, m string) error {
	pipe := s.rdb.TxPipeline()
	pipe.ZRem(ctx, s.k.parked(), m)
	pipe.HDel(ctx, s.k.jobs(), m)
	pipe.HDel(ctx, s.k.jobInfo(), m)
	pipe.HDel(ctx, s.k.leases(), m)
	_, err := pipe.Exec(ctx)
	return err
}

// wakeParkedScript makes every parked job waiting for a configuration
// due now, except one a drainer holds under a live lease.
var wakeParkedScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local n = 0
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local lease = tonumber(redis.call('HGET', KEYS[3], m) or '0')
  if lease <= now and redis.call('ZSCORE', KEYS[2], m) then
    redis.call('ZADD', KEYS[2], now, m)
    n = n + 1
  end
end
return n
`)

// wakeParked makes the parked work waiting for cfg due now (after the
// configuration changed or worked again).
func (s *store) wakeParked(ctx context.Context, cfg string, now time.Time) error {
	return wakeParkedScript.Run(ctx, s.rdb, []string{s.k.waiting(cfg), s.k.parked(), s.k.leases()}, now.UnixMilli()).Err()
}

// noteIntent records, just before an encrypted upload commits, the
// configuration, key and SHA-256 of what it stores: encrypted bytes cannot
// be compared with what another attempt would send (age encrypts to a
// fresh key each time), so an attempt that finds its key taken adopts the
// object only if it hashes to what one of this artifact's own attempts
// was about to commit there.
func (s *store) noteIntent(ctx context.Context, domain, id, cfg, key, sum string) error {
	return s.rdb.SAdd(ctx, s.k.intent(domain, id), cfg+"\n"+key+"\n"+sum).Err()
}

// intended reports whether one of the artifact's attempts was about to
// commit exactly that object.
func (s *store) intended(ctx context.Context, domain, id, cfg, key, sum string) (bool, error) {
	return s.rdb.SIsMember(ctx, s.k.intent(domain, id), cfg+"\n"+key+"\n"+sum).Result()
}
