package catalog

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// A rebuild writes the catalog from the recorded decisions into a
// catalog emptied first (Wipe). Admissions and refusals, nearly every
// event, are then written with plain commands instead of a script per
// domain: a record or refusal is written only if absent (HSETNX, so a
// repeated decision changes nothing, as the scripts' HEXISTS did), and the
// index entries and counters of the records that were new are written
// next, added up per key. Deletions, and what an admission did to the
// artifact it evicted, go through ApplyRecorded after them, in stream
// order. Their effects commute with the plain writes of the same batch:
// counters are sums, index sets gain and lose different members, and a
// call's hour list loses the first hour that matches, wherever a later
// recording of the call appended its own.
//
// Between its two steps a batch is half written (records without index
// entries); a rebuild that fails there is only ever resumed by starting
// over from Wipe, which is what the policy service does.

// appendScript appends hours to a call's entry that an earlier batch of
// the build wrote.
const appendScript = `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then v = v .. ',' .. ARGV[2] else v = ARGV[2] end
redis.call('HSET', KEYS[1], ARGV[1], v)
return 1
`

// catalogSuffixes are the keys of a domain the catalog derives from the
// ingest stream, after the domain's tag; Wipe removes them. Holds,
// bundles, overrides and usage alerts are config and stay.
var catalogSuffixes = []string{"h:", "hb:", "yb:", "u:", "c:", "box:", "sms:", "month:"}

var catalogNames = map[string]bool{"cn": true, "refused": true, "usage": true, "daily": true}

// registryNames are the domain registry's keys under ns:{domains}:.
var registryNames = map[string]bool{"meta": true, "num": true, "name": true, "seq": true}

// derived reports whether key is one the catalog derives from the ingest
// stream: a domain's records, indexes, refusals, usage and cap counters,
// or an id claim bucket.
func (k keys) derived(key string) bool {
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
	end := strings.Index(rest, "}:")
	if end < 0 {
		return false
	}
	suffix := rest[end+2:]
	if rest[1:end] == "domains" && registryNames[suffix] {
		return false // the domain registry (a domain may be called "domains")
	}
	if catalogNames[suffix] {
		return true
	}
	for _, s := range catalogSuffixes {
		if strings.HasPrefix(suffix, s) {
			return true
		}
	}
	return false
}

// Wipe removes every key the catalog derives from the ingest stream (on
// every master of a cluster), so that a rebuild writes into nothing. It
// reports how many keys it removed.
func (c *Catalog) Wipe(ctx context.Context) (int, error) {
	var mu chanMutex = make(chan struct{}, 1)
	total := 0
	wipe := func(ctx context.Context, node redis.UniversalClient) error {
		var batch []string
		flush := func() error {
			if len(batch) == 0 {
				return nil
			}
			pipe := c.rdb.Pipeline()
			for _, k := range batch {
				pipe.Unlink(ctx, k)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
			mu.lock()
			total += len(batch)
			mu.unlock()
			batch = batch[:0]
			return nil
		}
		it := node.Scan(ctx, 0, c.k.ns+":*", 2000).Iterator()
		for it.Next(ctx) {
			if c.k.derived(it.Val()) {
				batch = append(batch, it.Val())
				if len(batch) >= 1000 {
					if err := flush(); err != nil {
						return err
					}
				}
			}
		}
		if err := it.Err(); err != nil {
			return err
		}
		return flush()
	}
	var err error
	if cc, ok := c.rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error { return wipe(ctx, node) })
	} else {
		err = wipe(ctx, c.rdb)
	}
	if err != nil {
		return total, fmt.Errorf("catalog wipe: %w", err)
	}
	return total, nil
}

type chanMutex chan struct{}

func (m chanMutex) lock()   { m <- struct{}{} }
func (m chanMutex) unlock() { <-m }

// BuildRecorded writes one batch of recorded decisions the way a Builder
// does, and waits until it is written.
func (c *Catalog) BuildRecorded(ctx context.Context, batch []Recorded) error {
	b, err := c.NewBuilder(ctx)
	if err != nil {
		return err
	}
	addErr := b.Add(batch)
	if err := b.Close(); addErr == nil {
		addErr = err
	}
	return addErr
}

