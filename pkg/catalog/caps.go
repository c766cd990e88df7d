package catalog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// CapMode is how admission enforces a cap.
type CapMode string

// Cap modes.
const (
	// NoCap admits without counting.
	NoCap CapMode = ""
	// RefuseAtLimit refuses once the box (a set of ids) holds Limit.
	RefuseAtLimit CapMode = "set_refuse"
	// EvictOldest makes room by deleting the oldest of the set, if it is
	// past its minimum (older than EvictBefore).
	EvictOldest CapMode = "set_evict"
	// MonthlyLimit refuses once the month's counter reaches Limit.
	MonthlyLimit CapMode = "counter_refuse"
)

// CapCheck is the cap one admission enforces.
type CapCheck struct {
	Mode  CapMode
	Limit int64
	// Key is the box, folder or month the cap counts; see BoxKey etc.
	Key string
	// EvictBefore: only artifacts that started before it may be evicted.
	EvictBefore time.Time
}

// Outcome of an admission.
type Outcome struct {
	Admitted  bool
	Duplicate bool
	// Refused says why, e.g. "box_full", "monthly_cap", "folder_full_within_minimum".
	Refused string
	Evicted *Evicted
	// TotalBytes is the domain's usage after an admission.
	TotalBytes int64
}

// Evicted is the artifact a cap eviction deleted from the catalog.
type Evicted struct {
	ID        string
	Size      int64
	ObjectKey string
}

// BoxKey is a user's mailbox (voicemail and received faxes share it).
func (c *Catalog) BoxKey(domain, user string) string { return c.k.ns + ":{" + domain + "}:box:" + user }

// FolderKey is a user's SMS folder.
func (c *Catalog) FolderKey(domain, user, folder string) string {
	return c.k.ns + ":{" + domain + "}:sms:" + user + ":" + folder
}

// MonthKey counts a kind's admissions in a domain in one UTC month.
func (c *Catalog) MonthKey(domain, kind string, t time.Time) string {
	return c.k.ns + ":{" + domain + "}:month:" + t.UTC().Format("200601") + ":" + kind
}

// capScript admits an artifact and enforces its cap in one step, so 32
// writers racing for the last place in a box can never overfill it.
//
// KEYS: artifact, kind index, user index, call set, usage, cap key, daily
// ARGV: id, score, size, category, has_user, has_call, cap mode, limit,
//
//	evict-before score, ttl seconds (counters), day, field, value, ...
//
// Returns {1, evicted id, evicted size, evicted key, total bytes} when
// admitted, {0} for a duplicate, {-1, reason} when refused. The usage hash
// keeps a running total:bytes, and the daily hash the bytes admitted per
// UTC day, for the forecast.
const capScript = `
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
local mode, limit = ARGV[7], tonumber(ARGV[8])
local evicted = {}
if mode == 'set_refuse' then
  if redis.call('ZCARD', KEYS[6]) >= limit then return {-1, 'box_full'} end
elseif mode == 'counter_refuse' then
  if tonumber(redis.call('GET', KEYS[6]) or '0') >= limit then return {-1, 'monthly_cap'} end
elseif mode == 'set_evict' then
  if redis.call('ZCARD', KEYS[6]) >= limit then
    if ARGV[9] == '' then return {-1, 'folder_full_under_hold'} end
    local oldest = redis.call('ZRANGE', KEYS[6], 0, 0, 'WITHSCORES')
    if tonumber(oldest[2]) >= tonumber(ARGV[9]) then return {-1, 'folder_full_within_minimum'} end
    local art = string.gsub(KEYS[1], ':art:.*$', ':art:') .. oldest[1]
    local size = tonumber(redis.call('HGET', art, 'size') or '0')
    local okey = redis.call('HGET', art, 'key') or ''
    redis.call('DEL', art)
    redis.call('ZREM', KEYS[6], oldest[1])
    redis.call('ZREM', KEYS[2], oldest[1])
    redis.call('ZREM', KEYS[3], oldest[1])
    redis.call('HINCRBY', KEYS[5], ARGV[4] .. ':bytes', -size)
    redis.call('HINCRBY', KEYS[5], ARGV[4] .. ':count', -1)
    redis.call('HINCRBY', KEYS[5], 'total:bytes', -size)
    evicted = {oldest[1], tostring(size), okey}
  end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 12, #ARGV))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
if ARGV[5] == '1' then redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1]) end
if ARGV[6] == '1' then redis.call('SADD', KEYS[4], ARGV[1]) end
redis.call('HINCRBY', KEYS[5], ARGV[4] .. ':bytes', ARGV[3])
redis.call('HINCRBY', KEYS[5], ARGV[4] .. ':count', 1)
local total = redis.call('HINCRBY', KEYS[5], 'total:bytes', ARGV[3])
redis.call('HINCRBY', KEYS[7], ARGV[11], ARGV[3])
if mode == 'set_refuse' or mode == 'set_evict' then
  redis.call('ZADD', KEYS[6], ARGV[2], ARGV[1])
elseif mode == 'counter_refuse' then
  redis.call('INCR', KEYS[6])
  redis.call('EXPIRE', KEYS[6], tonumber(ARGV[10]))
end
return {1, evicted[1] or '', evicted[2] or '0', evicted[3] or '', tostring(total)}
`

