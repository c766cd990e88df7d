package gateway_test

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/cdr"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
)

// fakeLedger is an in-memory cdr.Ledger with the tenancy rules of the
// real one: a domain the caller does not cover, or another tenant's
// export, is not found; a user token sees its own calls only.
type fakeLedger struct {
	owners map[string]string // domain -> reseller of record
	cdrs   []*cdrv1.Cdr
	// batch is the batch size of Export.
	batch int
	// gate, when set, holds Export after its first batch until closed.
	gate chan struct{}
	// failAfter fails Export after that many batches (-1: never).
	failAfter int

	mu      sync.Mutex
	queries []*cdrv1.Query
	exports map[string]*fakeExport
}

type fakeExport struct {
	e    *cdrv1.Export
	file []byte
}

var _ cdr.Ledger = (*fakeLedger)(nil)

func newFakeLedger() *fakeLedger {
	return &fakeLedger{
		owners:    map[string]string{"a.example": "r1", "b.example": "r2"},
		cdrs:      sampleCdrs(),
		batch:     2,
		failAfter: -1,
		exports:   map[string]*fakeExport{},
	}
}

// sampleCdrs are five calls of a.example over two days and one of
// b.example; one call id bears a quote, a comma and a semicolon.
func sampleCdrs() []*cdrv1.Cdr {
	day := time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)
	mk := func(id, domain, user, callID, from, to string, at time.Duration) *cdrv1.Cdr {
		start := day.Add(at)
		return &cdrv1.Cdr{
			Id: id, CallId: callID, Reseller: map[string]string{"a.example": "r1", "b.example": "r2"}[domain], Domain: domain, User: user,
			Direction: "outbound", From: from, To: to, StartedAt: timestamppb.New(start), AnsweredAt: timestamppb.New(start.Add(2 * time.Second)),
			EndedAt: timestamppb.New(start.Add(62 * time.Second)), DurationS: 62, BillableS: 60, Disposition: "answered",
			RecordingIds: []string{"rec-" + id}, AcceptedAt: timestamppb.New(start.Add(2*time.Minute + 250*time.Millisecond)),
		}
	}
	return []*cdrv1.Cdr{
		mk("cdr-1", "a.example", "alice", "call-1", "+15550000001", "+15550000002", 0),
		mk("cdr-2", "a.example", "bob", `c"2,x;y`, "100", "+15550000003", time.Hour),
		mk("cdr-3", "a.example", "alice", "call-3", "+15550000001", "200", 3*time.Hour),
		mk("cdr-4", "a.example", "", "call-4", "+15550000009", "300", 24*time.Hour),
		mk("cdr-5", "a.example", "bob", "call-5", "101", "+15550000001", 26*time.Hour),
		mk("cdr-b1", "b.example", "carol", "call-b1", "+15550000001", "400", time.Hour),
	}
}

// authorize narrows q as the ledger does.
func (f *fakeLedger) authorize(p auth.Principal, q *cdrv1.Query) (*cdrv1.Query, error) {
	if err := cdr.ValidateQuery(q, ""); err != nil {
		return nil, err
	}
	notFound := fmt.Errorf("domain %s: %w", q.GetDomain(), apierr.ErrNotFound)
	owner, ok := f.owners[q.GetDomain()]
	switch {
	case !ok:
		return nil, notFound
	case p.Level == auth.LevelUser:
		if !p.Covers(owner, q.GetDomain(), p.User) || (q.GetUser() != "" && q.GetUser() != p.User) {
			return nil, notFound
		}
		q = proto.CloneOf(q)
		q.User = p.User
	case !p.CoversDomain(q.GetDomain(), owner):
		return nil, notFound
	}
	return q, nil
}

func (f *fakeLedger) seenQueries() []*cdrv1.Query {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.queries)
}

