package catalog_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/callvault/callvault/pkg/catalog"
)

// walk pages through q until Next is empty and returns the ids in the order
// served. It fails on an oversized page, a short page that is not the last,
// an id served twice, or a walk that does not end.
func walk(t *testing.T, c *catalog.Catalog, q catalog.Query) []string {
	t.Helper()
	var ids []string
	seen := map[string]bool{}
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatalf("walk of %+v did not end after %d pages (ids so far %v)", q, pages, ids)
		}
		page, err := c.ListRecordings(ctxT(t), q)
		if err != nil {
			t.Fatalf("ListRecordings(%+v): %v", q, err)
		}
		if len(page.Recordings) > q.Limit {
			t.Fatalf("page %d has %d recordings, limit %d", pages, len(page.Recordings), q.Limit)
		}
		if page.Next != "" && len(page.Recordings) != q.Limit {
			t.Fatalf("page %d has %d recordings and a next page, want a full page of %d", pages, len(page.Recordings), q.Limit)
		}
		if pages > 0 && len(page.Recordings) == 0 {
			t.Fatalf("page %d is empty: the page before it should have had no Next", pages)
		}
		for _, r := range page.Recordings {
			if seen[r.ID] {
				t.Fatalf("%s served twice (page %d, ids so far %v)", r.ID, pages, ids)
			}
			seen[r.ID] = true
			if r.Domain != q.Domain {
				t.Fatalf("%s of domain %s listed for %s", r.ID, r.Domain, q.Domain)
			}
			ids = append(ids, r.ID)
		}
		if page.Next == "" {
			return ids
		}
		q.Cursor = page.Next
	}
}

// listFixture admits, in domain a.example:
//
//	r1 alice call-1 base+0     r4 alice call-1 base+3m
//	r2 bob   call-1 base+1m    r5 bob   call-3 base+4m
//	r3 alice call-2 base+2m    tie-a..tie-d carol call-4 base+10m
//
// and, in b.example, newer recordings with the same users and calls.
func listFixture(t *testing.T) *catalog.Catalog {
	t.Helper()
	c := newCatalog(t)
	m := time.Minute
	for _, r := range []catalog.Recording{
		rec("a.example", "r1", "alice", "call-1", base, 10),
		rec("a.example", "r2", "bob", "call-1", base.Add(1*m), 20),
		rec("a.example", "r3", "alice", "call-2", base.Add(2*m), 30),
		rec("a.example", "r4", "alice", "call-1", base.Add(3*m), 40),
		rec("a.example", "r5", "bob", "call-3", base.Add(4*m), 50),
		// admitted out of id order: ties must still come out by id
		rec("a.example", "tie-c", "carol", "call-4", base.Add(10*m), 1),
		rec("a.example", "tie-a", "carol", "call-4", base.Add(10*m), 1),
		rec("a.example", "tie-d", "carol", "call-4", base.Add(10*m), 1),
		rec("a.example", "tie-b", "carol", "call-4", base.Add(10*m), 1),
		rec("b.example", "b1", "alice", "call-1", base.Add(5*m), 1),
		rec("b.example", "b2", "carol", "call-4", base.Add(10*m), 1),
		rec("b.example", "b3", "bob", "call-3", base.Add(20*m), 1),
	} {
		admit(t, c, r)
	}
	return c
}