// Builder writes batches of recorded decisions in stream order into a
// catalog that Wipe emptied before the first batch, with the same
// outcome as ApplyRecorded. A batch is written in two steps: Add writes
// its records, refusals and claims (HSETNX: only what is absent), then
// hands the rest (the index entries and counters of the records that were
// new, the evictions and deletions) to the builder's own goroutine, so
// that the next batch's records are prepared and written while Redis
// indexes this one. The second steps run one at a time, in order; a
// batch's second step never reads or writes what a later batch's first
// step writes (records and claims of later admissions), and a later
// admission of an id already written finds it and writes nothing.
type Builder struct {
	c      *Catalog
	ctx    context.Context
	cancel context.CancelFunc
	queue  chan indexStep
	done   chan struct{}
	mu     sync.Mutex
	cond   *sync.Cond
	err    error
	// queued counts the second steps queued or running; touched the ids
	// their deletions and evictions name.
	queued  int
	touched map[[2]string]int
}

// indexStep is the second step of a batch.
type indexStep struct {
	plain []built
	// slow are the deletions and evictions, in stream order; an eviction
	// applies only if its admission's record was new.
	slow []slowStep
	// touched are the ids slow deletes or evicts.
	touched [][2]string
}

type slowStep struct {
	r     Recorded
	plain int // the eviction's admission in plain; -1 for a deletion
}

// built is an admission of a batch being built: what its index entries
// and counters need, and whether its record was new.
type built struct {
	domain, category, trackType string
	size, score                 int64
	day                         string
	expiry                      int64
	field                       string
	bitmap, years               string
	bit, yearBit                int64
	uidx                        string
	uscore                      float64
	hasUser                     bool
	callKey, ch, hour           string
	track                       string
	cmd                         *redis.BoolCmd
	new                         bool
}

// keyMemo remembers the keys a batch names many times, so each is built
// once per batch.
type keyMemo struct {
	hours map[hourKey]hourKeys
	users map[userKey]string
	calls map[callKey]string
	days  map[int64]string
}

type hourKey struct {
	domain, class string
	hour          int64
}

type hourKeys struct {
	bucket, bitmap, years string
	bit, yearBit          int64
	hour                  string
}

type userKey struct {
	domain, user string
	month        int64
}

type callKey struct {
	domain string
	level  int
	bucket uint32
}

func newKeyMemo() *keyMemo {
	return &keyMemo{hours: map[hourKey]hourKeys{}, users: map[userKey]string{}, calls: map[callKey]string{}, days: map[int64]string{}}
}

// buildPlace is place for the build: the same keys, built once per batch.
func (c *Catalog) buildPlace(m *keyMemo, a *Artifact, level int) (built, string) {
	class := classOf(a.Kind)
	hour := floorDiv(a.Score, hourMS)
	hk := hourKey{a.Domain, class, hour}
	h, ok := m.hours[hk]
	if !ok {
		at := time.UnixMilli(a.Score).UTC()
		h.bucket = c.k.bucket(a.Domain, class, hour)
		h.bitmap, h.bit = c.k.hourBit(a.Domain, class, hour)
		h.years, h.yearBit = c.k.years(a.Domain, class), int64(at.Year()-1970)
		h.hour = strconv.FormatInt(hour, 10)
		m.hours[hk] = h
	}
	b := built{
		domain: a.Domain, category: a.Category, trackType: a.trackType, size: a.Size, score: a.Score,
		field: hashID(a.ID).field, bitmap: h.bitmap, bit: h.bit, years: h.years, yearBit: h.yearBit, track: a.trackKey,
	}
	acceptedDay := floorDiv(a.AcceptedAt.UnixMilli(), 24*hourMS)
	day, ok := m.days[acceptedDay]
	if !ok {
		day = a.AcceptedAt.UTC().Format("20060102")
		m.days[acceptedDay] = day
	}
	b.day = day
	if a.trackType == trackCounter {
		b.expiry = monthExpiry(a.AcceptedAt)
	}
	if a.Kind == KindRecording && a.User != "" {
		at := time.UnixMilli(a.Score).UTC()
		ms := monthStart(at).UnixMilli()
		uk := userKey{a.Domain, a.User, ms}
		u, ok := m.users[uk]
		if !ok {
			u = c.k.userIndex(a.Domain, a.User, monthOf(at))
			m.users[uk] = u
		}
		b.uidx, b.uscore, b.hasUser = u, float64(a.Score-ms), true
	}
	if a.Kind == KindRecording && a.CallID != "" {
		f, n := callHash(a.CallID)
		ck := callKey{a.Domain, level, n % (1 << level)}
		k, ok := m.calls[ck]
		if !ok {
			k = c.k.calls(a.Domain, level, ck.bucket)
			m.calls[ck] = k
		}
		b.callKey, b.ch, b.hour = k, f, h.hour
	}
	return b, h.bucket
}

