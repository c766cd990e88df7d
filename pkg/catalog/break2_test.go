package catalog_test

// Second round of attack tests. Each test states what it expects; a
// failing one is a defect report.

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/callvault/callvault/pkg/catalog"
)

// TestBreak2HugeSizeHalfWrites: CheckArtifact accepts any size >= 0, but
// the decide script hands the size to HINCRBY as a Lua number, which Redis
// formats as a float once it is large ("4.6e+18"): HINCRBY fails after
// index() has already written the record, bitmap, user index and call
// entry. Scripts are not rolled back, so the artifact is half admitted:
// the record says admitted, usage and the monthly counter never count it,
// and the redelivery answers Repeat (so nothing ever repairs it).
func TestBreak2HugeSizeHalfWrites(t *testing.T) {
	t.Parallel()
	c, _, _ := brkCatalog(t)
	brkProvision(t, c, "a.example")
	ctx := ctxT(t)
	r := rec("a.example", "rec-huge", "alice", "call-1", base, 1<<62)
	a := c.RecordingArtifact(r)
	if err := catalog.CheckArtifact(a); err != nil {
		t.Logf("CheckArtifact refuses it: %v (then Decide must too)", err)
	}
	d, err := c.Decide(ctx, a, catalog.CapCheck{})
	t.Logf("first Decide = %+v, %v", d, err)
	if err != nil && !errors.Is(err, catalog.ErrUnstorable) {
		// A retryable error must leave nothing behind.
		if got, rerr := c.Record(ctx, "a.example", r.ID); rerr == nil {
			t.Errorf("Decide failed (%v) but left a record behind: state %q pending %q size %d", err, got.State, got.Pending, got.Size)
		}
		d2, err2 := c.Decide(ctx, a, catalog.CapCheck{})
		t.Logf("redelivery Decide = %+v, %v", d2, err2)
		if err2 == nil && d2.Repeat {
			u, _ := c.Usage(ctx, "a.example")
			t.Errorf("redelivery answers Repeat %q: the half-written admission stands; usage = %+v (does not count it)", d2.State, u)
		}
	}
}