// counterTTL keeps a month's counter a little longer than any month.
const counterTTL = 40 * 24 * time.Hour

// artifact is what the cap script writes: index placement and fields.
type artifact struct {
	domain, reseller, id, kind, category, user, callID, day string
	score, size                                             int64
	fields                                                  []any
}

func (c *Catalog) scriptArgs(a artifact, cap CapCheck) ([]string, []any) {
	capKey := cap.Key
	if cap.Mode == NoCap || capKey == "" {
		capKey = c.k.usage(a.domain) // unused, but every key must share the slot
	}
	callKey := c.k.usage(a.domain)
	hasCall := "0"
	if a.callID != "" {
		callKey, hasCall = c.k.call(a.domain, a.callID), "1"
	}
	hasUser := "0"
	if a.user != "" {
		hasUser = "1"
	}
	evictBefore := ""
	if cap.Mode == EvictOldest && !cap.EvictBefore.IsZero() {
		evictBefore = strconv.FormatInt(cap.EvictBefore.UnixMilli(), 10)
	}
	keys := []string{c.k.artifact(a.domain, a.id), c.k.index(a.domain, a.kind), c.k.userIndex(a.domain, a.user, a.kind), callKey, c.k.usage(a.domain), capKey, c.k.daily(a.domain)}
	args := []any{a.id, a.score, a.size, a.category, hasUser, hasCall, string(cap.Mode), cap.Limit, evictBefore, int64(counterTTL.Seconds()), a.day}
	return keys, append(args, a.fields...)
}

func (c *Catalog) admitCapped(ctx context.Context, a artifact, cap CapCheck) (Outcome, error) {
	keys, args := c.scriptArgs(a, cap)
	res, err := c.capped.Run(ctx, c.rdb, keys, args...).Slice()
	if err != nil {
		return Outcome{}, fmt.Errorf("catalog admit %s: %w", a.id, err)
	}
	return c.finish(ctx, a, res)
}

// finish interprets the script's answer and writes the registries, which
// live outside the domain's slot (idempotent, so a retry is safe).
func (c *Catalog) finish(ctx context.Context, a artifact, res []any) (Outcome, error) {
	status, _ := res[0].(int64)
	switch status {
	case 0:
		return Outcome{Duplicate: true}, nil
	case -1:
		reason, _ := res[1].(string)
		return Outcome{Refused: reason}, nil
	}
	pipe := c.rdb.Pipeline()
	pipe.HSetNX(ctx, c.k.ids(a.id), a.id, a.domain)
	if a.reseller != "" {
		pipe.HSetNX(ctx, c.k.domains(), a.domain, a.reseller)
	}
	out := Outcome{Admitted: true}
	out.TotalBytes, _ = strconv.ParseInt(res[4].(string), 10, 64)
	if id, _ := res[1].(string); id != "" {
		size, _ := strconv.ParseInt(res[2].(string), 10, 64)
		out.Evicted = &Evicted{ID: id, Size: size, ObjectKey: res[3].(string)}
		pipe.HDel(ctx, c.k.ids(id), id)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Outcome{}, fmt.Errorf("catalog admit %s: registries: %w", a.id, err)
	}
	return out, nil
}

