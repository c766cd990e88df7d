package catalog

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Pending is one artifact to decide, with its effective cap.
type Pending struct {
	Artifact Artifact
	Cap      CapCheck
}

// maxCallRun bounds the recordings with a call id of one domain that share
// a pipeline: below it the run itself moves a domain's call count across
// at most one level boundary, and each call declares the keys of the
// level at the run's start and the two after it, so another consumer may
// add up to three times as many entries meanwhile. Past that, the script
// decides nothing and the artifact is decided on its own after the run,
// later in the order than the batch placed it.
const maxCallRun = 255

// DecideMany decides a batch in order, as Decide would one after the
// other, in two round trips for a run of artifacts: the id claims (with
// the call counts), then a pipeline of decide scripts. Redis runs a
// pipeline's scripts in order, so every cap is still decided in the
// batch's order. An artifact whose cap evicts (an SMS folder) is decided
// on its own between runs, since which entry it evicts depends on the
// decisions before it. Results and errors are per artifact; an error
// leaves that artifact undecided (its event is retried).
func (c *Catalog) DecideMany(ctx context.Context, batch []Pending) ([]Decision, []error) {
	out := make([]Decision, len(batch))
	errs := make([]error, len(batch))
	for i := 0; i < len(batch); {
		if batch[i].Cap.Mode == EvictOldest {
			out[i], errs[i] = c.Decide(ctx, batch[i].Artifact, batch[i].Cap)
			i++
			continue
		}
		j, calls := i, map[string]int{}
		for j < len(batch) && batch[j].Cap.Mode != EvictOldest {
			a := batch[j].Artifact
			if a.Kind == KindRecording && a.CallID != "" {
				if calls[a.Domain] == maxCallRun {
					break
				}
				calls[a.Domain]++
			}
			j++
		}
		c.decideRun(ctx, batch[i:j], out[i:j], errs[i:j])
		i = j
	}
	return out, errs
}

// decideRun decides a run of artifacts none of which evicts.
func (c *Catalog) decideRun(ctx context.Context, run []Pending, out []Decision, errs []error) {
	claims := c.claimAll(ctx, run)
	scripts := make([]*redis.Cmd, len(run))
	again := make([]bool, len(run))
	build := func(pipe redis.Pipeliner) {
		for i, p := range run {
			cl := claims[i]
			if cl.err != nil {
				errs[i] = cl.err
				continue
			}
			if cl.elsewhere {
				again[i] = true // claimed at another time: answered on its own below
				continue
			}
			keys, args := c.decideCall(p.Artifact, p.Cap, cl.mode, cl.level, "", "", "")
			scripts[i] = c.decide.Run(ctx, pipe, keys, args...)
		}
	}
	pipe := c.rdb.Pipeline()
	build(pipe)
	if err := c.execScripts(ctx, pipe, "decide"); errors.Is(err, errReload) {
		pipe = c.rdb.Pipeline()
		build(pipe)
		err = c.execScripts(ctx, pipe, "decide")
		_ = err // each script's own result says how it went
	}
	for i, cmd := range scripts {
		if cmd == nil {
			continue
		}
		res, err := cmd.Slice()
		if err != nil {
			errs[i] = fmt.Errorf("catalog decide %s: %w", run[i].Artifact.ID, err)
			continue
		}
		switch code, _ := res[0].(int64); code {
		case 3:
			errs[i] = fmt.Errorf("catalog decide %s: evict: %w", run[i].Artifact.ID, ErrPublishPending)
		case 5:
			errs[i] = fmt.Errorf("catalog decide %s: %w", run[i].Artifact.ID, ErrHashCollision)
		case 2, 4:
			// The call index grew past the declared levels (another
			// consumer admitted a great deal meanwhile): decided on its
			// own, after the run.
			again[i] = true
		default:
			out[i] = decisionOf(res)
		}
	}
	for i, redo := range again {
		if redo && errs[i] == nil {
			out[i], errs[i] = c.Decide(ctx, run[i].Artifact, run[i].Cap)
		}
	}
}

// Confirmed is one owed effect carried out, for DoneMany.
type Confirmed struct {
	Domain, ID string
	Effect     byte
}

// DoneMany confirms effects as Done does one at a time, in two round
// trips: the id claims that say where each record is, then the done
// scripts in one pipeline. Confirming an effect again changes nothing.
// Errors are per item.
func (c *Catalog) DoneMany(ctx context.Context, items []Confirmed) []error {
	errs := make([]error, len(items))
	if len(items) == 0 {
		return errs
	}
	pipe := c.rdb.Pipeline()
	claims := make([]*redis.StringCmd, len(items))
	for i, it := range items {
		h := hashID(it.ID)
		claims[i] = pipe.HGet(ctx, c.k.claims(h), h.claim)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		for i := range errs {
			errs[i] = fmt.Errorf("catalog effects: %w", err)
		}
		return errs
	}
	buckets := make([]string, len(items))
	for i, it := range items {
		buckets[i] = c.k.absent(it.Domain)
		v, err := claims[i].Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		cl, err := parseClaim(v)
		if err != nil {
			errs[i] = err
			continue
		}
		num, ok, err := c.lookupNumber(ctx, it.Domain)
		if err != nil {
			errs[i] = err
			continue
		}
		if ok && cl.num == num {
			buckets[i] = c.k.bucket(it.Domain, cl.class, cl.hour)
		}
	}
	scripts := make([]*redis.Cmd, len(items))
	_ = retryOnReload(func() error {
		pipe := c.rdb.Pipeline()
		for i, it := range items {
			if errs[i] == nil {
				scripts[i] = c.done.Run(ctx, pipe, []string{buckets[i], c.k.refused(it.Domain)}, hashID(it.ID).field, encodeID(it.ID), string(it.Effect))
			}
		}
		return c.execScripts(ctx, pipe, "effects")
	})
	for i, cmd := range scripts {
		if cmd == nil {
			continue
		}
		// Each script's own error says how it went (a failed pipeline
		// sets it on every command).
		if e := cmd.Err(); e != nil && !errors.Is(e, redis.Nil) {
			errs[i] = fmt.Errorf("catalog effect %c of %s: %w", items[i].Effect, items[i].ID, e)
		}
	}
	return errs
}