func TestListRecordings(t *testing.T) {
	t.Parallel()
	c := listFixture(t)
	m := time.Minute
	ties := []string{"tie-d", "tie-c", "tie-b", "tie-a"}
	cases := []struct {
		name string
		q    catalog.Query
		want []string
	}{
		{"domain, newest first", catalog.Query{Domain: "a.example"},
			append(slices.Clone(ties), "r5", "r4", "r3", "r2", "r1")},
		{"other domain", catalog.Query{Domain: "b.example"}, []string{"b3", "b2", "b1"}},
		{"unknown domain", catalog.Query{Domain: "c.example"}, nil},
		{"user", catalog.Query{Domain: "a.example", User: "alice"}, []string{"r4", "r3", "r1"}},
		{"user bob", catalog.Query{Domain: "a.example", User: "bob"}, []string{"r5", "r2"}},
		{"user of ties", catalog.Query{Domain: "a.example", User: "carol"}, ties},
		{"unknown user", catalog.Query{Domain: "a.example", User: "mallory"}, nil},
		{"call", catalog.Query{Domain: "a.example", CallID: "call-1"}, []string{"r4", "r2", "r1"}},
		{"call of ties", catalog.Query{Domain: "a.example", CallID: "call-4"}, ties},
		{"unknown call", catalog.Query{Domain: "a.example", CallID: "call-9"}, nil},
		{"from inclusive, to exclusive", catalog.Query{Domain: "a.example", From: base.Add(1 * m), To: base.Add(4 * m)},
			[]string{"r4", "r3", "r2"}},
		{"from only", catalog.Query{Domain: "a.example", From: base.Add(4 * m)}, append(slices.Clone(ties), "r5")},
		{"to only", catalog.Query{Domain: "a.example", To: base.Add(2 * m)}, []string{"r2", "r1"}},
		{"to excludes a tie group", catalog.Query{Domain: "a.example", To: base.Add(10 * m)},
			[]string{"r5", "r4", "r3", "r2", "r1"}},
		{"from and to around a tie group", catalog.Query{Domain: "a.example", From: base.Add(10 * m), To: base.Add(10*m + time.Millisecond)}, ties},
		{"empty window", catalog.Query{Domain: "a.example", From: base.Add(5 * m), To: base.Add(10 * m)}, nil},
		{"user and window", catalog.Query{Domain: "a.example", User: "alice", From: base.Add(1 * m), To: base.Add(3 * m)}, []string{"r3"}},
		{"call and from", catalog.Query{Domain: "a.example", CallID: "call-1", From: base.Add(1 * m)}, []string{"r4", "r2"}},
		{"call and to", catalog.Query{Domain: "a.example", CallID: "call-1", To: base.Add(3 * m)}, []string{"r2", "r1"}},
	}
	for _, tc := range cases {
		for _, limit := range []int{1, 2, 3, 100} {
			t.Run(fmt.Sprintf("%s/limit %d", tc.name, limit), func(t *testing.T) {
				t.Parallel()
				q := tc.q
				q.Limit = limit
				if got := walk(t, c, q); !slices.Equal(got, tc.want) {
					t.Fatalf("walk = %v, want %v", got, tc.want)
				}
			})
		}
	}
}

// TestListRecordingsCallAndUser combines the call and user filters.
func TestListRecordingsCallAndUser(t *testing.T) {
	t.Parallel()
	c := listFixture(t)
	for _, limit := range []int{1, 2, 3, 100} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			t.Parallel()
			q := catalog.Query{Domain: "a.example", CallID: "call-1", User: "alice", Limit: limit}
			if got, want := walk(t, c, q), []string{"r4", "r1"}; !slices.Equal(got, want) {
				t.Fatalf("walk = %v, want %v", got, want)
			}
		})
	}
}

// TestListRecordingsPaginationLimit2 walks five recordings two at a time.
func TestListRecordingsPaginationLimit2(t *testing.T) {
	t.Parallel()
	c := newCatalog(t)
	for i := range 5 {
		admit(t, c, rec("a.example", fmt.Sprintf("rec-%d", i), "alice", "call-1", base.Add(time.Duration(i)*time.Hour), 1))
	}
	q := catalog.Query{Domain: "a.example", Limit: 2}
	var pages [][]string
	for {
		page, err := c.ListRecordings(ctxT(t), q)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range page.Recordings {
			ids = append(ids, r.ID)
		}
		pages = append(pages, ids)
		if page.Next == "" || len(pages) > 5 {
			break
		}
		q.Cursor = page.Next
	}
	want := [][]string{{"rec-4", "rec-3"}, {"rec-2", "rec-1"}, {"rec-0"}}
	if !slices.EqualFunc(pages, want, slices.Equal) {
		t.Fatalf("pages = %v, want %v (the last with an empty Next)", pages, want)
	}
}

// TestListRecordingsTies pages one at a time through recordings that share
// a start time, alone and between other recordings.
func TestListRecordingsTies(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		others bool
		want   []string
	}{
		{"only ties", false, []string{"same-3", "same-2", "same-1", "same-0"}},
		{"ties between others", true, []string{"after", "same-3", "same-2", "same-1", "same-0", "before"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newCatalog(t)
			for _, i := range []int{2, 0, 3, 1} {
				admit(t, c, rec("a.example", fmt.Sprintf("same-%d", i), "alice", "call-1", base, 1))
			}
			if tc.others {
				admit(t, c, rec("a.example", "after", "alice", "call-1", base.Add(time.Millisecond), 1))
				admit(t, c, rec("a.example", "before", "alice", "call-1", base.Add(-time.Millisecond), 1))
			}
			for _, q := range []catalog.Query{
				{Domain: "a.example", Limit: 1},
				{Domain: "a.example", User: "alice", Limit: 1},
				{Domain: "a.example", CallID: "call-1", Limit: 1},
			} {
				if got := walk(t, c, q); !slices.Equal(got, tc.want) {
					t.Fatalf("walk(%+v) = %v, want %v", q, got, tc.want)
				}
			}
		})
	}
}

