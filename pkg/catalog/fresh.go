package catalog

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// decisionKeyKinds are the kinds of domain keys the recorded decisions
// write: ClearDecisions removes them. The domain's holds, policy, bundle
// and usage alert keys belong to the configuration (or to live admission
// alone) and stay.
var decisionKeyKinds = []string{"art:", "idx:", "user:", "call:", "box:", "sms:", "month:"}

// isDecisionKey reports whether key (of the namespace) is written by a
// recorded decision: an artifact record, an index, a call set, a
// cap-tracking set or counter, the usage or daily counters of a domain, or
// a bucket of the id registry.
func (k keys) isDecisionKey(key string) bool {
	rest, ok := strings.CutPrefix(key, k.ns+":")
	if !ok {
		return false
	}
	if strings.HasPrefix(rest, "ids:{") {
		return true
	}
	if !strings.HasPrefix(rest, "{") {
		return false
	}
	i := strings.Index(rest, "}:")
	if i < 0 {
		return false
	}
	rest = rest[i+2:]
	if rest == "usage" || rest == "daily" {
		return true
	}
	for _, p := range decisionKeyKinds {
		if strings.HasPrefix(rest, p) {
			return true
		}
	}
	return false
}

// ClearDecisions removes every key the recorded decisions write (see
// isDecisionKey), on every node of a cluster, so that a replay can start
// from an empty catalog. A record that still owes an effect (a decision
// not published yet, a deletion whose tombstone is not in the stream) is
// not in the streams, so clearing would lose it: then nothing is removed
// and cleared is false, and the caller replays over what Redis holds.
func (c *Catalog) ClearDecisions(ctx context.Context) (cleared bool, err error) {
	owes := false
	check := func(ctx context.Context, keys []string) error {
		pipe := c.rdb.Pipeline()
		cmds := make([]*redis.BoolCmd, 0, len(keys))
		for _, k := range keys {
			if strings.Contains(k, "}:art:") {
				cmds = append(cmds, pipe.HExists(ctx, k, "pe"))
			}
		}
		if len(cmds) == 0 {
			return nil
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
		for _, cmd := range cmds {
			if cmd.Val() {
				owes = true
			}
		}
		return nil
	}
	unlink := func(ctx context.Context, keys []string) error {
		pipe := c.rdb.Pipeline()
		for _, k := range keys {
			pipe.Unlink(ctx, k)
		}
		_, err := pipe.Exec(ctx)
		return err
	}
	if err := c.eachDecisionKeys(ctx, check); err != nil {
		return false, fmt.Errorf("catalog clear decisions: %w", err)
	}
	if owes {
		return false, nil
	}
	if err := c.eachDecisionKeys(ctx, unlink); err != nil {
		return false, fmt.Errorf("catalog clear decisions: %w", err)
	}
	return true, nil
}

// eachDecisionKeys calls f with the decision keys of the namespace, up to
// 1,000 at a time, scanning every master of a cluster.
func (c *Catalog) eachDecisionKeys(ctx context.Context, f func(context.Context, []string) error) error {
	var mu sync.Mutex // the masters of a cluster are scanned at once
	locked := func(ctx context.Context, keys []string) error {
		mu.Lock()
		defer mu.Unlock()
		return f(ctx, keys)
	}
	scan := func(ctx context.Context, node redis.UniversalClient) error {
		var batch []string
		iter := node.Scan(ctx, 0, c.k.ns+":*", 5000).Iterator()
		for iter.Next(ctx) {
			if k := iter.Val(); c.k.isDecisionKey(k) {
				batch = append(batch, k)
				if len(batch) >= 1000 {
					if err := locked(ctx, batch); err != nil {
						return err
					}
					batch = batch[:0]
				}
			}
		}
		if err := iter.Err(); err != nil {
			return err
		}
		if len(batch) == 0 {
			return nil
		}
		return locked(ctx, batch)
	}
	if cc, ok := c.rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error { return scan(ctx, node) })
	}
	return scan(ctx, c.rdb)
}

// Replay applies recorded decisions, in stream order, to a catalog that
// held none when it began (after ClearDecisions): it knows every record it
// wrote, so it needs no read and no script. Plain commands in one pipeline
// per batch leave the same keys and values as ApplyRecorded would: the
// same records, indexes, call sets and cap-tracking sets, and counters
// that add up to the same sums (written once per batch). A Replay is used
// by one goroutine at a time.
type Replay struct {
	c       *Catalog
	records map[string]*replayed // by artifact key
	claimed map[string]struct{}  // ids registered
}

// replayed is what a Replay wrote for one artifact: its state and, while
// it is admitted, what its removal undoes.
type replayed struct {
	state    State
	size     int64
	kind     string
	user     string
	callID   string
	category string
	track    string // the cap-tracking set, "" for none (or a counter)
}

