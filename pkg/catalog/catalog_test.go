package catalog_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/testenv"
)

// newCatalog returns a catalog on the real Redis in a fresh namespace.
func newCatalog(t *testing.T) *catalog.Catalog {
	t.Helper()
	ns := testenv.Namespace(t)
	return catalog.New(testenv.Redis(t, ns), ns)
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// base is a fixed instant at millisecond precision, as the catalog stores.
var base = time.Date(2026, 11, 1, 9, 30, 0, 0, time.UTC)

// rec builds a fully populated recording.
func rec(domain, id, user, callID string, startedAt time.Time, size int64) catalog.Recording {
	return catalog.Recording{
		ID:          id,
		CallID:      callID,
		Reseller:    "r1",
		Domain:      domain,
		User:        user,
		Mode:        "automatic",
		StartedAt:   startedAt,
		DurationS:   42,
		ContentType: "audio/ogg",
		Size:        size,
		SHA256:      fmt.Sprintf("%064x", size),
		ObjectKey:   "recordings/" + domain + "/2026/11/01/" + id,
		AcceptedAt:  startedAt.Add(90 * time.Second),
		StreamSeq:   7,
	}
}

func admit(t *testing.T, c *catalog.Catalog, r catalog.Recording) {
	t.Helper()
	ok, err := c.AdmitRecording(ctxT(t), r)
	if err != nil {
		t.Fatalf("AdmitRecording(%s): %v", r.ID, err)
	}
	if !ok {
		t.Fatalf("AdmitRecording(%s) = false on first admission", r.ID)
	}
}

func usage(t *testing.T, c *catalog.Catalog, domain string) (count, bytes int64) {
	t.Helper()
	u, err := c.Usage(ctxT(t), domain)
	if err != nil {
		t.Fatal(err)
	}
	e := u[catalog.KindRecording]
	return e.Count, e.Bytes
}

func TestAdmitRecordingOnce(t *testing.T) {
	t.Parallel()
	c := newCatalog(t)
	r := rec("a.example", "rec-1", "alice", "call-1", base, 12345)
	for i, want := range []bool{true, false, false} {
		got, err := c.AdmitRecording(ctxT(t), r)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("admission %d = %v, want %v", i+1, got, want)
		}
		if n, b := usage(t, c, "a.example"); n != 1 || b != r.Size {
			t.Fatalf("after admission %d usage = %d recordings / %d bytes, want 1 / %d", i+1, n, b, r.Size)
		}
	}
}