// Count returns how many artifacts a cap key counts now.
func (c *Catalog) Count(ctx context.Context, mode CapMode, key string) (int64, error) {
	if mode == MonthlyLimit {
		n, err := c.rdb.Get(ctx, key).Int64()
		if errors.Is(err, redis.Nil) {
			return 0, nil
		}
		return n, err
	}
	return c.rdb.ZCard(ctx, key).Result()
}

// AdmitRecordingCapped admits a recording under a cap (the monthly limit
// of automatic recordings).
func (c *Catalog) AdmitRecordingCapped(ctx context.Context, r Recording, cap CapCheck) (Outcome, error) {
	return c.admitCapped(ctx, recordingArtifact(r), cap)
}

func recordingArtifact(r Recording) artifact {
	return artifact{
		domain: r.Domain, reseller: r.Reseller, id: r.ID, kind: KindRecording, category: KindRecording, user: r.User, callID: r.CallID,
		score: r.StartedAt.UnixMilli(), size: r.Size, fields: recordingFields(r), day: r.AcceptedAt.UTC().Format("20060102"),
	}
}

// Message is a voicemail, a fax or an SMS/MMS.
type Message struct {
	ID          string
	Reseller    string
	Domain      string
	User        string
	Kind        string // voicemail, fax_received, fax_sent, fax_outbox, sms
	Folder      string // sms only: inbox, outbox, sent, deleted
	ReceivedAt  time.Time
	From, To    string
	Size        int64
	SHA256      string
	ObjectKey   string
	ContentType string
	AcceptedAt  time.Time
	StreamSeq   uint64
}

// Category is the usage category a message counts under.
func (m Message) Category() string {
	switch m.Kind {
	case "voicemail":
		return "voicemail"
	case "sms":
		return "messages"
	default:
		return "fax"
	}
}

// AdmitMessage admits a message under its cap (the mailbox, or the SMS
// folder).
func (c *Catalog) AdmitMessage(ctx context.Context, m Message, cap CapCheck) (Outcome, error) {
	return c.admitCapped(ctx, artifact{
		domain: m.Domain, reseller: m.Reseller, id: m.ID, kind: m.Kind, category: m.Category(), user: m.User,
		score: m.ReceivedAt.UnixMilli(), size: m.Size, day: m.AcceptedAt.UTC().Format("20060102"),
		fields: []any{
			"id", m.ID, "kind", m.Kind, "folder", m.Folder, "reseller", m.Reseller, "domain", m.Domain, "user", m.User,
			"started_at", m.ReceivedAt.UnixMilli(), "from", m.From, "to", m.To, "size", m.Size, "sha256", m.SHA256,
			"key", m.ObjectKey, "content_type", m.ContentType, "accepted_at", m.AcceptedAt.UnixMilli(), "seq", m.StreamSeq,
		},
	}, cap)
}

// AddedSince sums the bytes admitted to a domain on the UTC days from
// since to today.
func (c *Catalog) AddedSince(ctx context.Context, domain string, since time.Time) (int64, error) {
	m, err := c.rdb.HGetAll(ctx, c.k.daily(domain)).Result()
	if err != nil {
		return 0, fmt.Errorf("catalog daily usage %s: %w", domain, err)
	}
	from := since.UTC().Format("20060102")
	var sum int64
	for day, v := range m {
		if day >= from {
			n, _ := strconv.ParseInt(v, 10, 64)
			sum += n
		}
	}
	return sum, nil
}