// NewBuilder starts a build. The scripts it runs are loaded first: a
// second step is not safe to run twice, so it never retries.
func (c *Catalog) NewBuilder(ctx context.Context) (*Builder, error) {
	if err := c.loadScripts(ctx); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	b := &Builder{c: c, ctx: ctx, cancel: cancel, queue: make(chan indexStep, 1), done: make(chan struct{}), touched: map[[2]string]int{}}
	b.cond = sync.NewCond(&b.mu)
	go func() {
		defer close(b.done)
		for step := range b.queue {
			if b.failed() == nil {
				if err := c.buildIndexes(ctx, step); err != nil {
					b.fail(err)
				}
			}
			b.stepDone(step)
		}
	}()
	return b, nil
}

func (b *Builder) fail(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.cond.Broadcast()
	b.mu.Unlock()
	b.cancel()
}

func (b *Builder) failed() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// Add writes a batch's records, refusals and claims and queues the rest.
// It returns the first error of any batch so far; after one, the build is
// over (start again from Wipe). The batch may be reused once Add returns.
func (b *Builder) Add(batch []Recorded) error {
	// A deletion or eviction runs after its batch's plain writes, which is
	// only the same as in stream order while no admission or refusal of
	// the id it names comes after it in that batch or while it waits: a
	// stream never holds one (a tombstone follows its admission), but a
	// batch is cut there, and waits for the queued second steps, all the
	// same.
	for len(batch) > 0 {
		if err := b.failed(); err != nil {
			return err
		}
		cut, wait := b.split(batch)
		if wait {
			b.idle()
		}
		step, err := b.c.buildRecords(b.ctx, batch[:cut])
		if err != nil {
			b.fail(err)
			return b.failed()
		}
		b.mu.Lock()
		b.queued++
		for _, k := range step.touched {
			b.touched[k]++
		}
		b.mu.Unlock()
		select {
		case b.queue <- step:
		case <-b.done:
			return b.failed()
		}
		batch = batch[cut:]
	}
	return nil
}

// split says how much of batch can be one step (up to the first admission
// or refusal of an id a deletion or eviction before it in batch names),
// and whether that part must wait for the queued second steps (it writes
// an id one of them deletes or evicts).
func (b *Builder) split(batch []Recorded) (int, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	here := map[[2]string]bool{}
	wait := false
	for i := range batch {
		r := &batch[i]
		var k [2]string
		switch r.Op {
		case OpAdmission:
			k = [2]string{r.Admission.Artifact.Domain, r.Admission.Artifact.ID}
		case OpRefusal:
			k = [2]string{r.Refusal.Domain, r.Refusal.ID}
		}
		if r.Op == OpAdmission || r.Op == OpRefusal {
			if here[k] {
				return i, wait
			}
			if b.touched[k] > 0 {
				if i > 0 {
					return i, wait
				}
				wait = true
			}
		}
		switch {
		case r.Op == OpDeletion:
			here[[2]string{r.Deletion.Domain, r.Deletion.ID}] = true
		case r.Op == OpAdmission && r.Admission.EvictedID != "":
			here[[2]string{r.Admission.Artifact.Domain, r.Admission.EvictedID}] = true
		}
	}
	return len(batch), wait
}

// idle waits until every queued second step has run.
func (b *Builder) idle() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.queued > 0 && b.err == nil {
		b.cond.Wait()
	}
}

