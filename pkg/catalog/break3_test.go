package catalog_test

// Third round of attack tests: steps failing after the one before
// succeeded, and replays compared with the live state.

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/testenv"
)

// ownRedis starts a Redis server of the test's own on a free loopback
// port, with the deployed listpack limits, and stops it when the test ends.
func ownRedis(t *testing.T) (redis.UniversalClient, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	cmd := exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--hash-max-listpack-entries", "512", "--hash-max-listpack-value", "256", "--zset-max-listpack-entries", "1024")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := "127.0.0.1:" + port
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	for i := 0; rdb.Ping(context.Background()).Err() != nil; i++ {
		if i == 100 {
			t.Fatal("the test's own Redis did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return rdb, addr
}

func b3Provision(t *testing.T, c *catalog.Catalog, seq uint64, domain, reseller string) {
	t.Helper()
	if _, err := c.ApplyDomain(ctxT(t), catalog.Domain{Domain: domain, Reseller: reseller, ProvisionedBy: "test", ProvisionedAt: base}, seq); err != nil {
		t.Fatal(err)
	}
}

// b3Dump is every key of ns with the namespace stripped.
func b3Dump(t *testing.T, rdb redis.UniversalClient, ns string) map[string]string {
	t.Helper()
	ctx := ctxT(t)
	keys, err := testenv.Keys(ctx, rdb, ns+":*")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, k := range keys {
		name := strings.TrimPrefix(k, ns)
		if strings.Contains(name, "applied") {
			continue
		}
		switch typ := rdb.Type(ctx, k).Val(); typ {
		case "hash":
			m := rdb.HGetAll(ctx, k).Val()
			var fs []string
			for f, v := range m {
				fs = append(fs, fmt.Sprintf("%q=%q", f, v))
			}
			sort.Strings(fs)
			out[name] = strings.Join(fs, ",")
		case "zset":
			out[name] = fmt.Sprint(rdb.ZRangeWithScores(ctx, k, 0, -1).Val())
		default:
			out[name] = rdb.Get(ctx, k).Val()
		}
	}
	return out
}

// TestBreak3ConflictRefusalReplayedWithoutClaim: domain A admits id X but
// its admitted event is not published yet (Done(P) never ran: a crash);
// domain B uploads X and is refused id_conflict, which is published. Redis
// is emptied and rebuilt from the stream: B's refusal is replayed and
// claims nothing. B's PBX uploads X again (a new event): the claim is now
// B's. A's ingest event is redelivered: live, it was admitted (the claim
// was A's); after the rebuild it is refused id_conflict and its media is
// owed a removal.
func TestBreak3ConflictRefusalReplayedWithoutClaim(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	// Live.
	live, _, _ := brkCatalog(t)
	b3Provision(t, live, 11, "a.example", "r1")
	b3Provision(t, live, 12, "b.example", "r2")
	ra := rec("a.example", "rec-shared-x", "alice", "call-a", base, 100)
	rb := rec("b.example", "rec-shared-x", "bob", "call-b", base, 100)
	rb.Reseller = "r2"
	da, err := live.Decide(ctx, live.RecordingArtifact(ra), catalog.CapCheck{})
	if err != nil || !da.Admitted() {
		t.Fatalf("A decide = %+v %v", da, err)
	}
	db, err := live.Decide(ctx, live.RecordingArtifact(rb), catalog.CapCheck{})
	if err != nil || db.State != catalog.StateRefused || db.Reason != catalog.ErrIDConflict {
		t.Fatalf("B decide = %+v %v", db, err)
	}
	// B's second upload, then A's redelivery, live.
	db2, _ := live.Decide(ctx, live.RecordingArtifact(rb), catalog.CapCheck{})
	da2, _ := live.Decide(ctx, live.RecordingArtifact(ra), catalog.CapCheck{})
	t.Logf("live: B again %+v; A redelivered %+v", db2, da2)

	// Rebuilt: only B's refusal is in the stream.
	reb, _, _ := brkCatalog(t)
	b3Provision(t, reb, 11, "a.example", "r1")
	b3Provision(t, reb, 12, "b.example", "r2")
	if err := reb.ApplyRefusals(ctx, []catalog.Refusal{{Domain: "b.example", ID: rb.ID, Kind: catalog.KindRecording, ObjectKey: rb.ObjectKey,
		Reason: catalog.ErrIDConflict, Size: rb.Size, Seq: rb.StreamSeq, AcceptedAt: rb.AcceptedAt, At: rb.StartedAt}}); err != nil {
		t.Fatal(err)
	}
	rdb2, _ := reb.Decide(ctx, reb.RecordingArtifact(rb), catalog.CapCheck{})
	rda2, err := reb.Decide(ctx, reb.RecordingArtifact(ra), catalog.CapCheck{})
	t.Logf("rebuilt: B again %+v; A redelivered %+v %v", rdb2, rda2, err)
	owner, _ := reb.DomainOf(ctx, ra.ID)
	if rda2.State != da2.State || owner != "a.example" {
		t.Errorf("after rebuild A's redelivery is %q %q (pending %q), id owned by %q; live it was %q and A owned the id",
			rda2.State, rda2.Reason, rda2.Pending, owner, da2.State)
	}
}

// TestBreak3TombstoneBeforeAdmissionInBatch: a batch that holds an id's
// tombstone before its admission (the reverse of stream order).
func TestBreak3TombstoneBeforeAdmissionInBatch(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	c, _, _ := brkCatalog(t)
	b3Provision(t, c, 0, "a.example", "r1")
	r := rec("a.example", "rec-tomb", "alice", "call-1", base, 10)
	a := c.RecordingArtifact(r)
	del := catalog.Recorded{Op: catalog.OpDeletion, Deletion: catalog.Deletion{Domain: "a.example", ID: r.ID, Reason: "x", Rule: "y", Actor: "z", At: base.Add(time.Hour)}}
	adm := catalog.Recorded{Op: catalog.OpAdmission, Admission: catalog.Admission{Artifact: a}}
	if err := c.ApplyRecorded(ctx, []catalog.Recorded{del, adm}); err != nil {
		t.Fatal(err)
	}
	got, err := c.Record(ctx, "a.example", r.ID)
	t.Logf("tombstone then admission: state %q %v", got.State, err)
	// Replay the same batch in stream order, twice: deleted, once.
	c2, rdb2, ns2 := brkCatalog(t)
	b3Provision(t, c2, 0, "a.example", "r1")
	a2 := c2.RecordingArtifact(r)
	adm2 := catalog.Recorded{Op: catalog.OpAdmission, Admission: catalog.Admission{Artifact: a2}}
	if err := c2.ApplyRecorded(ctx, []catalog.Recorded{adm2, del, adm2, del}); err != nil {
		t.Fatal(err)
	}
	d1 := b3Dump(t, rdb2, ns2)
	if err := c2.ApplyRecorded(ctx, []catalog.Recorded{adm2, del}); err != nil {
		t.Fatal(err)
	}
	d2 := b3Dump(t, rdb2, ns2)
	if fmt.Sprint(d1) != fmt.Sprint(d2) {
		t.Errorf("replaying admission+tombstone again changed state:\n%v\n%v", d1, d2)
	}
	u, _ := c2.Usage(ctx, "a.example")
	if u["recording"].Count != 0 || u["recording"].Bytes != 0 {
		t.Errorf("usage after admission+tombstone replayed = %+v", u)
	}
}

// TestBreak3PauseMidDecideMany: Redis refuses writes for 3 s while a batch
// is decided; the errors are redelivered; the end state must equal one
// clean batch's.
func TestBreak3PauseMidDecideMany(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// A server of its own: pausing the shared one would stall every test
	// beside this one.
	rdb, addr := ownRedis(t)
	n := 0
	mk := func() (*catalog.Catalog, redis.UniversalClient, string, []catalog.Pending) {
		n++
		ns := fmt.Sprintf("pause%d", n)
		c := catalog.New(rdb, ns)
		b3Provision(t, c, 0, "a.example", "r1")
		var batch []catalog.Pending
		for i := 0; i < 400; i++ {
			r := rec("a.example", fmt.Sprintf("rec-p-%03d", i), fmt.Sprintf("u%d", i%7), fmt.Sprintf("call-%d", i%50), base.Add(time.Duration(i)*time.Minute), int64(100+i))
			batch = append(batch, catalog.Pending{Artifact: c.RecordingArtifact(r), Cap: catalog.CapCheck{Mode: catalog.MonthlyLimit, Limit: 300}})
		}
		return c, rdb, ns, batch
	}
	ref, rrdb, rns, rbatch := mk()
	if _, errs := ref.DecideMany(ctx, rbatch); errs != nil {
		for _, e := range errs {
			if e != nil {
				t.Fatal(e)
			}
		}
	}
	c, rdb, ns, batch := mk()
	go func() {
		time.Sleep(2 * time.Millisecond)
		pauser := redis.NewClient(&redis.Options{Addr: addr})
		defer pauser.Close()
		_ = pauser.Do(context.Background(), "CLIENT", "PAUSE", "3000", "WRITE").Err()
	}()
	failed := 0
	pending := batch
	for round := 0; len(pending) > 0 && round < 5; round++ {
		_, errs := c.DecideMany(ctx, pending)
		var next []catalog.Pending
		for i, e := range errs {
			if e != nil {
				failed++
				next = append(next, pending[i])
			}
		}
		pending = next
	}
	t.Logf("errors across rounds: %d", failed)
	a, b := b3Dump(t, rrdb, rns), b3Dump(t, rdb, ns)
	for k, v := range a {
		if b[k] != v {
			t.Errorf("key %s differs:\nclean %.200s\npaused %.200s", k, v, b[k])
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			t.Errorf("extra key %s after the pause", k)
		}
	}
}
