package catalog_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/testenv"
)

// buildInChunks wipes c and writes recorded through BuildRecorded in
// batches of size (all at once for 0).
func buildInChunks(t *testing.T, c *catalog.Catalog, recorded []catalog.Recorded, size int) {
	t.Helper()
	if _, err := c.Wipe(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	applyChunks(t, c, recorded, size)
}

func applyChunks(t *testing.T, c *catalog.Catalog, recorded []catalog.Recorded, size int) {
	t.Helper()
	if size == 0 {
		size = len(recorded)
	}
	for i := 0; i < len(recorded); i += size {
		if err := c.BuildRecorded(ctxT(t), recorded[i:min(i+size, len(recorded))]); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBuildEqualsLive writes the live decisions (caps, an id another
// domain owns, SMS evictions, box refusals, deletions, calls with several
// recordings, the call index crossing into level 1) through the build
// path in one batch and in batches of 1 and 7, so a call's hours and a
// deletion's record come from an earlier batch: every key must equal the
// live one, and building the same batches again changes nothing.
func TestBuildEqualsLive(t *testing.T) {
	t.Parallel()
	for _, fill := range []int{0, 510} {
		t.Run(fmt.Sprint("fill ", fill), func(t *testing.T) {
			t.Parallel()
			live, rdbL, nsL := brkCatalog(t)
			brkProvision(t, live, "d0.example", "d1.example")
			b, rdbB, nsB := brkCatalog(t)
			brkProvision(t, b, "d0.example", "d1.example")
			recorded := brkLive(t, live, b, fill)
			want := dumpNS(t, rdbL, nsL)
			for _, size := range []int{0, 1, 7} {
				buildInChunks(t, b, recorded, size)
				brkCompare(t, fmt.Sprintf("built in batches of %d", size), want, dumpNS(t, rdbB, nsB))
				applyChunks(t, b, recorded, size)
				brkCompare(t, fmt.Sprintf("built twice in batches of %d", size), want, dumpNS(t, rdbB, nsB))
			}
		})
	}
}

// TestBuildRecordedEqualsOneByOne: the recorded workload (evictions, a
// deletion of an artifact of the same batch and one of an earlier batch,
// a deletion of a refusal and of an unknown id) built in its batches
// equals the same decisions applied one at a time, also built twice.
func TestBuildRecordedEqualsOneByOne(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	nsA, nsB := testenv.Namespace(t), testenv.Namespace(t)
	rdbA, rdbB := testenv.Redis(t, nsA), testenv.Redis(t, nsB)
	built, single := catalog.New(rdbA, nsA), catalog.New(rdbB, nsB)
	for _, b := range recordedWorkload(single) {
		for _, r := range b {
			if err := single.ApplyRecorded(ctx, []catalog.Recorded{r}); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := dumpNS(t, rdbB, nsB)
	for round := range 2 {
		for _, b := range recordedWorkload(built) {
			if err := built.BuildRecorded(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		brkCompare(t, fmt.Sprintf("built (round %d)", round+1), want, dumpNS(t, rdbA, nsA))
	}
}

// TestWipeRemovesOnlyWhatTheStreamDerives: Wipe removes records, indexes,
// refusals, usage, counters and claims, on a single Redis and on a
// cluster, and keeps domains, holds, overrides, bundles, usage alerts,
// tokens and the applied marks; a build after it equals a build into a
// namespace that never held anything, whatever stale state was there.
func TestWipeRemovesOnlyWhatTheStreamDerives(t *testing.T) {
	t.Parallel()
	for name, connect := range map[string]func(testing.TB, string) redis.UniversalClient{"single": testenv.Redis, "cluster": testenv.RedisCluster} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := ctxT(t)
			ns := testenv.Namespace(t)
			rdb := connect(t, ns)
			c := catalog.New(rdb, ns)
			brkProvision(t, c, "d0.example", "d1.example", "d2.example")
			kept := []string{
				ns + ":{d0.example}:holds", ns + ":{d0.example}:policy:domain", ns + ":{d0.example}:bundle",
				ns + ":{d0.example}:usage:alert", ns + ":{d0.example}:policy:idx:users", ns + ":token:abc", ns + ":holds",
			}
			for _, k := range kept {
				if err := rdb.Set(ctx, k, "config", 0).Err(); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.MarkCurrent(ctx, 7, 3); err != nil {
				t.Fatal(err)
			}
			// Stale state: a record the stream does not hold and usage that
			// counts it.
			stale := rec("d0.example", "stale", "101", "call-stale", base, 5)
			if _, err := c.AdmitRecording(ctx, stale); err != nil {
				t.Fatal(err)
			}
			for _, b := range recordedWorkload(c) {
				if err := c.ApplyRecorded(ctx, b); err != nil {
					t.Fatal(err)
				}
			}
			before := dumpNS(t, rdb, ns)
			n, err := c.Wipe(ctx)
			if err != nil {
				t.Fatal(err)
			}
			after := dumpNS(t, rdb, ns)
			for k := range before {
				_, left := after[k]
				config := strings.Contains(k, "{domains}") || strings.Contains(k, ":token:") || strings.HasSuffix(k, ":holds") ||
					strings.Contains(k, ":policy:") || strings.HasSuffix(k, ":bundle") || strings.HasSuffix(k, ":usage:alert") || strings.HasSuffix(k, ":applied")
				if left != config {
					t.Errorf("after Wipe %s present = %v", k, left)
				}
			}
			if n != len(before)-len(after) || n < 40 {
				t.Errorf("Wipe removed %d keys, %d went", n, len(before)-len(after))
			}
			if _, err := c.Record(ctx, "d0.example", "stale"); err == nil {
				t.Error("the stale record survived Wipe")
			}
			for _, b := range recordedWorkload(c) {
				if err := c.BuildRecorded(ctx, b); err != nil {
					t.Fatal(err)
				}
			}
			fresh, rdbF, nsF := brkCatalog(t)
			brkProvision(t, fresh, "d0.example", "d1.example", "d2.example")
			for _, b := range recordedWorkload(fresh) {
				if err := fresh.BuildRecorded(ctx, b); err != nil {
					t.Fatal(err)
				}
			}
			want, got := dumpNS(t, rdbF, nsF), dumpNS(t, rdb, ns)
			for k, v := range got {
				if _, ok := want[k]; !ok && strings.Contains(v, "config") {
					delete(got, k)
				}
			}
			delete(got, ":applied")
			delete(want, ":applied")
			brkCompare(t, "built after Wipe", want, got)
		})
	}
}