func (f *fakeLedger) selected(q *cdrv1.Query) []*cdrv1.Cdr {
	from, to := q.GetFrom().AsTime(), q.GetTo().AsTime()
	var out []*cdrv1.Cdr
	for _, c := range f.cdrs {
		t := c.GetStartedAt().AsTime()
		if c.GetDomain() == q.GetDomain() && !t.Before(from) && t.Before(to) && cdr.Matches(c, q) {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b *cdrv1.Cdr) int {
		d := a.GetStartedAt().AsTime().Compare(b.GetStartedAt().AsTime())
		if q.GetNewestFirst() {
			d = -d
		}
		return cmp.Or(d, cmp.Compare(a.GetId(), b.GetId()))
	})
	return out
}

func (f *fakeLedger) Export(ctx context.Context, p auth.Principal, q *cdrv1.Query, fn func([]*cdrv1.Cdr) error) error {
	f.mu.Lock()
	f.queries = append(f.queries, proto.CloneOf(q))
	f.mu.Unlock()
	q, err := f.authorize(p, q)
	if err != nil {
		return err
	}
	sent := 0
	for batch := range slices.Chunk(f.selected(q), f.batch) {
		if sent == f.failAfter {
			return fmt.Errorf("%w: segment a.example/2026-11-01/7 unreadable", apierr.ErrUnavailable)
		}
		if sent == 1 && f.gate != nil {
			select {
			case <-f.gate:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := fn(batch); err != nil {
			return err
		}
		sent++
	}
	if sent == f.failAfter {
		return fmt.Errorf("%w: segment a.example/2026-11-01/7 unreadable", apierr.ErrUnavailable)
	}
	return nil
}

func (f *fakeLedger) CreateExport(_ context.Context, p auth.Principal, q *cdrv1.Query, format cdrv1.ExportFormat) (*cdrv1.Export, error) {
	q, err := f.authorize(p, q)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	e := &cdrv1.Export{
		Id: fmt.Sprintf("exp-%d", len(f.exports)+1), Query: q, Format: format, State: cdrv1.ExportState_EXPORT_STATE_QUEUED,
		PartitionsTotal: 2, CreatedAt: timestamppb.New(time.Date(2026, 11, 5, 8, 0, 0, 0, time.UTC)), CreatedBy: p.Name, Attempts: 1,
	}
	f.exports[e.GetId()] = &fakeExport{e: e}
	return proto.CloneOf(e), nil
}

func (f *fakeLedger) GetExport(_ context.Context, p auth.Principal, id string) (*cdrv1.Export, error) {
	f.mu.Lock()
	x, ok := f.exports[id]
	f.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("export %s: %w", id, apierr.ErrNotFound)
	}
	if q, err := f.authorize(p, x.e.GetQuery()); err != nil || q.GetUser() != x.e.GetQuery().GetUser() {
		return nil, fmt.Errorf("export %s: %w", id, apierr.ErrNotFound)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return proto.CloneOf(x.e), nil
}

func (f *fakeLedger) OpenExport(ctx context.Context, p auth.Principal, id string) (io.ReadCloser, *cdrv1.Export, error) {
	e, err := f.GetExport(ctx, p, id)
	if err != nil {
		return nil, nil, err
	}
	if e.GetState() != cdrv1.ExportState_EXPORT_STATE_DONE {
		return nil, e, fmt.Errorf("export %s is not done: %w", id, apierr.ErrConflict)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return io.NopCloser(bytes.NewReader(f.exports[id].file)), e, nil
}

// finish runs an export: its file is written with the export encoders.
func (f *fakeLedger) finish(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	x := f.exports[id]
	var buf bytes.Buffer
	enc, err := cdr.NewEncoder(&buf, x.e.GetFormat())
	if err != nil {
		return err
	}
	rows := f.selected(x.e.GetQuery())
	for _, c := range rows {
		if err := enc.Encode(c); err != nil {
			return err
		}
	}
	if err := enc.Close(); err != nil {
		return err
	}
	x.file = buf.Bytes()
	x.e.State, x.e.Rows, x.e.SizeBytes = cdrv1.ExportState_EXPORT_STATE_DONE, int64(len(rows)), int64(buf.Len())
	x.e.PartitionsDone, x.e.FinishedAt = x.e.GetPartitionsTotal(), timestamppb.New(time.Date(2026, 11, 5, 8, 1, 0, 0, time.UTC))
	return nil
}