// NewReplay starts a replay into a catalog cleared of decisions.
func (c *Catalog) NewReplay() *Replay {
	return &Replay{c: c, records: map[string]*replayed{}, claimed: map[string]struct{}{}}
}

// replayBatch is what one batch adds up before writing it.
type replayBatch struct {
	pipe     redis.Pipeliner
	usage    map[string]map[string]int64 // usage key -> field -> delta
	daily    map[string]map[string]int64 // daily key -> day -> bytes
	counters map[string]int64            // monthly counter -> admissions
	expires  map[string]int64            // monthly counter -> expiry (s)
	ids      map[string][]any            // registry bucket -> id, domain, ...
	// Members added to sorted sets and sets, one command per key: each
	// member is added once in a replay, so one removed in the same batch
	// is simply dropped.
	zadds map[string][]redis.Z
	sadds map[string][]any
}

func (b *replayBatch) zadd(key string, z redis.Z) { b.zadds[key] = append(b.zadds[key], z) }

func (b *replayBatch) zrem(ctx context.Context, key, id string) {
	zs := b.zadds[key]
	for i, z := range zs {
		if z.Member == id {
			b.zadds[key] = append(zs[:i], zs[i+1:]...)
			return
		}
	}
	b.pipe.ZRem(ctx, key, id)
}

func (b *replayBatch) srem(ctx context.Context, key, id string) {
	ms := b.sadds[key]
	for i, m := range ms {
		if m == id {
			b.sadds[key] = append(ms[:i], ms[i+1:]...)
			return
		}
	}
	b.pipe.SRem(ctx, key, id)
}

func (b *replayBatch) add(m map[string]map[string]int64, key, field string, n int64) {
	f := m[key]
	if f == nil {
		f = map[string]int64{}
		m[key] = f
	}
	f[field] += n
}

// Apply writes one batch of recorded decisions in one pipeline.
func (r *Replay) Apply(ctx context.Context, batch []Recorded) error {
	return r.Prepare(ctx, batch).Exec(ctx)
}

// ReplayWrite is one batch of a Replay, ready to be written.
type ReplayWrite struct{ pipe redis.Pipeliner }

// Prepare turns one batch of recorded decisions into the pipeline that
// writes it, reading nothing: the next batch can be prepared while this
// one is written. Batches must be written in the order they were
// prepared.
func (r *Replay) Prepare(ctx context.Context, batch []Recorded) *ReplayWrite {
	c := r.c
	b := &replayBatch{
		pipe: c.rdb.Pipeline(), usage: map[string]map[string]int64{}, daily: map[string]map[string]int64{},
		counters: map[string]int64{}, expires: map[string]int64{}, ids: map[string][]any{},
		zadds: map[string][]redis.Z{}, sadds: map[string][]any{},
	}
	for _, rec := range batch {
		switch rec.Op {
		case OpAdmission:
			r.admit(ctx, b, rec.Admission)
		case OpRefusal:
			r.refuse(ctx, b, rec.Refusal)
		case OpDeletion:
			r.delete(ctx, b, rec.Deletion)
		}
	}
	for key, zs := range b.zadds {
		if len(zs) > 0 {
			b.pipe.ZAdd(ctx, key, zs...)
		}
	}
	for key, ms := range b.sadds {
		if len(ms) > 0 {
			b.pipe.SAdd(ctx, key, ms...)
		}
	}
	for key, fields := range b.ids {
		b.pipe.HSet(ctx, key, fields...)
	}
	for key, fields := range b.usage {
		for f, n := range fields {
			b.pipe.HIncrBy(ctx, key, f, n)
		}
	}
	for key, days := range b.daily {
		for day, n := range days {
			b.pipe.HIncrBy(ctx, key, day, n)
		}
	}
	for key, n := range b.counters {
		b.pipe.IncrBy(ctx, key, n)
		b.pipe.ExpireAt(ctx, key, time.Unix(b.expires[key], 0))
	}
	return &ReplayWrite{pipe: b.pipe}
}

// Exec writes the batch.
func (w *ReplayWrite) Exec(ctx context.Context) error {
	if w.pipe.Len() == 0 {
		return nil
	}
	if _, err := w.pipe.Exec(ctx); err != nil {
		return fmt.Errorf("catalog replay: %w", err)
	}
	return nil
}

// claim registers id for domain unless an earlier decision did.
func (r *Replay) claim(b *replayBatch, id, domain string) {
	if _, ok := r.claimed[id]; ok {
		return
	}
	r.claimed[id] = struct{}{}
	key := r.c.k.ids(id)
	b.ids[key] = append(b.ids[key], id, domain)
}

