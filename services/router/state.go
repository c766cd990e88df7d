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
// touches them (they are not among the keys it derives).
//
//	ns:archive:configs          hash  config id -> ArchiveConfigRecord
//	ns:archive:status:{id}      hash  ok_at, err, err_at (unix ms), archived
//	ns:archive:waiting:{id}     set   domain/artifact waiting for config id
//	ns:archive:parked           zset  domain/artifact -> when to try next (ms)
//	ns:archive:jobs             hash  domain/artifact -> ArtifactAdmitted envelope
//	ns:{domain}:arch            hash  artifact id -> ArtifactArchived
//	ns:{domain}:archwait        hash  artifact id -> config id "\n" last error
type keys struct{ ns string }

func (k keys) configs() string              { return k.ns + ":archive:configs" }
func (k keys) status(id string) string      { return k.ns + ":archive:status:" + id }
func (k keys) waiting(id string) string     { return k.ns + ":archive:waiting:" + id }
func (k keys) parked() string               { return k.ns + ":archive:parked" }
func (k keys) jobs() string                 { return k.ns + ":archive:jobs" }
func (k keys) done(domain string) string    { return k.ns + ":{" + domain + "}:arch" }
func (k keys) pending(domain string) string { return k.ns + ":{" + domain + "}:archwait" }
func (k keys) lock() string                 { return k.ns + ":archive:lock" }

func member(domain, id string) string { return domain + "/" + id }

type store struct {
	rdb redis.UniversalClient
	k   keys
}

// putConfig stores a configuration record (applying its event).
func (s *store) putConfig(ctx context.Context, c *eventv1.ArchiveConfigRecord) error {
	b, err := proto.Marshal(c)
	if err != nil {
		return err
	}
	return s.rdb.HSet(ctx, s.k.configs(), c.GetId(), b).Err()
}

func (s *store) removeConfig(ctx context.Context, id string) error {
	return s.rdb.HDel(ctx, s.k.configs(), id).Err()
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

// recordDone applies an archive record (the event): the artifact's
// record, the end of its wait and its parked job, its configuration's
// count and last success. It returns whether the record was new; a
// repeat changes nothing but clearing what waited. The domain's keys share
// a slot and change in one transaction; the configuration's keys live
// elsewhere in a cluster and follow.
func (s *store) recordDone(ctx context.Context, domain string, a *eventv1.ArtifactArchived, at time.Time) (bool, error) {
	b, err := proto.Marshal(a)
	if err != nil {
		return false, err
	}
	id := a.GetArtifactId()
	w, err := s.rdb.HGet(ctx, s.k.pending(domain), id).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return false, err
	}
	pipe := s.rdb.TxPipeline()
	added := pipe.HSetNX(ctx, s.k.done(domain), id, b)
	pipe.HDel(ctx, s.k.pending(domain), id)
	if _, err := pipe.Exec(ctx); err != nil {
		return false, err
	}
	m := member(domain, id)
	pipe = s.rdb.Pipeline()
	if w != "" {
		cfg, _, _ := cut(w)
		pipe.SRem(ctx, s.k.waiting(cfg), m)
	}
	pipe.ZRem(ctx, s.k.parked(), m)
	pipe.HDel(ctx, s.k.jobs(), m)
	if added.Val() && a.GetConfigId() != "" {
		pipe.HIncrBy(ctx, s.k.status(a.GetConfigId()), "archived", 1)
		if !at.IsZero() {
			pipe.HSet(ctx, s.k.status(a.GetConfigId()), "ok_at", at.UnixMilli())
		}
	}
	_, err = pipe.Exec(ctx)
	return added.Val(), err
}

// markWaiting records that an artifact waits for cfg after err, moving
// it off whatever configuration it waited for before.
func (s *store) markWaiting(ctx context.Context, domain, id, cfg, msg string, at time.Time) error {
	prev, err := s.rdb.HGet(ctx, s.k.pending(domain), id).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	m := member(domain, id)
	pipe := s.rdb.Pipeline()
	if prevCfg, _, _ := cut(prev); prev != "" && prevCfg != cfg {
		pipe.SRem(ctx, s.k.waiting(prevCfg), m)
	}
	pipe.HSet(ctx, s.k.pending(domain), id, cfg+"\n"+msg)
	pipe.SAdd(ctx, s.k.waiting(cfg), m)
	pipe.HSet(ctx, s.k.status(cfg), "err", msg, "err_at", at.UnixMilli())
	_, err = pipe.Exec(ctx)
	return err
}

// park keeps the work of an artifact whose target keeps failing, so the
// consumer can move on; the drainer tries it again at next.
func (s *store) park(ctx context.Context, domain, id string, env []byte, next time.Time) error {
	m := member(domain, id)
	pipe := s.rdb.TxPipeline()
	pipe.HSet(ctx, s.k.jobs(), m, env)
	pipe.ZAdd(ctx, s.k.parked(), redis.Z{Score: float64(next.UnixMilli()), Member: m})
	_, err := pipe.Exec(ctx)
	return err
}

// claimDue hands out up to n parked jobs that are due, each pushed back
// by lease so that no other drainer takes it meanwhile.
var claimDueScript = redis.NewScript(`
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, m in ipairs(due) do
  redis.call('ZADD', KEYS[1], ARGV[2], m)
  local job = redis.call('HGET', KEYS[2], m)
  if job then
    table.insert(out, m)
    table.insert(out, job)
  else
    redis.call('ZREM', KEYS[1], m)
  end
end
return out
`)

func (s *store) claimDue(ctx context.Context, now time.Time, lease time.Duration, n int) (map[string][]byte, error) {
	res, err := claimDueScript.Run(ctx, s.rdb, []string{s.k.parked(), s.k.jobs()}, now.UnixMilli(), now.Add(lease).UnixMilli(), n).StringSlice()
	if err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		out[res[i]] = []byte(res[i+1])
	}
	return out, nil
}

// reschedule sets when a parked job is tried next.
func (s *store) reschedule(ctx context.Context, m string, next time.Time) error {
	return s.rdb.ZAddXX(ctx, s.k.parked(), redis.Z{Score: float64(next.UnixMilli()), Member: m}).Err()
}

// unpark drops a parked job (it was archived, or nothing matches now).
func (s *store) unpark(ctx context.Context, m string) error {
	pipe := s.rdb.TxPipeline()
	pipe.ZRem(ctx, s.k.parked(), m)
	pipe.HDel(ctx, s.k.jobs(), m)
	_, err := pipe.Exec(ctx)
	return err
}

// wakeParked makes every parked job waiting for cfg due now (after the
// configuration changed or worked again).
func (s *store) wakeParked(ctx context.Context, cfg string, now time.Time) error {
	members, err := s.rdb.SMembers(ctx, s.k.waiting(cfg)).Result()
	if err != nil || len(members) == 0 {
		return err
	}
	pipe := s.rdb.Pipeline()
	for _, m := range members {
		pipe.ZAddXX(ctx, s.k.parked(), redis.Z{Score: float64(now.UnixMilli()), Member: m})
	}
	_, err = pipe.Exec(ctx)
	return err
}
