package catalog

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// brk2Hook runs fire once, just before the first pipeline that starts
// with an EVALSHA (DecideMany's script round trip): "another consumer"
// acting between DecideMany's two round trips.
type brk2Hook struct {
	once sync.Once
	fire func()
}

func (h *brk2Hook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *brk2Hook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return next
}
func (h *brk2Hook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && strings.EqualFold(cmds[0].Name(), "evalsha") {
			h.once.Do(h.fire)
		}
		return next(ctx, cmds)
	}
}

func brk2Second(t *testing.T, ns string) *Catalog {
	t.Helper()
	opt, err := redis.ParseURL(os.Getenv("CALLVAULT_TEST_REDIS_URL"))
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	return New(rdb, ns)
}

// TestBreak2DecideManyOrderUnderConcurrentGrowth: DecideMany promises the
// decisions Decide would make one after the other, in the batch's order.
// A recording whose call entry finds the index two levels up (another
// consumer admitted >= 512 call entries between DecideMany's claim read
// and its scripts) answers code 4 and is decided again only after the
// whole run, so later artifacts of the batch take the cap before it: with
// a monthly cap of 1, r1 (first) is refused and r2 (second) admitted.
// One-by-one decisions, whatever the other consumer does, admit r1 and
// refuse r2.
func TestBreak2DecideManyOrderUnderConcurrentGrowth(t *testing.T) {
	c, rdb, ns := brkInternal(t)
	ctx := context.Background()
	other := brk2Second(t, ns)
	at := time.Date(2026, 11, 1, 9, 30, 0, 0, time.UTC)
	if _, err := c.ApplyDomain(ctx, Domain{Domain: "a.example", Reseller: "r1"}, 3); err != nil {
		t.Fatal(err)
	}
	mk := func(cat *Catalog, id, call, mode string) Artifact {
		return cat.RecordingArtifact(Recording{ID: id, Reseller: "r1", Domain: "a.example", User: "u", CallID: call, Mode: mode,
			StartedAt: at, Size: 1, AcceptedAt: at, ObjectKey: "recordings/a.example/" + id})
	}
	h := &brk2Hook{fire: func() {
		var fill []Pending
		for i := 0; i < 1100; i++ {
			fill = append(fill, Pending{Artifact: mk(other, fmt.Sprintf("fill-%d", i), fmt.Sprintf("fc-%d", i), "on_demand")})
		}
		_, errs := other.DecideMany(ctx, fill)
		for _, err := range errs {
			if err != nil {
				t.Errorf("filler: %v", err)
				return
			}
		}
	}}
	rdb.(*redis.Client).AddHook(h)
	cap1 := CapCheck{Mode: MonthlyLimit, Limit: 1}
	out, errs := c.DecideMany(ctx, []Pending{{Artifact: mk(c, "r1", "call-1", "automatic"), Cap: cap1}, {Artifact: mk(c, "r2", "", "automatic"), Cap: cap1}})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("DecideMany[%d]: %v", i, err)
		}
	}
	if !out[0].Admitted() || out[1].Admitted() {
		t.Errorf("DecideMany under a concurrent consumer: r1 = %s %s, r2 = %s %s; want r1 admitted, r2 refused monthly_cap (batch order)",
			out[0].State, out[0].Reason, out[1].State, out[1].Reason)
	}
}

// TestBreak2DecideManyAfterScriptFlush: a Redis that lost its scripts
// (SCRIPT FLUSH, a restart) between batches: DecideMany reloads them and
// decides every artifact. It flushes an in-process server of its own: a
// flush of the shared test server would hit every test running beside it.
func TestBreak2DecideManyAfterScriptFlush(t *testing.T) {
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	c := New(rdb, "flush")
	ctx := context.Background()
	at := time.Date(2026, 11, 1, 9, 30, 0, 0, time.UTC)
	if _, err := c.ApplyDomain(ctx, Domain{Domain: "a.example", Reseller: "r1"}, 3); err != nil {
		t.Fatal(err)
	}
	var batch []Pending
	for i := 0; i < 5; i++ {
		batch = append(batch, Pending{Artifact: c.RecordingArtifact(Recording{ID: fmt.Sprintf("s-%d", i), Reseller: "r1", Domain: "a.example",
			User: "u", CallID: "c", Mode: "automatic", StartedAt: at, Size: 1, AcceptedAt: at, ObjectKey: "k"})})
	}
	if _, errs := c.DecideMany(ctx, batch[:1]); errs[0] != nil {
		t.Fatal(errs[0])
	}
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	out, errs := c.DecideMany(ctx, batch)
	for i := range batch {
		if errs[i] != nil || (i > 0 && (!out[i].Admitted() || out[i].Repeat)) || (i == 0 && !out[i].Repeat) {
			t.Errorf("after SCRIPT FLUSH [%d] = %+v, %v", i, out[i], errs[i])
		}
	}
}