// remove takes id out of the given index, user index, call set and
// cap-tracking set and out of the usage of category, as removeLua does.
func (r *Replay) remove(ctx context.Context, b *replayBatch, domain, id, kind, user, callID, track, category string, size int64) {
	k := r.c.k
	b.zrem(ctx, k.index(domain, kind), id)
	if user != "" {
		b.zrem(ctx, k.userIndex(domain, user, kind), id)
	}
	if callID != "" {
		b.srem(ctx, k.call(domain, callID), id)
	}
	if track != "" {
		b.zrem(ctx, track, id)
	}
	usage := k.usage(domain)
	b.add(b.usage, usage, category+":bytes", -size)
	b.add(b.usage, usage, category+":count", -1)
	b.add(b.usage, usage, "total:bytes", -size)
}

func (r *Replay) admit(ctx context.Context, b *replayBatch, ad Admission) {
	a, k := ad.Artifact, r.c.k
	r.claim(b, a.ID, a.Domain)
	art := k.artifact(a.Domain, a.ID)
	if _, ok := r.records[art]; ok {
		return // decided before: the record stands
	}
	track := ""
	if a.trackType == trackSet {
		track = a.trackKey
	}
	fields := a.fields
	if ev := ad.EvictedID; ev != "" {
		fields = append(fields[:len(fields):len(fields)], "ev", ev)
		victim := k.artifact(a.Domain, ev)
		// As applyManyScript: the victim leaves the keys of the artifact
		// that evicted it (the same folder), with its own size.
		if v, ok := r.records[victim]; ok && v.state == StateAdmitted {
			r.remove(ctx, b, a.Domain, ev, a.Kind, a.User, a.CallID, track, a.Category, v.size)
			b.pipe.HSet(ctx, victim, "st", string(StateDeleted), "rs", "cap_evicted", "ru", "folder cap: the oldest makes room for "+a.ID,
				"ac", "policy", "dt", a.AcceptedAt.UnixMilli())
			v.state = StateDeleted
		}
	}
	b.pipe.HSet(ctx, art, fields...)
	z := redis.Z{Score: float64(a.Score), Member: a.ID}
	b.zadd(k.index(a.Domain, a.Kind), z)
	if a.User != "" {
		b.zadd(k.userIndex(a.Domain, a.User, a.Kind), z)
	}
	if a.CallID != "" {
		b.sadds[k.call(a.Domain, a.CallID)] = append(b.sadds[k.call(a.Domain, a.CallID)], a.ID)
	}
	usage := k.usage(a.Domain)
	b.add(b.usage, usage, a.Category+":bytes", a.Size)
	b.add(b.usage, usage, a.Category+":count", 1)
	b.add(b.usage, usage, "total:bytes", a.Size)
	b.add(b.daily, k.daily(a.Domain), a.AcceptedAt.UTC().Format("20060102"), a.Size)
	switch a.trackType {
	case trackSet:
		b.zadd(a.trackKey, z)
	case trackCounter:
		b.counters[a.trackKey]++
		b.expires[a.trackKey] = monthExpiry(a.AcceptedAt)
	}
	r.records[art] = &replayed{state: StateAdmitted, size: a.Size, kind: a.Kind, user: a.User, callID: a.CallID, category: a.Category, track: track}
}

func (r *Replay) refuse(ctx context.Context, b *replayBatch, f Refusal) {
	if f.Reason != ErrIDConflict {
		r.claim(b, f.ID, f.Domain)
	}
	art := r.c.k.artifact(f.Domain, f.ID)
	if _, ok := r.records[art]; ok {
		return
	}
	keyField, keyValue := storedKey(f.Kind, f.Domain, f.ID, f.ObjectKey)
	b.pipe.HSet(ctx, art, "st", string(StateRefused), "rs", f.Reason, "id", f.ID, "kind", f.Kind, keyField, keyValue, "size", f.Size,
		"seq", f.Seq, "accepted_at", f.AcceptedAt.UnixMilli())
	r.records[art] = &replayed{state: StateRefused}
}

// delete applies a tombstone as the gate does with no checks: an artifact
// this replay did not admit (never admitted, refused, already deleted) is
// left alone.
func (r *Replay) delete(ctx context.Context, b *replayBatch, d Deletion) {
	art := r.c.k.artifact(d.Domain, d.ID)
	v, ok := r.records[art]
	if !ok || v.state != StateAdmitted {
		return
	}
	r.remove(ctx, b, d.Domain, d.ID, v.kind, v.user, v.callID, v.track, v.category, v.size)
	b.pipe.HSet(ctx, art, "st", string(StateDeleted), "rs", d.Reason, "ru", d.Rule, "ac", d.Actor, "dt", d.At.UnixMilli())
	v.state = StateDeleted
}
