package catalog_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/testenv"
)

// manyWorkload mixes every cap kind and decision: recordings of three
// domains under a monthly cap of 40, voicemails of one box capped at 15,
// SMS of one folder evicting past 20 (more than a batch holds, so a
// victim's admission is published before it is evicted), redeliveries within the batch and an
// id another domain owns.
func manyWorkload(c *catalog.Catalog) []catalog.Pending {
	at := time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)
	var out []catalog.Pending
	for i := range 400 {
		t := at.Add(time.Duration(i) * 7 * time.Minute)
		switch i % 4 {
		case 0, 1:
			r := rec(fmt.Sprintf("d%d.example", i%3), fmt.Sprintf("rec-%d", i), fmt.Sprintf("u%d", i%5), fmt.Sprintf("call-%d", i/2), t, int64(100+i))
			out = append(out, catalog.Pending{Artifact: c.RecordingArtifact(r), Cap: catalog.CapCheck{Mode: catalog.MonthlyLimit, Limit: 40}})
		case 2:
			m := catalog.Message{ID: fmt.Sprintf("vm-%d", i), Domain: "d0.example", User: "101", Kind: "voicemail", ReceivedAt: t, Size: 10,
				ObjectKey: fmt.Sprintf("voicemail/d0.example/vm-%d", i), AcceptedAt: t}
			out = append(out, catalog.Pending{Artifact: c.MessageArtifact(m), Cap: catalog.CapCheck{Mode: catalog.RefuseAtLimit, Limit: 15}})
		case 3:
			m := catalog.Message{ID: fmt.Sprintf("sms-%d", i), Domain: "d1.example", User: "102", Kind: "sms", Folder: "inbox", ReceivedAt: t, Size: 3,
				ObjectKey: fmt.Sprintf("sms/d1.example/sms-%d", i), AcceptedAt: t}
			out = append(out, catalog.Pending{Artifact: c.MessageArtifact(m), Cap: catalog.CapCheck{Mode: catalog.EvictOldest, Limit: 20, EvictBefore: t.Add(time.Hour)}})
		}
		if i%37 == 0 && len(out) > 130 { // a redelivery of an event of an earlier batch
			out = append(out, out[len(out)-130])
		}
	}
	// rec-0 is d0's; d2 reusing it is a conflict.
	out = append(out, catalog.Pending{Artifact: c.RecordingArtifact(rec("d2.example", "rec-0", "u1", "call-x", at, 5))})
	return out
}

// TestDecideManyEqualsOneByOne decides the workload in batches and one by
// one, on two namespaces: every decision and every key must be the same.
func TestDecideManyEqualsOneByOne(t *testing.T) {
	t.Parallel()
	nsA, nsB := testenv.Namespace(t), testenv.Namespace(t)
	rdb := testenv.Redis(t, nsA)
	_ = testenv.Redis(t, nsB)
	many, single := catalog.New(rdb, nsA), catalog.New(rdb, nsB)
	ctx := ctxT(t)
	for _, c := range []*catalog.Catalog{many, single} {
		for _, d := range []string{"d0.example", "d1.example", "d2.example"} {
			if _, err := c.ApplyDomain(ctx, catalog.Domain{Domain: d, Reseller: "r1", ProvisionedAt: base}, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	wa, wb := manyWorkload(many), manyWorkload(single)
	var got []catalog.Decision
	for i := 0; i < len(wa); i += 64 {
		ds, errs := many.DecideMany(ctx, wa[i:min(i+64, len(wa))])
		for j, err := range errs {
			if err != nil {
				t.Fatalf("batch decision %d: %v", i+j, err)
			}
			finish(t, many, wa[i+j].Artifact, ds[j])
		}
		got = append(got, ds...)
	}
	states := map[string]int{}
	for i, p := range wb {
		want, err := single.Decide(ctx, p.Artifact, p.Cap)
		if err != nil {
			t.Fatal(err)
		}
		finish(t, single, p.Artifact, want)
		if got[i] != want {
			t.Fatalf("decision %d (%s): batched %+v, one by one %+v", i, p.Artifact.ID, got[i], want)
		}
		states[string(want.State)+want.Reason]++
	}
	if states["a"] == 0 || states["rmonthly_cap"] == 0 || states["rbox_full"] == 0 || states["rid_conflict"] != 1 {
		t.Fatalf("the workload should admit and hit every cap: %v", states)
	}
	a, b := dumpNS(t, rdb, nsA), dumpNS(t, rdb, nsB)
	for k, v := range a {
		if b[k] != v {
			t.Errorf("key %s: batched %q, one by one %q", k, v, b[k])
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			t.Errorf("key %s only one by one", k)
		}
	}
}

// finish confirms every effect a decision owes, as the consumer does once
// they are carried out.
func finish(t *testing.T, c *catalog.Catalog, a catalog.Artifact, d catalog.Decision) {
	t.Helper()
	for _, e := range []byte(d.Pending) {
		if err := c.Done(ctxT(t), a.Domain, a.ID, e); err != nil {
			t.Fatal(err)
		}
	}
	if d.EvictedID != "" && !d.Repeat {
		for _, e := range []byte("MT") {
			if err := c.Done(ctxT(t), a.Domain, d.EvictedID, e); err != nil {
				t.Fatal(err)
			}
		}
	}
}
