package catalog_test

// Attack tests against the packed catalog layout. Each test states what it
// expects; a failing one is a defect report.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/testenv"
)

func brkCatalog(t *testing.T) (*catalog.Catalog, redis.UniversalClient, string) {
	t.Helper()
	ns := testenv.Namespace(t)
	rdb := testenv.Redis(t, ns)
	return catalog.New(rdb, ns), rdb, ns
}

func brkProvision(t *testing.T, c *catalog.Catalog, domains ...string) {
	t.Helper()
	for _, d := range domains {
		if _, err := c.ApplyDomain(ctxT(t), catalog.Domain{Domain: d, Reseller: "r1", ProvisionedBy: "test", ProvisionedAt: base}, 0); err != nil {
			t.Fatal(err)
		}
	}
}

func brkVM(domain, id, user string, at time.Time) catalog.Message {
	return catalog.Message{ID: id, Reseller: "r1", Domain: domain, User: user, Kind: "voicemail", ReceivedAt: at, From: "+1555", To: "+1556",
		Size: 40, SHA256: strings.Repeat("cd", 32), ObjectKey: "voicemail/" + domain + "/" + id, ContentType: "audio/wav", AcceptedAt: at, StreamSeq: 3}
}

// brkFinish confirms what a decision owes (publish, remove media, ...),
// and the eviction's effects, as the admission consumer does.
func brkFinish(t *testing.T, c *catalog.Catalog, domain, id string, d catalog.Decision) {
	t.Helper()
	for _, e := range []byte(d.Pending) {
		if err := c.Done(ctxT(t), domain, id, e); err != nil {
			t.Fatalf("Done(%s, %c): %v", id, e, err)
		}
	}
	if d.EvictedID != "" && !d.Repeat {
		for _, e := range []byte("MT") {
			if err := c.Done(ctxT(t), domain, d.EvictedID, e); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// ---------------------------------------------------------------------
// Bad input reaching the id claim: a message's received_at is not
// validated anywhere on the policy path (admission.go only checks that it
// is set), and the claim packs hours since 2000 into 25 bits.

// TestBreakMessageBefore2000 admits a voicemail received on 1999-12-31.
func TestBreakMessageBefore2000(t *testing.T) {
	t.Parallel()
	c, _, _ := brkCatalog(t)
	brkProvision(t, c, "a.example")
	ctx := ctxT(t)
	at := time.Date(1999, 12, 31, 23, 30, 0, 0, time.UTC)
	d, err := c.Decide(ctx, c.MessageArtifact(brkVM("a.example", "vm-1999", "101", at)), catalog.CapCheck{})
	switch {
	case errors.Is(err, catalog.ErrUnstorable):
		// Refused before anything is written: it must claim nothing.
		if dom, err := c.DomainOf(ctx, "vm-1999"); !errors.Is(err, catalog.ErrNotFound) {
			t.Errorf("DomainOf(vm-1999) after an unstorable Decide = %q, %v; want not found", dom, err)
		}
	case err != nil:
		t.Errorf("Decide(voicemail received 1999-12-31) = %v; want a decision, or ErrUnstorable before any write", err)
	}
	_ = d
	// Whatever was decided, reading the id must not fail.
	if dom, err := c.DomainOf(ctx, "vm-1999"); err != nil && !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("DomainOf(vm-1999) after that Decide = %q, %v", dom, err)
	}
	if _, err := c.Record(ctx, "a.example", "vm-1999"); err != nil && !errors.Is(err, catalog.ErrNoRecord) {
		t.Errorf("Record(vm-1999) = %v; want the record or ErrNoRecord", err)
	}
}

// TestBreakClaimOverflowNamesAnotherDomain admits a voicemail of domain
// number 2 whose received_at is in year 9700: hours since 2000 exceed 26
// bits and are OR-ed into the domain number, so the claim names domain 3.
func TestBreakClaimOverflowNamesAnotherDomain(t *testing.T) {
	t.Parallel()
	c, _, _ := brkCatalog(t)
	brkProvision(t, c, "one.example", "two.example", "three.example")
	ctx := ctxT(t)
	at := time.Date(9700, 6, 1, 0, 0, 0, 0, time.UTC)
	d, err := c.Decide(ctx, c.MessageArtifact(brkVM("two.example", "vm-far", "101", at)), catalog.CapCheck{})
	t.Logf("Decide(two.example, vm-far @9700) = %+v, %v", d, err)
	if errors.Is(err, catalog.ErrUnstorable) {
		if dom, err := c.DomainOf(ctx, "vm-far"); !errors.Is(err, catalog.ErrNotFound) {
			t.Errorf("DomainOf(vm-far) after an unstorable Decide = %q, %v; want not found", dom, err)
		}
		return
	}
	if dom, err := c.DomainOf(ctx, "vm-far"); err == nil && dom != "two.example" {
		t.Errorf("DomainOf(vm-far) = %q; the id was claimed by two.example, want two.example (or a refusal of the time)", dom)
	}
	if err == nil && d.Reason == catalog.ErrIDConflict {
		t.Errorf("two.example's own first admission of vm-far was refused as %s", d.Reason)
	}
	// And year 5900 sets the class bit: the claim names another hour.
	at = time.Date(5900, 6, 1, 0, 0, 0, 0, time.UTC)
	if d, err := c.Decide(ctx, c.MessageArtifact(brkVM("one.example", "vm-5900", "101", at)), catalog.CapCheck{}); err != nil && !errors.Is(err, catalog.ErrUnstorable) {
		t.Errorf("Decide(one.example, vm-5900 @5900) = %+v, %v; want a decision", d, err)
	}
}

// TestBreakLongMessageFieldBreaksScripts admits a message whose From is
// 70,000 bytes: Go packs it as str32 (0xdb), which the scripts' decoder
// does not read, so the admission can never be confirmed or deleted.
func TestBreakLongMessageFieldBreaksScripts(t *testing.T) {
	t.Parallel()
	c, _, _ := brkCatalog(t)
	brkProvision(t, c, "a.example")
	ctx := ctxT(t)
	m := brkVM("a.example", "vm-long", "101", base)
	m.From = strings.Repeat("x", 70000)
	d, err := c.Decide(ctx, c.MessageArtifact(m), catalog.CapCheck{})
	if errors.Is(err, catalog.ErrUnstorable) {
		t.Logf("refused before any write: %v", err)
	} else if err != nil || !d.Admitted() {
		t.Fatalf("Decide = %+v, %v", d, err)
	}
	// Replay (a legacy admission, or one applied before the check) writes
	// the record anyway: the scripts must read it.
	if err := c.ApplyAdmissions(ctx, []catalog.Admission{{Artifact: c.MessageArtifact(m)}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Done(ctx, "a.example", "vm-long", catalog.EffectPublish); err != nil {
		t.Errorf("Done(publish) of an admitted voicemail with a 70,000-byte From = %v; want nil", err)
	}
	res, err := c.Delete(ctx, catalog.DeleteRequest{Domain: "a.example", ID: "vm-long", Now: base.Add(time.Hour), Reason: "admin", Actor: "ops"})
	if err != nil {
		t.Errorf("Delete = %+v, %v; want a gate outcome", res, err)
	}
	// An SMS folder whose oldest entry is such a record admits nothing
	// more: the eviction decodes the victim.
	evict := catalog.CapCheck{Mode: catalog.EvictOldest, Limit: 1, EvictBefore: base.Add(48 * time.Hour)}
	sms := func(id string, at time.Time, from string) catalog.Message {
		return catalog.Message{ID: id, Reseller: "r1", Domain: "a.example", User: "7", Kind: "sms", Folder: "inbox", ReceivedAt: at, From: from, Size: 3, AcceptedAt: at}
	}
	if err := c.ApplyAdmissions(ctx, []catalog.Admission{{Artifact: c.MessageArtifact(sms("sms-long", base, strings.Repeat("y", 70000)))}}); err != nil {
		t.Fatal(err)
	}
	if d, err := c.Decide(ctx, c.MessageArtifact(sms("sms-next", base.Add(time.Minute), "+1")), evict); err != nil {
		t.Errorf("next sms in the folder = %+v, %v; want a decision", d, err)
	}
}

// TestBreakSHARoundTrip: a non-hex SHA-256 value is stored behind a NUL
// mark when it is 32 bytes or starts with NUL; one of 31 bytes starting
// with NUL becomes 32 bytes with the mark and reads back as hex.
func TestBreakSHARoundTrip(t *testing.T) {
	t.Parallel()
	at := base
	for _, sha := range []string{"", "ab", strings.Repeat("ab", 32), strings.Repeat("AB", 32), strings.Repeat("x", 32), "\x00" + strings.Repeat("y", 30), "\x00" + strings.Repeat("y", 31)} {
		s := catalog.Stored{State: catalog.StateAdmitted, ID: "rec-1", Kind: catalog.KindRecording, Mode: "automatic", At: at, SHA256: sha, AcceptedAt: at}
		got, err := catalog.UnpackStored("a.example", catalog.HourOf(at), s.Pack("a.example"))
		if err != nil {
			t.Fatal(err)
		}
		if got.SHA256 != sha {
			t.Errorf("SHA256 %q (%d bytes) reads back as %q", sha, len(sha), got.SHA256)
		}
	}
}

// ---------------------------------------------------------------------
// Tenancy.

// TestBreakTenancySameID: an id admitted in a.example, then sent by
// b.example, reaches nothing of a.example through b.example.
func TestBreakTenancySameID(t *testing.T) {
	t.Parallel()
	c, _, _ := brkCatalog(t)
	brkProvision(t, c, "a.example", "b.example")
	ctx := ctxT(t)
	ra := rec("a.example", "0193f2c4-7b1a-7c3e-9a4b-000000000001", "alice", "call-1", base, 10)
	da, err := c.Decide(ctx, c.RecordingArtifact(ra), catalog.CapCheck{})
	if err != nil || !da.Admitted() {
		t.Fatal(da, err)
	}
	brkFinish(t, c, "a.example", ra.ID, da)
	rb := rec("b.example", ra.ID, "alice", "call-1", base, 99)
	db, err := c.Decide(ctx, c.RecordingArtifact(rb), catalog.CapCheck{})
	if err != nil || db.State != catalog.StateRefused || db.Reason != catalog.ErrIDConflict {
		t.Fatalf("b.example's decision = %+v, %v; want refused id_conflict", db, err)
	}
	brkFinish(t, c, "b.example", ra.ID, db)
	if _, err := c.GetRecording(ctx, "b.example", ra.ID); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("GetRecording(b) = %v", err)
	}
	if r, err := c.Record(ctx, "b.example", ra.ID); err != nil || r.State != catalog.StateRefused || r.Size != 99 {
		t.Errorf("Record(b) = %+v, %v; want b's own refusal", r, err)
	}
	for _, q := range []catalog.Query{{Domain: "b.example"}, {Domain: "b.example", User: "alice"}, {Domain: "b.example", CallID: "call-1"}} {
		if p, err := c.ListRecordings(ctx, q); err != nil || len(p.Recordings) != 0 {
			t.Errorf("ListRecordings(%+v) = %d, %v", q, len(p.Recordings), err)
		}
	}
	if res, err := c.Delete(ctx, catalog.DeleteRequest{Domain: "b.example", ID: ra.ID, Now: base.Add(time.Hour)}); err != nil || res.Outcome != catalog.Absent {
		t.Errorf("Delete(b) = %+v, %v; want absent", res, err)
	}
	if got, err := c.GetRecording(ctx, "a.example", ra.ID); err != nil || got.Size != 10 {
		t.Errorf("GetRecording(a) after b's attempts = %+v, %v", got, err)
	}
	if d, err := c.DomainOf(ctx, ra.ID); err != nil || d != "a.example" {
		t.Errorf("DomainOf = %q, %v", d, err)
	}
	if n, b := usage(t, c, "b.example"); n != 0 || b != 0 {
		t.Errorf("b usage = %d/%d", n, b)
	}
	// Unknown domain, never numbered: nothing.
	if _, err := c.GetRecording(ctx, "nobody.example", ra.ID); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("GetRecording(unnumbered domain) = %v", err)
	}
	if _, err := c.Record(ctx, "nobody.example", ra.ID); !errors.Is(err, catalog.ErrNoRecord) {
		t.Errorf("Record(unnumbered domain) = %v", err)
	}
}

// TestBreakStaleDomainNumbers: domain numbers are assigned in the order
// Redis applies provisionings. The request path (policy ProvisionDomain)
// publishes and then applies, so two provisionings can apply in the
// opposite order of the config stream; a rebuild numbers them in stream
// order. A process that keeps its catalog across the rebuild (the
// gateway's and ingest's Readers never clear their number cache; only
// policy's ClearApplied does) then misreads every claim.
func TestBreakStaleDomainNumbers(t *testing.T) {
	t.Parallel()
	c, rdb, ns := brkCatalog(t)
	ctx := ctxT(t)
	// Live: b.example's request applied first, though a.example's event
	// is first in the stream.
	// a.example's provisioning is stream sequence 1, b.example's 2.
	provision := func(domain string, seq uint64) {
		t.Helper()
		if _, err := c.ApplyDomain(ctx, catalog.Domain{Domain: domain, Reseller: "r1", ProvisionedBy: "test", ProvisionedAt: base}, seq); err != nil {
			t.Fatal(err)
		}
	}
	provision("b.example", 2)
	provision("a.example", 1)
	ra := rec("a.example", "rec-a", "alice", "call-1", base, 10)
	rb := rec("b.example", "rec-b", "bob", "call-2", base, 20)
	for _, r := range []catalog.Recording{ra, rb} {
		admit(t, c, r)
	}
	gateway := catalog.NewReader(rdb, ns)
	for _, r := range []catalog.Recording{ra, rb} {
		if _, err := gateway.GetRecording(ctx, r.Domain, r.ID); err != nil {
			t.Fatalf("before the rebuild: %v", err)
		}
	}
	// Redis loses its data; policy rebuilds: config stream order, then
	// the recorded admissions.
	keys, err := rdb.Keys(ctx, ns+":*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.Del(ctx, keys...).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ClearApplied(ctx); err != nil {
		t.Fatal(err)
	}
	provision("a.example", 1)
	provision("b.example", 2)
	if err := c.ApplyAdmissions(ctx, []catalog.Admission{{Artifact: c.RecordingArtifact(ra)}, {Artifact: c.RecordingArtifact(rb)}}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []catalog.Recording{ra, rb} {
		if _, err := c.GetRecording(ctx, r.Domain, r.ID); err != nil {
			t.Fatalf("policy after the rebuild: %v", err)
		}
		if _, err := gateway.GetRecording(ctx, r.Domain, r.ID); err != nil {
			t.Errorf("gateway Reader after the rebuild: GetRecording(%s, %s) = %v; want the recording", r.Domain, r.ID, err)
		}
	}
}

// ---------------------------------------------------------------------
// Listing.

// brkWalk pages through q (with a higher page cap than walk) and checks
// for repeats and short pages.
func brkWalk(t *testing.T, c *catalog.Catalog, q catalog.Query) []string {
	t.Helper()
	var ids []string
	seen := map[string]bool{}
	for pages := 0; ; pages++ {
		if pages > 2000 {
			t.Fatalf("walk of %+v did not end", q)
		}
		page, err := c.ListRecordings(ctxT(t), q)
		if err != nil {
			t.Fatalf("ListRecordings(%+v): %v", q, err)
		}
		if page.Next != "" && len(page.Recordings) != q.Limit {
			t.Fatalf("page %d has %d recordings and a next page (limit %d)", pages, len(page.Recordings), q.Limit)
		}
		for _, r := range page.Recordings {
			if seen[r.ID] {
				t.Fatalf("%s served twice (page %d)", r.ID, pages)
			}
			seen[r.ID] = true
			ids = append(ids, r.ID)
		}
		if page.Next == "" {
			return ids
		}
		q.Cursor = page.Next
	}
}

type brkItem struct {
	id, user, call string
	at             time.Time
}

func brkExpect(items []brkItem, keep func(brkItem) bool) []string {
	var sel []brkItem
	for _, it := range items {
		if keep(it) {
			sel = append(sel, it)
		}
	}
	slices.SortFunc(sel, func(a, b brkItem) int {
		if !a.at.Equal(b.at) {
			if a.at.After(b.at) {
				return -1
			}
			return 1
		}
		return strings.Compare(b.id, a.id)
	})
	var out []string
	for _, it := range sel {
		out = append(out, it.id)
	}
	return out
}

// TestBreakListingEdges: records at hour, day, month and year boundaries,
// in 2000, many in one ms, in the future within 48h; every listing and
// several windows, walked at several page sizes.
func TestBreakListingEdges(t *testing.T) {
	t.Parallel()
	c, _, _ := brkCatalog(t)
	brkProvision(t, c, "a.example")
	now := time.Now().UTC().Truncate(time.Millisecond)
	y2k := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	nye := time.Date(2025, 12, 31, 23, 59, 59, 999_000_000, time.UTC)
	ny := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	hb := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	var items []brkItem
	add := func(id, user, call string, at time.Time) { items = append(items, brkItem{id, user, call, at}) }
	add("y2k-0", "u1", "c1", y2k)
	add("y2k-1", "u2", "c1", y2k.Add(time.Millisecond))
	add("y2k-2", "u1", "c2", y2k.Add(time.Hour-time.Millisecond))
	add("nye", "u1", "c1", nye)
	add("ny", "u1", "c1", ny)
	add("ny-b", "u2", "c1", ny)
	add("hb-", "u1", "c3", hb.Add(-time.Millisecond))
	add("hb", "u1", "c3", hb)
	add("feb28", "u1", "c3", time.Date(2026, 2, 28, 23, 59, 59, 999_000_000, time.UTC))
	for i := range 12 {
		add(fmt.Sprintf("ms-%02d", i), []string{"u1", "u2"}[i%2], "c4", hb.Add(30*time.Minute))
	}
	add("future-47h", "u1", "c1", now.Add(47*time.Hour))
	add("now", "u1", "c1", now)
	for _, it := range items {
		r := rec("a.example", it.id, it.user, it.call, it.at, 1)
		r.ObjectKey = "recordings/a.example/" + it.at.Format("2006/01/02") + "/" + it.id + "-a1b2c3d4e5f6"
		admit(t, c, r)
	}
	windows := []struct{ from, to time.Time }{
		{},
		{from: ny},
		{to: ny},
		{from: nye, to: ny.Add(time.Millisecond)},
		{from: hb, to: hb.Add(30*time.Minute + time.Millisecond)},
		{from: hb.Add(30 * time.Minute), to: hb.Add(30 * time.Minute)},
		{from: y2k, to: y2k.Add(time.Hour)},
		{from: y2k.Add(time.Hour), to: nye},
		{to: y2k.Add(time.Millisecond)},
		{from: now.Add(time.Millisecond)},
	}
	for _, w := range windows {
		for _, limit := range []int{1, 2, 5, 1000} {
			for _, sel := range []struct{ user, call string }{{}, {user: "u1"}, {user: "u2"}, {call: "c1"}, {call: "c4"}, {user: "u1", call: "c4"}} {
				q := catalog.Query{Domain: "a.example", User: sel.user, CallID: sel.call, From: w.from, To: w.to, Limit: limit}
				want := brkExpect(items, func(it brkItem) bool {
					return (sel.user == "" || it.user == sel.user) && (sel.call == "" || it.call == sel.call) &&
						(w.from.IsZero() || !it.at.Before(w.from)) && (w.to.IsZero() || it.at.Before(w.to))
				})
				if got := brkWalk(t, c, q); !slices.Equal(got, want) {
					t.Errorf("walk(from %v to %v limit %d user %q call %q) =\n %v\nwant %v", w.from, w.to, limit, sel.user, sel.call, got, want)
				}
			}
		}
	}
	// Cursors at the very newest and very oldest.
	for _, cur := range []struct {
		at   time.Time
		id   string
		want int
	}{{now.Add(47 * time.Hour), "future-47h", len(items) - 1}, {y2k, "y2k-0", 0}, {y2k, "y2k-1", 1}, {now.Add(100 * time.Hour), "z", len(items)}} {
		p, err := c.ListRecordings(ctxT(t), catalog.Query{Domain: "a.example", Limit: 1000, Cursor: catalog.CursorAt(cur.at, cur.id)})
		if err != nil || len(p.Recordings) != cur.want {
			t.Errorf("cursor at %v/%s: %d recordings, %v; want %d", cur.at, cur.id, len(p.Recordings), err, cur.want)
		}
	}
}

// TestBreakUserMonthOver256: a user with 300 recordings in one month, 260
// of them in the same ms, plus another user's in between.
func TestBreakUserMonthOver256(t *testing.T) {
	t.Parallel()
	c, _, _ := brkCatalog(t)
	brkProvision(t, c, "a.example")
	at := time.Date(2026, 5, 10, 12, 0, 0, 0, time.UTC)
	var items []brkItem
	for i := range 260 {
		items = append(items, brkItem{fmt.Sprintf("tie-%03d", i), "alice", "c1", at})
	}
	for i := range 40 {
		items = append(items, brkItem{fmt.Sprintf("spread-%02d", i), "alice", "c2", at.Add(time.Duration(i-20) * 17 * time.Hour)})
		items = append(items, brkItem{fmt.Sprintf("bob-%02d", i), "bob", "c2", at.Add(time.Duration(i-20) * 17 * time.Hour)})
	}
	var recs []catalog.Recording
	for _, it := range items {
		recs = append(recs, rec("a.example", it.id, it.user, it.call, it.at, 1))
	}
	if _, err := c.AdmitRecordings(ctxT(t), recs); err != nil {
		t.Fatal(err)
	}
	want := brkExpect(items, func(it brkItem) bool { return it.user == "alice" })
	for _, limit := range []int{3, 100, 255, 256, 257, 299, 300, 301} {
		if got := brkWalk(t, c, catalog.Query{Domain: "a.example", User: "alice", Limit: limit}); !slices.Equal(got, want) {
			t.Errorf("user walk limit %d: %d ids, want %d (first diff %d)", limit, len(got), len(want), firstDiff(got, want))
		}
	}
	wantAll := brkExpect(items, func(brkItem) bool { return true })
	for _, limit := range []int{7, 256, 1000} {
		if got := brkWalk(t, c, catalog.Query{Domain: "a.example", Limit: limit}); !slices.Equal(got, wantAll) {
			t.Errorf("domain walk limit %d: %d ids, want %d (first diff %d)", limit, len(got), len(wantAll), firstDiff(got, wantAll))
		}
	}
}

// ---------------------------------------------------------------------
// Deletion.

// TestBreakDeleteGate: holds and minimums stop the gate; deleting twice
// repeats; refused, conflicting and unknown ids are absent; deleting one
// of two recordings of a call in one hour leaves the other listed.
func TestBreakDeleteGate(t *testing.T) {
	t.Parallel()
	c, rdb, ns := brkCatalog(t)
	brkProvision(t, c, "a.example", "b.example")
	ctx := ctxT(t)
	adm := func(r catalog.Recording, cap catalog.CapCheck) catalog.Decision {
		t.Helper()
		d, err := c.Decide(ctx, c.RecordingArtifact(r), cap)
		if err != nil {
			t.Fatal(err)
		}
		brkFinish(t, c, r.Domain, r.ID, d)
		return d
	}
	r1 := rec("a.example", "r1", "alice", "shared", base, 10)
	r2 := rec("a.example", "r2", "bob", "shared", base.Add(time.Minute), 20)
	r3 := rec("a.example", "r3", "carol", "held-call", base.Add(2*time.Minute), 30)
	for _, r := range []catalog.Recording{r1, r2, r3} {
		adm(r, catalog.CapCheck{})
	}
	// A refusal, and an id b.example owns.
	if d := adm(rec("a.example", "capped", "alice", "x", base, 5), catalog.CapCheck{Mode: catalog.MonthlyLimit, Limit: 0}); d.State != catalog.StateRefused {
		t.Fatalf("capped = %+v", d)
	}
	adm(rec("b.example", "theirs", "zed", "y", base, 7), catalog.CapCheck{})
	if d := adm(rec("a.example", "theirs", "alice", "y", base, 8), catalog.CapCheck{}); d.Reason != catalog.ErrIDConflict {
		t.Fatalf("theirs in a = %+v", d)
	}
	holds := ns + ":{a.example}:holds"
	if err := rdb.HSet(ctx, holds, "h1", `{"id":"h1","call_id":"held-call"}`).Err(); err != nil {
		t.Fatal(err)
	}
	del := func(id string, min time.Time) catalog.DeleteResult {
		t.Helper()
		res, err := c.Delete(ctx, catalog.DeleteRequest{Domain: "a.example", ID: id, MinimumEnds: min, Now: base.Add(time.Hour), Reason: "admin", Rule: "r", Actor: "ops"})
		if err != nil {
			t.Fatalf("Delete(%s): %v", id, err)
		}
		return res
	}
	if res := del("r3", time.Time{}); res.Outcome != catalog.Held || res.HoldID != "h1" {
		t.Errorf("held call: %+v", res)
	}
	if res := del("r1", base.Add(2*time.Hour)); res.Outcome != catalog.WithinMinimum {
		t.Errorf("within minimum: %+v", res)
	}
	if res := del("r1", base.Add(time.Hour)); res.Outcome != catalog.Deleted {
		t.Errorf("minimum ends exactly now: %+v", res)
	}
	if res := del("r1", time.Time{}); res.Outcome != catalog.AlreadyDeleted || res.Record.Pending != "MT" {
		t.Errorf("twice: %+v", res)
	}
	for _, id := range []string{"capped", "theirs", "never"} {
		if res := del(id, time.Time{}); res.Outcome != catalog.Absent {
			t.Errorf("Delete(%s) = %+v; want absent", id, res)
		}
	}
	if r, err := c.GetRecording(ctx, "b.example", "theirs"); err != nil || r.Size != 7 {
		t.Errorf("b's theirs after a's delete: %+v, %v", r, err)
	}
	p, err := c.ListRecordings(ctx, catalog.Query{Domain: "a.example", CallID: "shared"})
	if err != nil || len(p.Recordings) != 1 || p.Recordings[0].ID != "r2" {
		t.Errorf("call listing after deleting r1: %+v, %v; want r2", p.Recordings, err)
	}
	if n, b := usage(t, c, "a.example"); n != 2 || b != 50 {
		t.Errorf("usage = %d/%d, want 2/50", n, b)
	}
	// A domain hold covers everything.
	if err := rdb.HSet(ctx, holds, "h2", `{"id":"h2"}`).Err(); err != nil {
		t.Fatal(err)
	}
	if res := del("r2", time.Time{}); res.Outcome != catalog.Held {
		t.Errorf("domain hold: %+v", res)
	}
	// A hold that cannot be read stops deletion.
	if err := rdb.HSet(ctx, holds, "h2", `not json`).Err(); err != nil {
		t.Fatal(err)
	}
	if res := del("r2", time.Time{}); res.Outcome != catalog.Held {
		t.Errorf("unreadable hold: %+v", res)
	}
}

// TestBreakCallAcrossLevels: one call with a recording at level 0 and one
// at level 1 (the 512th call entry), and two at level 1 in one hour.
func TestBreakCallAcrossLevels(t *testing.T) {
	t.Parallel()
	c, _, _ := brkCatalog(t)
	brkProvision(t, c, "a.example")
	ctx := ctxT(t)
	var recs []catalog.Recording
	for i := range 511 {
		recs = append(recs, rec("a.example", fmt.Sprintf("f-%03d", i), "u", fmt.Sprintf("fill-%d", i), base.Add(-time.Duration(i+1)*time.Second), 1))
	}
	if _, err := c.AdmitRecordings(ctx, recs); err != nil {
		t.Fatal(err)
	}
	var levels []int
	for i, r := range []catalog.Recording{
		rec("a.example", "s0", "u", "shared", base, 1),
		rec("a.example", "s1", "u", "shared", base.Add(time.Second), 1),
		rec("a.example", "s2", "u", "shared", base.Add(2*time.Second), 1),
	} {
		d, err := c.Decide(ctx, c.RecordingArtifact(r), catalog.CapCheck{})
		if err != nil || !d.Admitted() {
			t.Fatalf("%d: %+v %v", i, d, err)
		}
		levels = append(levels, d.CallLevel)
		brkFinish(t, c, "a.example", r.ID, d)
	}
	t.Logf("levels %v", levels)
	list := func() []string {
		var ids []string
		p, err := c.ListRecordings(ctx, catalog.Query{Domain: "a.example", CallID: "shared"})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range p.Recordings {
			ids = append(ids, r.ID)
		}
		return ids
	}
	if got := list(); !slices.Equal(got, []string{"s2", "s1", "s0"}) {
		t.Fatalf("call listing = %v", got)
	}
	for _, step := range []struct {
		id   string
		want []string
	}{{"s1", []string{"s2", "s0"}}, {"s0", []string{"s2"}}, {"s2", nil}} {
		if res, err := c.Delete(ctx, catalog.DeleteRequest{Domain: "a.example", ID: step.id, Now: base.Add(time.Hour)}); err != nil || res.Outcome != catalog.Deleted {
			t.Fatalf("Delete(%s) = %+v, %v", step.id, res, err)
		}
		if got := list(); !slices.Equal(got, step.want) {
			t.Errorf("after deleting %s: call listing = %v, want %v", step.id, got, step.want)
		}
	}
}

// ---------------------------------------------------------------------
// Bad input that ingest accepts.

// TestBreakEdgeValues: a 256-character call id of every printable
// character class (commas and colons included), a 128-character id, an
// empty user, an SMS with no folder.
func TestBreakEdgeValues(t *testing.T) {
	t.Parallel()
	c, _, _ := brkCatalog(t)
	brkProvision(t, c, "a.example")
	ctx := ctxT(t)
	call := strings.Repeat("a,b:c;{}%!~", 24)[:256]
	id := strings.Repeat("A.b-9_", 22)[:128]
	r := rec("a.example", id, "", call, base, 10)
	r.ObjectKey = "recordings/a.example/2026/11/01/" + id + "-a1b2c3d4e5f6"
	d, err := c.Decide(ctx, c.RecordingArtifact(r), catalog.CapCheck{})
	if err != nil || !d.Admitted() {
		t.Fatal(d, err)
	}
	brkFinish(t, c, "a.example", id, d)
	got, err := c.GetRecording(ctx, "a.example", id)
	if err != nil {
		t.Fatal(err)
	}
	assertRecording(t, got, r)
	for _, q := range []catalog.Query{{Domain: "a.example"}, {Domain: "a.example", CallID: call}} {
		p, err := c.ListRecordings(ctx, q)
		if err != nil || len(p.Recordings) != 1 || p.Recordings[0].ID != id {
			t.Errorf("ListRecordings(%+v) = %v, %v", q.CallID != "", p.Recordings, err)
		}
	}
	if p, err := c.ListRecordings(ctx, catalog.Query{Domain: "a.example", CallID: call[:255]}); err != nil || len(p.Recordings) != 0 {
		t.Errorf("prefix of the call id lists %d", len(p.Recordings))
	}
	if res, err := c.Delete(ctx, catalog.DeleteRequest{Domain: "a.example", ID: id, Now: base.Add(time.Hour)}); err != nil || res.Outcome != catalog.Deleted || res.Record.ObjectKey != r.ObjectKey {
		t.Errorf("Delete = %+v, %v", res, err)
	}
	sms := catalog.Message{ID: "sms-nofolder", Reseller: "r1", Domain: "a.example", User: "7", Kind: "sms", ReceivedAt: base, Size: 3, ObjectKey: "sms/a.example/sms-nofolder", AcceptedAt: base}
	if d, err := c.Decide(ctx, c.MessageArtifact(sms), catalog.CapCheck{}); err != nil || !d.Admitted() {
		t.Fatalf("sms without folder: %+v, %v", d, err)
	} else {
		brkFinish(t, c, "a.example", sms.ID, d)
	}
	if r, err := c.Record(ctx, "a.example", sms.ID); err != nil || r.Kind != "sms" || r.Folder != "" || r.ObjectKey != sms.ObjectKey {
		t.Errorf("Record(sms) = %+v, %v", r, err)
	}
	if res, err := c.Delete(ctx, catalog.DeleteRequest{Domain: "a.example", ID: sms.ID, Now: base.Add(time.Hour)}); err != nil || res.Outcome != catalog.Deleted {
		t.Errorf("Delete(sms) = %+v, %v", res, err)
	}
}

var _ = context.Background

// ---------------------------------------------------------------------
// Replay equality.

// brkLive decides a workload the live way (Decide, Done, Delete and the
// effects confirmed) on live and returns the decisions as the streams
// record them, in stream order, with artifacts built by rc (artifacts
// carry their catalog's keys, as policy's artifactOf builds them).
func brkLive(t *testing.T, c, rc *catalog.Catalog, fill int) []catalog.Recorded {
	t.Helper()
	ctx := ctxT(t)
	var out []catalog.Recorded
	tomb := func(domain, id string) {
		r, err := c.Record(ctx, domain, id)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, catalog.Recorded{Op: catalog.OpDeletion, Deletion: catalog.Deletion{Domain: domain, ID: id, Reason: r.Reason, Rule: r.Rule, Actor: r.Actor, At: r.DeletedAt}})
	}
	decide := func(mk func(*catalog.Catalog) catalog.Artifact, cap catalog.CapCheck) catalog.Decision {
		t.Helper()
		a, ra := mk(c), mk(rc)
		d, err := c.Decide(ctx, a, cap)
		if err != nil {
			t.Fatalf("Decide(%s/%s): %v", a.Domain, a.ID, err)
		}
		brkFinish(t, c, a.Domain, a.ID, d)
		switch {
		case d.Repeat:
		case d.Admitted():
			out = append(out, catalog.Recorded{Op: catalog.OpAdmission, Admission: catalog.Admission{Artifact: ra, EvictedID: d.EvictedID, CallLevel: d.CallLevel}})
			if d.EvictedID != "" {
				tomb(a.Domain, d.EvictedID)
			}
		default:
			out = append(out, catalog.Recorded{Op: catalog.OpRefusal, Refusal: catalog.Refusal{Domain: a.Domain, ID: a.ID, Kind: a.Kind, ObjectKey: a.ObjectKey,
				Reason: d.Reason, Size: a.Size, Seq: a.Seq, AcceptedAt: a.AcceptedAt, At: time.UnixMilli(a.Score).UTC()}})
		}
		return d
	}
	recA := func(r catalog.Recording) func(*catalog.Catalog) catalog.Artifact {
		return func(c *catalog.Catalog) catalog.Artifact { return c.RecordingArtifact(r) }
	}
	msgA := func(m catalog.Message) func(*catalog.Catalog) catalog.Artifact {
		return func(c *catalog.Catalog) catalog.Artifact { return c.MessageArtifact(m) }
	}
	del := func(domain, id string, now time.Time) {
		t.Helper()
		res, err := c.Delete(ctx, catalog.DeleteRequest{Domain: domain, ID: id, Now: now, Reason: "admin", Rule: "explicit", Actor: "ops"})
		if err != nil {
			t.Fatal(err)
		}
		if res.Outcome != catalog.Deleted {
			return
		}
		for _, e := range []byte(res.Record.Pending) {
			if err := c.Done(ctx, domain, id, e); err != nil {
				t.Fatal(err)
			}
		}
		tomb(domain, id)
	}
	m := time.Minute
	for i := range fill {
		r := rec("d0.example", fmt.Sprintf("fill-%03d", i), fmt.Sprintf("u%d", i%3), fmt.Sprintf("fc-%d", i), base.Add(-time.Duration(i)*time.Second), 1)
		decide(recA(r), catalog.CapCheck{})
	}
	monthly := catalog.CapCheck{Mode: catalog.MonthlyLimit, Limit: int64(fill + 5)}
	for i := range 7 {
		r := rec("d0.example", fmt.Sprintf("0193f2c4-7b1a-7c3e-9a4b-%012d", i), []string{"alice", "bob", ""}[i%3], []string{"call-1", "call-2", ""}[i%3], base.Add(time.Duration(i)*m), int64(10+i))
		r.ObjectKey = "recordings/d0.example/2026/11/01/" + r.ID + "-a1b2c3d4e5f6"
		decide(recA(r), monthly)
	}
	// d1 sends an id d0 owns.
	decide(recA(rec("d1.example", "0193f2c4-7b1a-7c3e-9a4b-000000000001", "alice", "call-1", base, 99)), catalog.CapCheck{})
	evict := catalog.CapCheck{Mode: catalog.EvictOldest, Limit: 2, EvictBefore: base.Add(24 * time.Hour)}
	for i := range 5 {
		s := catalog.Message{ID: fmt.Sprintf("sms-%d", i), Reseller: "r1", Domain: "d1.example", User: "7", Kind: "sms", Folder: "inbox",
			ReceivedAt: base.Add(time.Duration(i) * 61 * m), From: "+1", To: "+2", Size: int64(3 + i), ObjectKey: fmt.Sprintf("sms/d1.example/sms-%d", i), AcceptedAt: base.Add(time.Duration(i) * 61 * m), StreamSeq: uint64(100 + i)}
		decide(msgA(s), evict)
	}
	box := catalog.CapCheck{Mode: catalog.RefuseAtLimit, Limit: 1}
	decide(msgA(brkVM("d1.example", "vm-1", "7", base)), box)
	decide(msgA(brkVM("d1.example", "vm-2", "7", base.Add(m))), box)
	fax := brkVM("d1.example", "fax-1", "7", base)
	fax.Kind = "fax_sent"
	decide(msgA(fax), catalog.CapCheck{})
	del("d0.example", "0193f2c4-7b1a-7c3e-9a4b-000000000001", base.Add(2*time.Hour))
	del("d1.example", "vm-1", base.Add(3*time.Hour))
	del("d1.example", "sms-4", base.Add(9*time.Hour))
	del("d0.example", "fill-000", base.Add(4*time.Hour))
	return out
}

func brkCompare(t *testing.T, what string, want, got map[string]string) {
	t.Helper()
	n := 0
	for k, v := range want {
		if got[k] != v && n < 10 {
			n++
			t.Errorf("%s: %s\n   replay %q\n   live   %q", what, k, got[k], v)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok && n < 10 {
			n++
			t.Errorf("%s: %s = %q only in the replay", what, k, v)
		}
	}
}

// TestBreakReplayEqualsLive replays the live decisions (in one batch, and
// one decision per batch) into empty namespaces: every key must equal the
// live one. fill makes the call index cross into level 1.
func TestBreakReplayEqualsLive(t *testing.T) {
	t.Parallel()
	for _, fill := range []int{0, 510} {
		t.Run(fmt.Sprint("fill ", fill), func(t *testing.T) {
			t.Parallel()
			for _, mode := range []string{"one batch", "one by one"} {
				live, rdbL, nsL := brkCatalog(t)
				brkProvision(t, live, "d0.example", "d1.example")
				rc, rdbR, nsR := brkCatalog(t)
				brkProvision(t, rc, "d0.example", "d1.example")
				recorded := brkLive(t, live, rc, fill)
				want := dumpNS(t, rdbL, nsL)
				if mode == "one batch" {
					if err := rc.ApplyRecorded(ctxT(t), recorded); err != nil {
						t.Fatal(err)
					}
				} else {
					for _, r := range recorded {
						if err := rc.ApplyRecorded(ctxT(t), []catalog.Recorded{r}); err != nil {
							t.Fatal(err)
						}
					}
				}
				brkCompare(t, mode, want, dumpNS(t, rdbR, nsR))
			}
		})
	}
}

// TestBreakDecideManyAcrossLevel decides 600 recordings with calls through
// DecideMany (runs cross the call index's level boundary at 512, where the
// script moves the entry to the next level and rewrites the record), and
// the same one by one through Decide, then replays the batched decisions:
// decisions, keys and the replay must agree.
func TestBreakDecideManyAcrossLevel(t *testing.T) {
	t.Parallel()
	for _, batch := range []int{64, 255, 600} {
		t.Run(fmt.Sprint("batch ", batch), func(t *testing.T) {
			t.Parallel()
			many, rdbM, nsM := brkCatalog(t)
			single, rdbS, nsS := brkCatalog(t)
			replay, rdbR, nsR := brkCatalog(t)
			for _, c := range []*catalog.Catalog{many, single, replay} {
				brkProvision(t, c, "d0.example", "d1.example")
			}
			ctx := ctxT(t)
			mk := func(c *catalog.Catalog, i int) catalog.Pending {
				r := rec([]string{"d0.example", "d0.example", "d1.example"}[i%3], fmt.Sprintf("r-%03d", i), fmt.Sprintf("u%d", i%4), fmt.Sprintf("call-%d", i/3), base.Add(time.Duration(i)*time.Second), 1)
				return catalog.Pending{Artifact: c.RecordingArtifact(r), Cap: catalog.CapCheck{Mode: catalog.MonthlyLimit, Limit: 1000}}
			}
			const n = 600
			var got []catalog.Decision
			var recorded []catalog.Recorded
			for i := 0; i < n; i += batch {
				var ps []catalog.Pending
				for j := i; j < min(i+batch, n); j++ {
					ps = append(ps, mk(many, j))
				}
				ds, errs := many.DecideMany(ctx, ps)
				for j, err := range errs {
					if err != nil {
						t.Fatalf("DecideMany %d: %v", i+j, err)
					}
					brkFinish(t, many, ps[j].Artifact.Domain, ps[j].Artifact.ID, ds[j])
					recorded = append(recorded, catalog.Recorded{Op: catalog.OpAdmission, Admission: catalog.Admission{Artifact: mk(replay, i+j).Artifact, CallLevel: ds[j].CallLevel}})
				}
				got = append(got, ds...)
			}
			for i := range n {
				p := mk(single, i)
				d, err := single.Decide(ctx, p.Artifact, p.Cap)
				if err != nil {
					t.Fatal(err)
				}
				brkFinish(t, single, p.Artifact.Domain, p.Artifact.ID, d)
				if d != got[i] {
					t.Errorf("decision %d: DecideMany %+v, Decide %+v", i, got[i], d)
				}
			}
			if err := replay.ApplyRecorded(ctx, recorded); err != nil {
				t.Fatal(err)
			}
			want := dumpNS(t, rdbS, nsS)
			brkCompare(t, "DecideMany vs Decide", want, dumpNS(t, rdbM, nsM))
			brkCompare(t, "replay vs Decide", want, dumpNS(t, rdbR, nsR))
		})
	}
}

// TestBreakObjectKeyRoundTrip: the orphan sweep compares a record's
// ObjectKey with the CDS key byte for byte and removes the media on a
// mismatch, so every key must read back exactly, whatever its shape.
func TestBreakObjectKeyRoundTrip(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 1, 23, 59, 59, 999_000_000, time.UTC)
	ids := []string{"rec-1", "0193f2c4-7b1a-7c3e-9a4b-000000000123", "a", "a.example", "recordings", "2026", "x-a1b2c3d4e5f6"}
	for _, id := range ids {
		for _, domain := range []string{"a.example", "a", "recordings"} {
			keys := []string{
				"recordings/" + domain + "/2026/11/01/" + id + "-a1b2c3d4e5f6",
				"recordings/" + domain + "/2026/11/01/" + id + "-A1B2C3D4E5F6",
				"recordings/" + domain + "/2026/11/02/" + id + "-a1b2c3d4e5f6",
				"recordings/" + domain + "/2026/11/01/" + id + "-a1b2c3d4e5f",
				"recordings/" + domain + "/2026/11/01/" + id + id + "-a1b2c3d4e5f6",
				"recordings/" + domain + "/" + id,
				"recordings/" + domain + "/",
				"recordings/" + domain,
				"/" + domain + "/" + id,
				domain + "/" + domain + "/" + id,
				"voicemail/" + domain + "/" + id + "/" + id,
				"voicemail/other.example/" + id,
				"voicemail//" + domain + "/" + id,
				"\x01abcdef", "\x02/" + domain + "/x", "\x03x", "", "x", id,
				"recordings/" + domain + "/2026/11/01/" + id + "-a1b2c3d4e5f6\x00",
			}
			for _, key := range keys {
				for _, kind := range []string{catalog.KindRecording, "voicemail", "sms"} {
					s := catalog.Stored{State: catalog.StateAdmitted, ID: id, Kind: kind, Mode: "automatic", At: at, ObjectKey: key, AcceptedAt: at}
					if kind != catalog.KindRecording {
						s.Mode = ""
					}
					got, err := catalog.UnpackStored(domain, catalog.HourOf(at), s.Pack(domain))
					if err != nil {
						t.Fatal(err)
					}
					if got.ObjectKey != key {
						t.Errorf("kind %s domain %s id %s: key %q reads back as %q", kind, domain, id, key, got.ObjectKey)
					}
				}
			}
		}
	}
}

// TestBreakReplayOutOfRangeTime: the previous layout admitted messages of
// any received_at (admission.go checks only that it is set; a PBX with an
// unset clock sends 1970-01-01), and the upgrade is a rebuild through
// ApplyRecorded, which does not run CheckArtifact. Such an admission, and
// a later tombstone of it, must replay without breaking the rebuild.
func TestBreakReplayOutOfRangeTime(t *testing.T) {
	t.Parallel()
	c, _, _ := brkCatalog(t)
	brkProvision(t, c, "a.example", "b.example")
	ctx := ctxT(t)
	// Past what a claim can name (October 5797 on), a replay refuses the batch
	// outright rather than write a claim that names another domain; the
	// policy's replay dead-letters such an event before it gets here.
	far := brkVM("a.example", "vm-5900", "101", time.Date(5900, 1, 1, 0, 0, 0, 0, time.UTC))
	if err := c.ApplyRecorded(ctx, []catalog.Recorded{{Op: catalog.OpAdmission, Admission: catalog.Admission{Artifact: c.MessageArtifact(far)}}}); !errors.Is(err, catalog.ErrUnstorable) {
		t.Errorf("vm-5900: replaying the admission = %v, want ErrUnstorable", err)
	}
	if d, err := c.DomainOf(ctx, "vm-5900"); err == nil {
		t.Errorf("vm-5900 is claimed by %s", d)
	}
	for _, at := range []time.Time{time.Unix(0, 0).UTC(), time.Date(1999, 12, 31, 23, 0, 0, 0, time.UTC), time.Date(5797, 1, 1, 0, 0, 0, 0, time.UTC)} {
		id := "vm-" + at.Format("2006")
		m := brkVM("a.example", id, "101", at)
		if err := c.ApplyRecorded(ctx, []catalog.Recorded{{Op: catalog.OpAdmission, Admission: catalog.Admission{Artifact: c.MessageArtifact(m)}}}); err != nil {
			t.Errorf("%s: replaying the admission: %v", id, err)
			continue
		}
		if d, err := c.DomainOf(ctx, id); err != nil || d != "a.example" {
			t.Errorf("%s: DomainOf after the replay = %q, %v; want a.example", id, d, err)
		}
		if r, err := c.Record(ctx, "a.example", id); err != nil || r.State != catalog.StateAdmitted {
			t.Errorf("%s: Record after the replay = %+v, %v; want admitted", id, r.State, err)
		}
		del := catalog.Recorded{Op: catalog.OpDeletion, Deletion: catalog.Deletion{Domain: "a.example", ID: id, At: base, Reason: "expired", Rule: "r", Actor: "culler"}}
		if err := c.ApplyRecorded(ctx, []catalog.Recorded{del}); err != nil {
			t.Errorf("%s: replaying its tombstone in a later batch: %v (the whole rebuild fails)", id, err)
		}
	}
}