// stepDone forgets what a finished second step deleted or evicted.
func (b *Builder) stepDone(step indexStep) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.queued--
	for _, k := range step.touched {
		if b.touched[k]--; b.touched[k] <= 0 {
			delete(b.touched, k)
		}
	}
	b.cond.Broadcast()
}

// Close waits for every queued batch and returns the first error.
func (b *Builder) Close() error {
	close(b.queue)
	<-b.done
	b.cancel()
	return b.failed()
}

// buildRecords is a batch's first step.
func (c *Catalog) buildRecords(ctx context.Context, batch []Recorded) (indexStep, error) {
	var named []string
	for _, r := range batch {
		switch r.Op {
		case OpAdmission:
			if err := CheckArtifact(r.Admission.Artifact); err != nil {
				return indexStep{}, err
			}
			named = append(named, r.Admission.Artifact.Domain)
		case OpRefusal:
			named = append(named, r.Refusal.Domain)
		}
	}
	nums, err := c.domainNumbers(ctx, named)
	if err != nil {
		return indexStep{}, err
	}
	var step indexStep
	step.plain = make([]built, 0, len(batch))
	memo := newKeyMemo()
	scratch := make([]value, 0, fieldCount+2)
	pipe := c.rdb.Pipeline()
	for i := range batch {
		r := &batch[i]
		switch r.Op {
		case OpAdmission:
			ad := &r.Admission
			a := &ad.Artifact
			b, bucket := c.buildPlace(memo, a, ad.CallLevel)
			h := hashID(a.ID)
			pipe.HSetNX(ctx, c.k.claims(h), h.claim, claimValue(nums[a.Domain], classOf(a.Kind), floorDiv(a.Score, hourMS)))
			s := a.rec
			s.State, s.Pending, s.Level = StateAdmitted, "", ad.CallLevel
			if a.Kind != KindRecording || a.CallID == "" {
				s.Level = 0
			}
			vs := s.appendValues(scratch[:0], a.Domain, false)
			if ad.EvictedID != "" {
				for len(vs) < fEvicted {
					vs = append(vs, value{hole: true})
				}
				vs = append(vs, str(encodeID(ad.EvictedID)))
				step.slow = append(step.slow, slowStep{r: Recorded{Op: opEviction, Admission: *ad}, plain: len(step.plain)})
				step.touched = append(step.touched, [2]string{a.Domain, ad.EvictedID})
			}
			b.cmd = pipe.HSetNX(ctx, bucket, b.field, packValues(vs))
			step.plain = append(step.plain, b)
		case OpRefusal:
			f := &r.Refusal
			h := hashID(f.ID)
			if f.Reason != ErrIDConflict && !f.At.IsZero() {
				pipe.HSetNX(ctx, c.k.claims(h), h.claim, claimValue(nums[f.Domain], classOf(f.Kind), hourOf(f.At)))
			}
			s := f.stored("r")
			s.Reason = f.Reason
			pipe.HSetNX(ctx, c.k.refused(f.Domain), h.field, s.packRefused(f.Domain))
		case OpDeletion:
			step.slow = append(step.slow, slowStep{r: *r, plain: -1})
			step.touched = append(step.touched, [2]string{r.Deletion.Domain, r.Deletion.ID})
		}
	}
	if pipe.Len() > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return indexStep{}, fmt.Errorf("catalog build records: %w", err)
		}
	}
	for i := range step.plain {
		step.plain[i].new, step.plain[i].cmd = step.plain[i].cmd.Val(), nil
	}
	return step, nil
}

// buildIndexes is a batch's second step: the index entries and counters
// of the admissions whose records were new, added up per key; then the
// hours of call entries an earlier batch wrote; then the evictions and
// deletions, in stream order.
func (c *Catalog) buildIndexes(ctx context.Context, step indexStep) error {
	if err := c.buildEntries(ctx, step.plain); err != nil {
		return err
	}
	var slow []Recorded
	for _, s := range step.slow {
		if s.plain < 0 || step.plain[s.plain].new {
			slow = append(slow, s.r)
		}
	}
	if len(slow) == 0 {
		return nil
	}
	// Deletions and evictions are idempotent: one retry after the scripts
	// were reloaded is safe.
	return retryOnReload(func() error { return c.applyRecorded(ctx, slow) })
}