// TestListRecordingsStableUnderAdmission checks that a walk neither repeats
// nor skips when recordings arrive between pages: newer ones stay before
// the cursor, older ones are served in order.
func TestListRecordingsStableUnderAdmission(t *testing.T) {
	t.Parallel()
	c := newCatalog(t)
	for i := range 4 {
		admit(t, c, rec("a.example", fmt.Sprintf("rec-%d", i), "alice", "call-1", base.Add(time.Duration(i)*time.Minute), 1))
	}
	q := catalog.Query{Domain: "a.example", Limit: 2}
	page, err := c.ListRecordings(ctxT(t), q)
	if err != nil {
		t.Fatal(err)
	}
	admit(t, c, rec("a.example", "newer", "alice", "call-1", base.Add(time.Hour), 1))
	admit(t, c, rec("a.example", "older", "alice", "call-1", base.Add(-time.Hour), 1))
	var got []string
	for _, r := range page.Recordings {
		got = append(got, r.ID)
	}
	q.Cursor = page.Next
	got = append(got, walk(t, c, q)...)
	if want := []string{"rec-3", "rec-2", "rec-1", "rec-0", "older"}; !slices.Equal(got, want) {
		t.Fatalf("walk = %v, want %v", got, want)
	}
}

func TestListRecordingsDefaultLimit(t *testing.T) {
	t.Parallel()
	c := listFixture(t)
	for _, limit := range []int{0, -1} {
		page, err := c.ListRecordings(ctxT(t), catalog.Query{Domain: "a.example", Limit: limit})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Recordings) != 9 || page.Next != "" {
			t.Fatalf("limit %d: %d recordings, next %q; want all 9 and no next page", limit, len(page.Recordings), page.Next)
		}
	}
}

func TestListRecordingsBadCursor(t *testing.T) {
	t.Parallel()
	c := listFixture(t)
	b64 := base64.RawURLEncoding.EncodeToString
	cursors := []struct{ name, cursor string }{
		{"not base64", "!!!"},
		{"padded base64", base64.URLEncoding.EncodeToString([]byte("v1:1:xx"))},
		{"garbage", b64([]byte("garbage"))},
		{"wrong version", b64([]byte("v2:1:r1"))},
		{"score not a number", b64([]byte("v1:abc:r1"))},
		{"no id", b64([]byte("v1:1:"))},
		{"two fields", b64([]byte("v1:1"))},
	}
	for _, bc := range cursors {
		for _, q := range []catalog.Query{
			{Domain: "a.example"},
			{Domain: "a.example", User: "alice"},
			{Domain: "a.example", CallID: "call-1"},
		} {
			t.Run(fmt.Sprintf("%s/%s%s", bc.name, q.User, q.CallID), func(t *testing.T) {
				t.Parallel()
				q.Cursor = bc.cursor
				page, err := c.ListRecordings(ctxT(t), q)
				if !errors.Is(err, catalog.ErrBadCursor) {
					t.Fatalf("ListRecordings(cursor %q) = %d recordings, %v; want ErrBadCursor", bc.cursor, len(page.Recordings), err)
				}
			})
		}
	}
}

// TestListRecordingsLargeTieGroup pages through more same-time recordings
// than the index is read at once (256), so the cursor lands deep inside a
// tie group and the reader must skip past a full batch.
func TestListRecordingsLargeTieGroup(t *testing.T) {
	t.Parallel()
	c := newCatalog(t)
	const n = 300
	var want []string
	for i := n - 1; i >= 0; i-- {
		want = append(want, fmt.Sprintf("same-%03d", i))
	}
	want = append(want, "older")
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, n+1)
	for i := range n {
		wg.Go(func() {
			if _, err := c.AdmitRecording(ctx, rec("a.example", fmt.Sprintf("same-%03d", i), "alice", "call-1", base, 1)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	admit(t, c, rec("a.example", "older", "alice", "call-1", base.Add(-time.Second), 1))
	for _, limit := range []int{7, 100, 299, 300, 1000} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			t.Parallel()
			for _, q := range []catalog.Query{
				{Domain: "a.example", Limit: limit},
				{Domain: "a.example", User: "alice", Limit: limit},
				{Domain: "a.example", CallID: "call-1", Limit: limit},
			} {
				if got := walk(t, c, q); !slices.Equal(got, want) {
					t.Fatalf("walk(limit %d, user %q, call %q) = %d ids, want %d in order (first diff at %d)", limit, q.User, q.CallID, len(got), len(want), firstDiff(got, want))
				}
			}
		})
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
