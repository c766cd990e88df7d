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
