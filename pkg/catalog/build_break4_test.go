package catalog_test

// Attacks on the plain-command rebuild (Builder, BuildRecorded, Wipe),
// kept as regression tests: each failed on the first version of the
// builder and says what it showed.

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/tenant"
)

func b4Adm(a catalog.Artifact) catalog.Recorded {
	return catalog.Recorded{Op: catalog.OpAdmission, Admission: catalog.Admission{Artifact: a}}
}

func b4Del(domain, id string, at time.Time) catalog.Recorded {
	return catalog.Recorded{Op: catalog.OpDeletion, Deletion: catalog.Deletion{Domain: domain, ID: id, At: at, Reason: "admin", Rule: "explicit", Actor: "ops"}}
}

// TestBreak4WipeSkipsTheDomainNamedDomains: "domains" is a valid tenant
// domain (tenant.CheckDomain accepts any lower-case DNS label, no dot
// needed), and its catalog keys are ns:{domains}:h:..., ns:{domains}:usage,
// ... . keys.derived refuses every key whose hash tag is "domains" (meant
// for the domain registry ns:{domains}:num etc.), so Wipe leaves the whole
// catalog of that domain in place: a stale record and the usage that
// counts it survive the wipe and every rebuild after it.
func TestBreak4WipeSkipsTheDomainNamedDomains(t *testing.T) {
	t.Parallel()
	if err := tenant.CheckDomain("domains"); err != nil {
		t.Skipf("domains is not a valid domain: %v", err)
	}
	ctx := ctxT(t)
	c, rdb, ns := brkCatalog(t)
	brkProvision(t, c, "domains")
	stale := rec("domains", "stale", "101", "call-stale", base, 5)
	if _, err := c.AdmitRecording(ctx, stale); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Wipe(ctx); err != nil {
		t.Fatal(err)
	}
	// The stream holds nothing for the domain: after the wipe and an
	// (empty) build nothing of its catalog may remain.
	if err := c.BuildRecorded(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Record(ctx, "domains", "stale"); !errors.Is(err, catalog.ErrNoRecord) {
		t.Errorf("Record(domains, stale) after Wipe = %v; want ErrNoRecord (the stale record survived the wipe)", err)
	}
	if u, err := c.Usage(ctx, "domains"); err == nil && u[catalog.KindRecording].Count != 0 {
		t.Errorf("usage of domain %q after Wipe = %+v; want nothing", "domains", u[catalog.KindRecording])
	}
	for k := range dumpNS(t, rdb, ns) {
		if strings.HasPrefix(k, ":{domains}:h:") || k == ":{domains}:usage" || strings.HasPrefix(k, ":ids:") {
			t.Errorf("derived key %s%s survived Wipe", ns, k)
		}
	}
}

// TestBreak4BuildDeletionBeforeAdmissionInOneBatch: a batch whose
// tombstone of an id comes before that id's admission. ApplyRecorded (and
// one decision at a time) finds nothing to delete and then admits the id;
// the builder moves every deletion after the batch's plain writes, so the
// deletion finds the record step 1 just wrote and deletes it. "Their
// effects commute with the plain writes of the same batch" does not hold
// when a deletion names an id admitted later in its batch.
func TestBreak4BuildDeletionBeforeAdmissionInOneBatch(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	script, rdbS, nsS := brkCatalog(t)
	built, rdbB, nsB := brkCatalog(t)
	for _, c := range []*catalog.Catalog{script, built} {
		brkProvision(t, c, "a.example")
	}
	batch := func(c *catalog.Catalog) []catalog.Recorded {
		return []catalog.Recorded{
			b4Adm(c.RecordingArtifact(rec("a.example", "r-1", "101", "call-1", base, 10))),
			b4Del("a.example", "x", base.Add(time.Hour)),
			b4Adm(c.RecordingArtifact(rec("a.example", "x", "101", "call-1", base.Add(time.Minute), 20))),
		}
	}
	if err := script.ApplyRecorded(ctx, batch(script)); err != nil {
		t.Fatal(err)
	}
	if _, err := built.Wipe(ctx); err != nil {
		t.Fatal(err)
	}
	if err := built.BuildRecorded(ctx, batch(built)); err != nil {
		t.Fatal(err)
	}
	if r, err := built.Record(ctx, "a.example", "x"); err != nil || r.State != catalog.StateAdmitted {
		t.Errorf("built: Record(x) = %+v, %v; ApplyRecorded left it admitted", r, err)
	}
	brkCompare(t, "built vs ApplyRecorded", dumpNS(t, rdbS, nsS), dumpNS(t, rdbB, nsB))
}

// TestBreak4BuildStepTwoReadsTheNextBatch: batch k ends with a tombstone
// of id x, batch k+1 admits x. The builder runs batch k's deletions on its
// goroutine while Add writes batch k+1's records; batch k is large, so its
// index step is still writing when batch k+1's HSETNX of x lands, and the
// deletion then finds x and deletes it: its record is marked deleted and
// its (not yet written) entries removed, usage lowered. Batch k+1's index
// step then adds x's entries and usage because its record "was new". The
// result is neither the script path's (x admitted) nor consistent: a
// deleted record that usage, the user index and the call index count.
// "A batch's second step never reads ... what a later batch's first step
// writes" does not hold.
func TestBreak4BuildStepTwoReadsTheNextBatch(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	script, rdbS, nsS := brkCatalog(t)
	built, rdbB, nsB := brkCatalog(t)
	for _, c := range []*catalog.Catalog{script, built} {
		brkProvision(t, c, "a.example", "big.example")
	}
	batches := func(c *catalog.Catalog) [][]catalog.Recorded {
		var k []catalog.Recorded
		for i := range 20000 {
			k = append(k, b4Adm(c.RecordingArtifact(rec("big.example", fmt.Sprintf("f-%05d", i), fmt.Sprintf("u%d", i%50),
				fmt.Sprintf("fc-%d", i), base.Add(-time.Duration(i)*time.Second), 1))))
		}
		k = append(k, b4Del("a.example", "x", base.Add(time.Hour)))
		next := []catalog.Recorded{b4Adm(c.RecordingArtifact(rec("a.example", "x", "101", "call-x", base, 20)))}
		return [][]catalog.Recorded{k, next}
	}
	for _, b := range batches(script) {
		if err := script.ApplyRecorded(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := built.Wipe(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := built.NewBuilder(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, batch := range batches(built) {
		if err := b.Add(batch); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	r, rerr := built.Record(ctx, "a.example", "x")
	u, uerr := built.Usage(ctx, "a.example")
	if rerr != nil || uerr != nil {
		t.Fatal(rerr, uerr)
	}
	got := u[catalog.KindRecording]
	t.Logf("built: x is %s, a.example usage %+v", r.State, got)
	if r.State == catalog.StateDeleted && got.Count != 0 {
		t.Errorf("built: x is deleted but a.example's usage still counts it: %+v", got)
	}
	if r.State != catalog.StateAdmitted {
		t.Errorf("built: x is %s; the script path (and one batch at a time) leaves it admitted", r.State)
	}
	// A deleted record must be in no index; x's user-index entry was
	// written by batch k+1's index step after batch k's deletion ran.
	if n, err := rdbB.ZCard(ctx, nsB+":{a.example}:u:101:"+base.Format("200601")).Result(); err == nil && r.State == catalog.StateDeleted && n != 0 {
		t.Errorf("built: x is deleted but its user index holds %d member(s)", n)
	}
	want, have := dumpNS(t, rdbS, nsS), dumpNS(t, rdbB, nsB)
	for k := range want {
		if strings.Contains(k, "big.example") {
			delete(want, k)
			delete(have, k)
		}
	}
	brkCompare(t, "built vs ApplyRecorded (a.example)", want, have)
}