// TestAdmitRecordingRedeliveryChangesNothing checks that a second admission
// of an id with different content keeps the first version and its usage.
func TestAdmitRecordingRedeliveryChangesNothing(t *testing.T) {
	t.Parallel()
	c := newCatalog(t)
	first := rec("a.example", "rec-1", "alice", "call-1", base, 100)
	admit(t, c, first)
	second := rec("a.example", "rec-1", "bob", "call-2", base.Add(time.Hour), 999)
	ok, err := c.AdmitRecording(ctxT(t), second)
	if err != nil || ok {
		t.Fatalf("second admission = %v, %v; want false, nil", ok, err)
	}
	got, err := c.GetRecording(ctxT(t), "a.example", "rec-1")
	if err != nil {
		t.Fatal(err)
	}
	assertRecording(t, got, first)
	if n, b := usage(t, c, "a.example"); n != 1 || b != 100 {
		t.Fatalf("usage = %d / %d bytes, want 1 / 100", n, b)
	}
	page, err := c.ListRecordings(ctxT(t), catalog.Query{Domain: "a.example", User: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Recordings) != 0 {
		t.Fatalf("the refused admission indexed %d recordings under its user", len(page.Recordings))
	}
}

func TestAdmitRecordingConcurrentSameID(t *testing.T) {
	t.Parallel()
	c := newCatalog(t)
	r := rec("a.example", "rec-1", "alice", "call-1", base, 4096)
	const n = 32
	ctx := ctxT(t)
	var wins atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			ok, err := c.AdmitRecording(ctx, r)
			if err != nil {
				errs <- err
				return
			}
			if ok {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if w := wins.Load(); w != 1 {
		t.Fatalf("%d of %d concurrent admissions returned true, want exactly 1", w, n)
	}
	if cnt, b := usage(t, c, "a.example"); cnt != 1 || b != r.Size {
		t.Fatalf("usage = %d / %d bytes, want 1 / %d", cnt, b, r.Size)
	}
}

func TestAdmitRecordingConcurrentDistinct(t *testing.T) {
	t.Parallel()
	c := newCatalog(t)
	const n = 32
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	var want int64
	for i := range n {
		r := rec("a.example", fmt.Sprintf("rec-%02d", i), "alice", "call-1", base.Add(time.Duration(i)*time.Second), int64(1000+i*7))
		want += r.Size
		wg.Go(func() {
			ok, err := c.AdmitRecording(ctx, r)
			if err == nil && !ok {
				err = fmt.Errorf("admission of %s returned false", r.ID)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if cnt, b := usage(t, c, "a.example"); cnt != n || b != want {
		t.Fatalf("usage = %d / %d bytes, want %d / %d", cnt, b, n, want)
	}
	page, err := c.ListRecordings(ctxT(t), catalog.Query{Domain: "a.example", CallID: "call-1", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Recordings) != n {
		t.Fatalf("call lists %d recordings, want %d", len(page.Recordings), n)
	}
}

func TestUsageIsPerDomain(t *testing.T) {
	t.Parallel()
	c := newCatalog(t)
	admit(t, c, rec("a.example", "rec-a1", "alice", "call-1", base, 10))
	admit(t, c, rec("a.example", "rec-a2", "", "call-2", base, 20))
	admit(t, c, rec("b.example", "rec-b1", "bob", "call-3", base, 300))
	cases := []struct {
		domain       string
		count, bytes int64
	}{
		{"a.example", 2, 30},
		{"b.example", 1, 300},
		{"unknown.example", 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.domain, func(t *testing.T) {
			t.Parallel()
			if n, b := usage(t, c, tc.domain); n != tc.count || b != tc.bytes {
				t.Fatalf("usage = %d / %d bytes, want %d / %d", n, b, tc.count, tc.bytes)
			}
		})
	}
}

// assertRecording compares every field; times by instant, since the
// catalog keeps milliseconds in UTC.
func assertRecording(t *testing.T, got, want catalog.Recording) {
	t.Helper()
	if !got.StartedAt.Equal(want.StartedAt) || !got.AcceptedAt.Equal(want.AcceptedAt) {
		t.Errorf("times = started %v accepted %v, want %v / %v", got.StartedAt, got.AcceptedAt, want.StartedAt, want.AcceptedAt)
	}
	got.StartedAt, got.AcceptedAt = time.Time{}, time.Time{}
	want.StartedAt, want.AcceptedAt = time.Time{}, time.Time{}
	// A record keeps no reseller: reads give the domain's reseller of
	// record (TestGetRecordingGivesTheResellerOfRecord).
	want.Reseller = got.Reseller
	if got != want {
		t.Errorf("recording = %+v\nwant        %+v", got, want)
	}
}

func TestGetRecordingGivesTheResellerOfRecord(t *testing.T) {
	t.Parallel()
	c := newCatalog(t)
	r := rec("a.example", "rec-1", "alice", "call-1", base, 10)
	admit(t, c, r)
	if got, err := c.GetRecording(ctxT(t), "a.example", "rec-1"); err != nil || got.Reseller != "" {
		t.Fatalf("unprovisioned: reseller %q, %v; want none", got.Reseller, err)
	}
	if _, err := c.ApplyDomain(ctxT(t), catalog.Domain{Domain: "a.example", Reseller: "r9", ProvisionedAt: base}, 0); err != nil {
		t.Fatal(err)
	}
	if got, err := c.GetRecording(ctxT(t), "a.example", "rec-1"); err != nil || got.Reseller != "r9" {
		t.Fatalf("provisioned under r9: reseller %q, %v", got.Reseller, err)
	}
}

func TestGetRecording(t *testing.T) {
	t.Parallel()
	c := newCatalog(t)
	local := time.FixedZone("UTC+2", 2*3600)
	cases := []struct {
		name string
		r    catalog.Recording
	}{
		{"full", rec("a.example", "rec-1", "alice", "call-1", base, 12345)},
		{"no user, on demand", func() catalog.Recording {
			r := rec("a.example", "rec-2", "", "call-2", base.Add(time.Minute), 1)
			r.Mode, r.Reseller, r.DurationS, r.StreamSeq = "on_demand", "r2", 3600*5, 1<<40
			return r
		}()},
		{"non-UTC milliseconds", rec("a.example", "rec-3", "carol", "call-3", time.Date(2026, 11, 1, 11, 0, 0, 123_000_000, local), 77)},
	}
	for _, tc := range cases {
		admit(t, c, tc.r)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := c.GetRecording(ctxT(t), tc.r.Domain, tc.r.ID)
			if err != nil {
				t.Fatal(err)
			}
			assertRecording(t, got, tc.r)
			if got.StartedAt.Location() != time.UTC {
				t.Errorf("StartedAt location = %v, want UTC", got.StartedAt.Location())
			}
		})
	}
	missing := []struct{ name, domain, id string }{
		{"unknown id", "a.example", "rec-404"},
		{"id of another domain", "b.example", "rec-1"},
	}
	for _, m := range missing {
		t.Run("missing/"+m.name, func(t *testing.T) {
			t.Parallel()
			if r, err := c.GetRecording(ctxT(t), m.domain, m.id); !errors.Is(err, catalog.ErrNotFound) {
				t.Fatalf("GetRecording(%s, %s) = %+v, %v; want ErrNotFound", m.domain, m.id, r, err)
			}
		})
	}
}

func TestClaimID(t *testing.T) {
	t.Parallel()
	c := newCatalog(t)
	steps := []struct {
		id, domain, wantOwner string
	}{
		{"rec-1", "a.example", "a.example"},
		{"rec-1", "b.example", "a.example"},
		{"rec-1", "a.example", "a.example"},
		{"rec-2", "b.example", "b.example"},
		{"rec-2", "a.example", "b.example"},
	}
	for _, s := range steps { // in order: each step depends on the ones before
		owner, err := catalog.ClaimID(c, ctxT(t), s.id, s.domain)
		if err != nil {
			t.Fatal(err)
		}
		if owner != s.wantOwner {
			t.Fatalf("ClaimID(%s, %s) = %s, want %s", s.id, s.domain, owner, s.wantOwner)
		}
	}
	for id, want := range map[string]string{"rec-1": "a.example", "rec-2": "b.example"} {
		if got, err := c.DomainOf(ctxT(t), id); err != nil || got != want {
			t.Fatalf("DomainOf(%s) = %q, %v; want %q", id, got, err, want)
		}
	}
	if got, err := c.DomainOf(ctxT(t), "rec-unknown"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("DomainOf(unknown) = %q, %v; want ErrNotFound", got, err)
	}
}

func TestClaimIDConcurrent(t *testing.T) {
	t.Parallel()
	c := newCatalog(t)
	const n = 16
	ctx := ctxT(t)
	owners := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { owners[i], errs[i] = catalog.ClaimID(c, ctx, "rec-race", fmt.Sprintf("d%02d.example", i)) })
	}
	wg.Wait()
	winner, err := c.DomainOf(ctxT(t), "rec-race")
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if errs[i] != nil || owners[i] != winner {
			t.Errorf("claimant %d got %q, %v; want the owner on record %q", i, owners[i], errs[i], winner)
		}
	}
}

// TestAdmitRecordingRegisters checks that admission claims the id for its
// domain (domains themselves are provisioned, never registered by an
// upload).
func TestAdmitRecordingRegisters(t *testing.T) {
	t.Parallel()
	c := newCatalog(t)
	admit(t, c, rec("a.example", "rec-1", "alice", "call-1", base, 1))
	if d, err := c.DomainOf(ctxT(t), "rec-1"); err != nil || d != "a.example" {
		t.Fatalf("DomainOf = %q, %v; want a.example", d, err)
	}
	if r, err := c.ResellerOf(ctxT(t), "a.example"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("ResellerOf = %q, %v; admission must not register a domain", r, err)
	}
}

func TestApplyDomainKeepsTheFirstReseller(t *testing.T) {
	t.Parallel()
	c := newCatalog(t)
	steps := []struct{ domain, reseller, want string }{
		{"a.example", "r1", "r1"},
		{"a.example", "r2", "r1"},
		{"b.example", "r2", "r2"},
		{"b.example", "r1", "r2"},
	}
	for _, s := range steps {
		got, err := c.ApplyDomain(ctxT(t), catalog.Domain{Domain: s.domain, Reseller: s.reseller, ProvisionedBy: "test", ProvisionedAt: time.Now()}, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got != s.want {
			t.Fatalf("ApplyDomain(%s, %s, 0) = %s, want %s", s.domain, s.reseller, got, s.want)
		}
	}
	for domain, want := range map[string]string{"a.example": "r1", "b.example": "r2"} {
		if got, err := c.ResellerOf(ctxT(t), domain); err != nil || got != want {
			t.Fatalf("ResellerOf(%s) = %q, %v; want %q", domain, got, err, want)
		}
	}
	if got, err := c.ResellerOf(ctxT(t), "unknown.example"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("ResellerOf(unknown) = %q, %v; want ErrNotFound", got, err)
	}
}

func TestAdmitRecordingsBatch(t *testing.T) {
	t.Parallel()
	c := newCatalog(t)
	ctx := ctxT(t)
	at := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	admit(t, c, rec("a.example", "old", "101", "c0", at, 10))
	batch := []catalog.Recording{
		rec("a.example", "b1", "101", "c1", at.Add(time.Minute), 100),
		rec("a.example", "old", "101", "c0", at, 10),
		rec("b.example", "b2", "201", "c2", at, 1000),
		rec("a.example", "b1", "101", "c1", at.Add(time.Minute), 100),
	}
	got, err := c.AdmitRecordings(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	if want := []bool{true, false, true, false}; !slices.Equal(got, want) {
		t.Fatalf("AdmitRecordings = %v, want %v", got, want)
	}
	if n, b := usage(t, c, "a.example"); n != 2 || b != 110 {
		t.Fatalf("a.example usage = %d recordings %d bytes, want 2 and 110", n, b)
	}
	if n, b := usage(t, c, "b.example"); n != 1 || b != 1000 {
		t.Fatalf("b.example usage = %d recordings %d bytes, want 1 and 1000", n, b)
	}
	if d, err := c.DomainOf(ctx, "b2"); err != nil || d != "b.example" {
		t.Fatalf("DomainOf(b2) = %q, %v", d, err)
	}
	if got, err := c.AdmitRecordings(ctx, nil); err != nil || got != nil {
		t.Fatalf("empty batch = %v, %v", got, err)
	}
}