func (c *Catalog) buildEntries(ctx context.Context, plain []built) error {
	type domainSums struct {
		usage      map[string][2]int64
		categories []string
		total      int64
		daily      map[string]int64
		days       []string
		calls      int64
	}
	type callEntry struct{ key, field string }
	zsets := map[string][]redis.Z{}
	var zorder []string
	bits := map[string][]int64{}
	var border []string
	calls := map[callEntry][]string{}
	var corder []callEntry
	counters := map[string]int64{}
	expires := map[string]int64{}
	var torder []string
	sums := map[string]*domainSums{}
	var dorder []string
	addZ := func(key string, score float64, member string) {
		if _, ok := zsets[key]; !ok {
			zorder = append(zorder, key)
		}
		zsets[key] = append(zsets[key], redis.Z{Score: score, Member: member})
	}
	setBit := func(key string, bit int64) {
		m, ok := bits[key]
		if !ok {
			border = append(border, key)
		}
		for _, b := range m {
			if b == bit {
				return
			}
		}
		bits[key] = append(m, bit)
	}
	for i := range plain {
		b := &plain[i]
		if !b.new {
			continue
		}
		setBit(b.bitmap, b.bit)
		setBit(b.years, b.yearBit)
		if b.hasUser {
			addZ(b.uidx, b.uscore, b.field)
		}
		s := sums[b.domain]
		if s == nil {
			s = &domainSums{usage: map[string][2]int64{}, daily: map[string]int64{}}
			sums[b.domain] = s
			dorder = append(dorder, b.domain)
		}
		if b.ch != "" {
			e := callEntry{b.callKey, b.ch}
			if _, ok := calls[e]; !ok {
				corder = append(corder, e)
			}
			calls[e] = append(calls[e], b.hour)
			s.calls++
		}
		switch b.trackType {
		case trackSet:
			addZ(b.track, float64(b.score), b.field)
		case trackCounter:
			if _, ok := counters[b.track]; !ok {
				torder = append(torder, b.track)
			}
			counters[b.track]++
			expires[b.track] = b.expiry
		}
		u, ok := s.usage[b.category]
		if !ok {
			s.categories = append(s.categories, b.category)
		}
		s.usage[b.category] = [2]int64{u[0] + b.size, u[1] + 1}
		s.total += b.size
		if _, ok := s.daily[b.day]; !ok {
			s.days = append(s.days, b.day)
		}
		s.daily[b.day] += b.size
	}
	if len(dorder) == 0 {
		return nil
	}
	pipe := c.rdb.Pipeline()
	for _, key := range zorder {
		pipe.ZAdd(ctx, key, zsets[key]...)
	}
	for _, key := range border {
		for _, bit := range bits[key] {
			pipe.SetBit(ctx, key, bit, 1)
		}
	}
	entries := make([]*redis.BoolCmd, len(corder))
	for i, e := range corder {
		entries[i] = pipe.HSetNX(ctx, e.key, e.field, strings.Join(calls[e], ","))
	}
	for _, key := range torder {
		pipe.IncrBy(ctx, key, counters[key])
		pipe.ExpireAt(ctx, key, time.Unix(expires[key], 0))
	}
	for _, d := range dorder {
		s := sums[d]
		for _, category := range s.categories {
			u := s.usage[category]
			pipe.HIncrBy(ctx, c.k.usage(d), category+":bytes", u[0])
			pipe.HIncrBy(ctx, c.k.usage(d), category+":count", u[1])
		}
		pipe.HIncrBy(ctx, c.k.usage(d), "total:bytes", s.total)
		for _, day := range s.days {
			pipe.HIncrBy(ctx, c.k.daily(d), day, s.daily[day])
		}
		if s.calls > 0 {
			pipe.IncrBy(ctx, c.k.callCount(d), s.calls)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("catalog build indexes: %w", err)
	}
	pipe = c.rdb.Pipeline()
	for i, e := range corder {
		if !entries[i].Val() {
			c.appendS.Run(ctx, pipe, []string{e.key}, e.field, strings.Join(calls[e], ","))
		}
	}
	if pipe.Len() == 0 {
		return nil
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("catalog build call entries: %w", err)
	}
	return nil
}