// TestBreak2SizeAbove2p53: the scripts carry sizes as Lua doubles, exact
// to 2^53. A size over 1 TiB is refused (a batch of them could add up past
// 2^53); one of 1 TiB keeps every byte through Decide, Done and usage.
func TestBreak2SizeAbove2p53(t *testing.T) {
	t.Parallel()
	c, _, _ := brkCatalog(t)
	brkProvision(t, c, "a.example")
	ctx := ctxT(t)
	over := rec("a.example", "rec-over", "alice", "call-0", base, 1<<53+1)
	if _, err := c.Decide(ctx, c.RecordingArtifact(over), catalog.CapCheck{}); !errors.Is(err, catalog.ErrUnstorable) {
		t.Fatalf("Decide of 2^53+1 bytes = %v, want ErrUnstorable", err)
	}
	const size = 1 << 40
	r := rec("a.example", "rec-big", "alice", "call-1", base, size)
	d, err := c.Decide(ctx, c.RecordingArtifact(r), catalog.CapCheck{})
	if err != nil {
		t.Fatalf("Decide = %v", err)
	}
	brkFinish(t, c, "a.example", r.ID, d)
	u, err := c.Usage(ctx, "a.example")
	if err != nil {
		t.Fatal(err)
	}
	if got := u["recording"].Bytes; got != size {
		t.Errorf("usage recording bytes = %d, want %d", got, int64(size))
	}
	got, err := c.Record(ctx, "a.example", r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Size != size {
		t.Errorf("record size after Done = %d, want %d", got.Size, int64(size))
	}
}

// TestBreak2SharedDomainNumber: nothing stops two domains from getting
// the same number (numberLua writes name[seq] without checking it is
// free). When they do, ids stop being global: the second domain admits an
// id the first owns instead of refusing id_conflict, and DomainOf sends
// the first domain's id to the second domain.
func TestBreak2SharedDomainNumber(t *testing.T) {
	t.Parallel()
	c, _, _ := brkCatalog(t)
	ctx := ctxT(t)
	if _, err := c.ApplyDomain(ctx, catalog.Domain{Domain: "a.example", Reseller: "r1"}, 7); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ApplyDomain(ctx, catalog.Domain{Domain: "b.example", Reseller: "r2"}, 7); err != nil {
		t.Logf("second domain with a taken number refused: %v", err)
		return
	}
	ra := rec("a.example", "rec-x", "alice", "call-1", base, 10)
	rb := rec("b.example", "rec-x", "bob", "call-2", base, 20)
	if d, err := c.Decide(ctx, c.RecordingArtifact(ra), catalog.CapCheck{}); err != nil || !d.Admitted() {
		t.Fatal(d, err)
	}
	d, err := c.Decide(ctx, c.RecordingArtifact(rb), catalog.CapCheck{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Reason != catalog.ErrIDConflict {
		t.Errorf("b.example's rec-x (owned by a.example) = %+v; want refused id_conflict", d)
	}
	if dom, err := c.DomainOf(ctx, "rec-x"); err != nil || dom != "a.example" {
		t.Errorf("DomainOf(rec-x) = %q, %v; want a.example (the gateway looks it up there)", dom, err)
	}
}

// TestBreak2UnknownModeVanishes: a recording whose mode is neither
// automatic nor on_demand (or a message of an unknown kind) has kind code
// 0. CheckArtifact accepts it, Decide admits it and counts its usage, but
// it reads back with kind "": it is neither listed nor found, and the
// culler never sees it.
func TestBreak2UnknownModeVanishes(t *testing.T) {
	t.Parallel()
	c, _, _ := brkCatalog(t)
	brkProvision(t, c, "a.example")
	ctx := ctxT(t)
	r := rec("a.example", "rec-nomode", "alice", "call-1", base, 10)
	r.Mode = ""
	a := c.RecordingArtifact(r)
	if err := catalog.CheckArtifact(a); err != nil {
		return // refused: fine
	}
	d, err := c.Decide(ctx, a, catalog.CapCheck{})
	if err != nil || !d.Admitted() {
		return
	}
	brkFinish(t, c, "a.example", r.ID, d)
	if _, err := c.GetRecording(ctx, "a.example", r.ID); err != nil {
		rec, rerr := c.Record(ctx, "a.example", r.ID)
		t.Errorf("admitted recording with mode %q: GetRecording = %v; Record = kind %q mode %q, %v", r.Mode, err, rec.Kind, rec.Mode, rerr)
	}
	p, err := c.ListRecordings(ctx, catalog.Query{Domain: "a.example"})
	if err != nil || len(p.Recordings) != 1 {
		t.Errorf("ListRecordings lists %d, %v; want the admitted recording", len(p.Recordings), err)
	}
}

// TestBreak2SparseYears: recordings one or two per year across sparse
// years from 1970 (first ms, last ms of 1970, 1971, then gaps), with
// some admitted by replay and one deleted; domain and user walks at small
// page sizes and windows and cursors that fall in empty years. The user
// walk reads twelve months per round trip, so pages straddle years.
func TestBreak2SparseYears(t *testing.T) {
	t.Parallel()
	c, _, _ := brkCatalog(t)
	brkProvision(t, c, "a.example")
	ctx := ctxT(t)
	d := func(y int, m time.Month, day, h, mi, s, ms int) time.Time {
		return time.Date(y, m, day, h, mi, s, ms*1_000_000, time.UTC)
	}
	var items []brkItem
	add := func(id, user string, at time.Time) {
		items = append(items, brkItem{id: id, user: user, call: "c", at: at})
	}
	add("e0", "u1", time.Unix(0, 0).UTC())
	add("e1", "u2", d(1970, 1, 1, 0, 0, 0, 1))
	add("e70end", "u1", d(1970, 12, 31, 23, 59, 59, 999))
	add("e71", "u1", d(1971, 1, 1, 0, 0, 0, 0))
	years := []int{1975, 1983, 1990, 1999, 2000, 2003, 2007, 2011, 2015, 2019, 2023, 2024, 2025}
	for i, y := range years {
		add(fmt.Sprintf("y%d-a", y), []string{"u1", "u2"}[i%2], d(y, 6, 15, 12, 0, 0, 0))
		add(fmt.Sprintf("y%d-z", y), "u1", d(y, 12, 31, 23, 59, 59, 999))
	}
	var replayed []catalog.Admission
	for i, it := range items {
		r := rec("a.example", it.id, it.user, it.call, it.at, 1)
		r.ObjectKey = "recordings/a.example/" + it.at.Format("2006/01/02") + "/" + it.id + "-a1b2c3d4e5f6"
		if i%3 == 1 {
			replayed = append(replayed, catalog.Admission{Artifact: c.RecordingArtifact(r)})
			continue
		}
		admit(t, c, r)
	}
	if err := c.ApplyAdmissions(ctx, replayed); err != nil {
		t.Fatal(err)
	}
	// One deletion: the only record of its hour goes; its year keeps others.
	if err := c.Done(ctx, "a.example", "y1990-a", catalog.EffectPublish); err != nil {
		t.Fatal(err)
	}
	if res, err := c.Delete(ctx, catalog.DeleteRequest{Domain: "a.example", ID: "y1990-a", Now: time.Now()}); err != nil || res.Outcome != catalog.Deleted {
		t.Fatalf("Delete = %+v, %v", res, err)
	}
	live := items[:0:0]
	for _, it := range items {
		if it.id != "y1990-a" {
			live = append(live, it)
		}
	}
	windows := []struct{ from, to time.Time }{
		{},
		{to: d(1985, 1, 1, 0, 0, 0, 0)},
		{from: d(1970, 12, 31, 23, 59, 59, 999), to: d(1971, 1, 1, 0, 0, 0, 1)},
		{from: d(1976, 1, 1, 0, 0, 0, 0), to: d(1982, 1, 1, 0, 0, 0, 0)},
		{from: d(1990, 1, 1, 0, 0, 0, 0), to: d(1991, 1, 1, 0, 0, 0, 0)},
		{to: time.Unix(0, 1_000_000)},
		{from: d(1999, 12, 31, 23, 59, 59, 999), to: d(2000, 6, 15, 12, 0, 0, 1)},
	}
	for _, w := range windows {
		for _, limit := range []int{1, 2, 3, 7} {
			for _, user := range []string{"", "u1", "u2"} {
				q := catalog.Query{Domain: "a.example", User: user, From: w.from, To: w.to, Limit: limit}
				want := brkExpect(live, func(it brkItem) bool {
					return (user == "" || it.user == user) && (w.from.IsZero() || !it.at.Before(w.from)) && (w.to.IsZero() || it.at.Before(w.to))
				})
				if got := brkWalk(t, c, q); !slices.Equal(got, want) {
					t.Errorf("walk(from %v to %v limit %d user %q) =\n %v\nwant %v", w.from, w.to, limit, user, got, want)
				}
			}
		}
	}
	// A cursor in an empty year.
	for _, user := range []string{"", "u1"} {
		p, err := c.ListRecordings(ctx, catalog.Query{Domain: "a.example", User: user, Limit: 2, Cursor: catalog.CursorAt(d(1980, 3, 3, 3, 3, 3, 3), "x")})
		want := brkExpect(live, func(it brkItem) bool {
			return (user == "" || it.user == user) && it.at.Before(d(1980, 3, 3, 3, 3, 3, 3))
		})
		if err != nil || len(p.Recordings) != 2 || p.Recordings[0].ID != want[0] || p.Recordings[1].ID != want[1] {
			t.Errorf("cursor in 1980 user %q: %v, %v; want %v", user, p.Recordings, err, want[:2])
		}
	}
}
