package ledger

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/cdr"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
)

// Background exports. Each is a record in its domain's keys (protobuf),
// found by id through ns:{_cdrx}:owner, and queued in ns:{_cdrx}:pending
// until it is done or failed. A worker takes one under a lease it renews;
// a worker that dies lets its lease lapse and another starts the export
// again from the beginning (attempts counts the starts), overwriting the
// half-written file.
const (
	exportLease      = 30 * time.Second
	exportPoll       = 500 * time.Millisecond
	progressEveryRow = 20000
)

// ExportKey is where a finished export's file lives in the CDS.
func ExportKey(domain, id string, f cdrv1.ExportFormat) string {
	return "exports/" + domain + "/" + id + "." + cdr.Extension(f)
}

// CreateExport queues a background export (see cdr.Ledger).
func (l *Ledger) CreateExport(ctx context.Context, p auth.Principal, q *cdrv1.Query, f cdrv1.ExportFormat) (*cdrv1.Export, error) {
	if f == cdrv1.ExportFormat_EXPORT_FORMAT_UNSPECIFIED {
		f = cdrv1.ExportFormat_EXPORT_FORMAT_CSV
	}
	if _, ok := cdrv1.ExportFormat_name[int32(f)]; !ok {
		return nil, apierr.Invalid("format", "must be csv, ndjson or json")
	}
	q, err := l.authorize(ctx, p, q)
	if err != nil {
		return nil, err
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	now := l.now()
	e := &cdrv1.Export{
		Id: "x" + hex.EncodeToString(b[:]), Query: q, Format: f, State: cdrv1.ExportState_EXPORT_STATE_QUEUED,
		CreatedAt: timestamppb.New(now), CreatedBy: p.Name,
	}
	if err := l.saveExport(ctx, e); err != nil {
		return nil, err
	}
	pipe := l.rdb.Pipeline()
	pipe.ZAdd(ctx, l.k.exportList(q.GetDomain()), redis.Z{Score: float64(now.UnixMilli()), Member: e.GetId()})
	pipe.HSet(ctx, l.k.exportOwner(), e.GetId(), q.GetDomain())
	pipe.ZAdd(ctx, l.k.exportPending(), redis.Z{Score: float64(now.UnixMilli()), Member: e.GetId()})
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("queue export: %w: %v", apierr.ErrUnavailable, err)
	}
	return e, nil
}

func (l *Ledger) saveExport(ctx context.Context, e *cdrv1.Export) error {
	b, err := proto.Marshal(e)
	if err != nil {
		return err
	}
	if err := l.rdb.Set(ctx, l.k.export(e.GetQuery().GetDomain(), e.GetId()), b, 0).Err(); err != nil {
		return fmt.Errorf("save export %s: %w: %v", e.GetId(), apierr.ErrUnavailable, err)
	}
	return nil
}

func (l *Ledger) loadExport(ctx context.Context, id string) (*cdrv1.Export, error) {
	if len(id) < 2 || len(id) > 64 {
		return nil, fmt.Errorf("export %q: %w", id, apierr.ErrNotFound)
	}
	domain, err := l.rdb.HGet(ctx, l.k.exportOwner(), id).Result()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("export %s: %w", id, apierr.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("export %s: %w: %v", id, apierr.ErrUnavailable, err)
	}
	b, err := l.rdb.Get(ctx, l.k.export(domain, id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("export %s: %w", id, apierr.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("export %s: %w: %v", id, apierr.ErrUnavailable, err)
	}
	e := &cdrv1.Export{}
	if err := proto.Unmarshal(b, e); err != nil {
		return nil, fmt.Errorf("export %s: %w", id, err)
	}
	return e, nil
}

// GetExport answers an export's state; another tenant's is not found.
func (l *Ledger) GetExport(ctx context.Context, p auth.Principal, id string) (*cdrv1.Export, error) {
	e, err := l.loadExport(ctx, id)
	if err != nil {
		return nil, err
	}
	q, err := l.authorize(ctx, p, e.GetQuery())
	if err != nil || q.GetUser() != e.GetQuery().GetUser() {
		return nil, fmt.Errorf("export %s: %w", id, apierr.ErrNotFound)
	}
	return e, nil
}

// OpenExport opens a finished export's file.
func (l *Ledger) OpenExport(ctx context.Context, p auth.Principal, id string) (io.ReadCloser, *cdrv1.Export, error) {
	e, err := l.GetExport(ctx, p, id)
	if err != nil {
		return nil, nil, err
	}
	if e.GetState() != cdrv1.ExportState_EXPORT_STATE_DONE {
		return nil, e, fmt.Errorf("export %s is %s, not done: %w", id, cdr.StateName(e.GetState()), apierr.ErrConflict)
	}
	rc, err := l.store.Open(ctx, ExportKey(e.GetQuery().GetDomain(), id, e.GetFormat()), 0, -1)
	if err != nil {
		return nil, e, fmt.Errorf("export %s: %w: %v", id, apierr.ErrUnavailable, err)
	}
	return rc, e, nil
}

// renewScript extends a lease only for its holder. KEYS: lease. ARGV:
// holder, ms.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`)

// releaseScript drops a lease only for its holder.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

func (l *Ledger) runExports(ctx context.Context) error {
	var b [8]byte
	_, _ = rand.Read(b[:])
	holder := hex.EncodeToString(b[:])
	t := time.NewTicker(exportPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		ids, err := l.rdb.ZRange(ctx, l.k.exportPending(), 0, 15).Result()
		if err != nil {
			continue
		}
		for _, id := range ids {
			got, err := l.rdb.SetNX(ctx, l.k.exportLease(id), holder, exportLease).Result()
			if err != nil || !got {
				continue
			}
			l.runExport(ctx, id, holder)
			releaseScript.Run(context.WithoutCancel(ctx), l.rdb, []string{l.k.exportLease(id)}, holder)
			if ctx.Err() != nil {
				return nil
			}
		}
	}
}

// RunExportNow runs a queued export in the caller's goroutine (for the
// CLI and tests); it answers the export's final state.
func (l *Ledger) RunExportNow(ctx context.Context, id string) (*cdrv1.Export, error) {
	holder := "now-" + id
	got, err := l.rdb.SetNX(ctx, l.k.exportLease(id), holder, exportLease).Result()
	if err != nil {
		return nil, err
	}
	if !got {
		return nil, fmt.Errorf("export %s is being run by a worker: %w", id, apierr.ErrConflict)
	}
	defer releaseScript.Run(context.WithoutCancel(ctx), l.rdb, []string{l.k.exportLease(id)}, holder)
	l.runExport(ctx, id, holder)
	return l.loadExport(ctx, id)
}

func (l *Ledger) runExport(ctx context.Context, id, holder string) {
	e, err := l.loadExport(ctx, id)
	if errors.Is(err, apierr.ErrNotFound) {
		l.rdb.ZRem(ctx, l.k.exportPending(), id)
		return
	}
	if err != nil {
		return
	}
	if s := e.GetState(); s == cdrv1.ExportState_EXPORT_STATE_DONE || s == cdrv1.ExportState_EXPORT_STATE_FAILED {
		l.rdb.ZRem(ctx, l.k.exportPending(), id)
		return
	}
	jctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The lease is renewed while the export runs; losing it stops the
	// export, as another worker may have started it again.
	go func() {
		t := time.NewTicker(exportLease / 3)
		defer t.Stop()
		for {
			select {
			case <-jctx.Done():
				return
			case <-t.C:
				n, err := renewScript.Run(jctx, l.rdb, []string{l.k.exportLease(id)}, holder, exportLease.Milliseconds()).Int()
				if err == nil && n == 0 {
					cancel(errors.New("export lease lost"))
					return
				}
			}
		}
	}()
	e.State, e.Attempts, e.Error = cdrv1.ExportState_EXPORT_STATE_RUNNING, e.GetAttempts()+1, ""
	e.Rows, e.PartitionsDone, e.SizeBytes = 0, 0, 0
	q := e.GetQuery()
	days, err := l.idx.daysBetween(jctx, q.GetDomain(), cdr.DayNumber(q.GetFrom().AsTime()), cdr.DayNumber(q.GetTo().AsTime().Add(-1))+1)
	if err != nil {
		return
	}
	e.PartitionsTotal = uint32(len(days))
	if err := l.saveExport(jctx, e); err != nil {
		return
	}
	size, rows, err := l.writeExport(jctx, e)
	if context.Cause(jctx) != nil && ctx.Err() == nil && !errors.Is(err, errFormat) {
		// The lease went: whoever holds it now runs the export.
		l.log.Warn("CDR export stopped", "export", id, "why", context.Cause(jctx))
		return
	}
	if ctx.Err() != nil {
		return // shutting down: the export runs again elsewhere
	}
	fin := context.WithoutCancel(ctx)
	// Only the lease holder records the outcome: a worker that paused past
	// its lease leaves the export to the one that took it over.
	if held, err := renewScript.Run(fin, l.rdb, []string{l.k.exportLease(id)}, holder, exportLease.Milliseconds()).Int(); err != nil || held == 0 {
		l.log.Warn("CDR export finished without its lease; the outcome is left to the holder", "export", id)
		return
	}
	e.Rows = rows
	switch {
	case err == nil:
		e.State, e.SizeBytes, e.PartitionsDone = cdrv1.ExportState_EXPORT_STATE_DONE, size, e.GetPartitionsTotal()
		e.FinishedAt = timestamppb.New(l.now())
	case !errors.Is(err, errFormat) && e.GetAttempts() < maxExportAttempts:
		// A store or Redis fault: queued again, tried by the next poll.
		l.log.Warn("CDR export attempt failed, will retry", "export", id, "attempt", e.GetAttempts(), "err", err)
		e.State, e.Error = cdrv1.ExportState_EXPORT_STATE_QUEUED, fmt.Sprintf("attempt %d failed; it is tried again", e.GetAttempts())
		_ = l.saveExport(fin, e)
		return
	default:
		// The tenant sees why in general terms; the detail (hosts,
		// buckets) goes to the log only.
		l.log.Warn("CDR export failed", "export", id, "err", err)
		e.State, e.Error = cdrv1.ExportState_EXPORT_STATE_FAILED, fmt.Sprintf("the export could not be written after %d attempts", e.GetAttempts())
		if errors.Is(err, errFormat) {
			e.Error = "the export format is not supported"
		}
		e.FinishedAt = timestamppb.New(l.now())
	}
	if err := l.saveExport(fin, e); err != nil {
		return
	}
	l.rdb.ZRem(fin, l.k.exportPending(), id)
}

// maxExportAttempts bounds how often a failing export is started.
const maxExportAttempts = 3

var errFormat = errors.New("export format")

// writeExport streams the export's rows through its encoder into the CDS.
func (l *Ledger) writeExport(ctx context.Context, e *cdrv1.Export) (size, rows int64, err error) {
	pr, pw := io.Pipe()
	type put struct {
		n   int64
		err error
	}
	done := make(chan put, 1)
	key := ExportKey(e.GetQuery().GetDomain(), e.GetId(), e.GetFormat())
	go func() {
		n, err := l.store.Put(ctx, key, pr, cdr.ContentType(e.GetFormat()))
		_ = pr.CloseWithError(err)
		done <- put{n, err}
	}()
	enc, err := cdr.NewEncoder(pw, e.GetFormat())
	if err != nil {
		_ = pw.CloseWithError(err)
		<-done
		return 0, 0, fmt.Errorf("%w: %v", errFormat, err)
	}
	var sent int64
	lastSaved := int64(0)
	rows, err = l.scan(ctx, e.GetQuery(), func(n int) {
		e.PartitionsDone = uint32(n)
		e.Rows = sent
		_ = l.saveExport(ctx, e)
		lastSaved = sent
	}, func(cs []*cdrv1.Cdr) error {
		for _, c := range cs {
			if err := enc.Encode(c); err != nil {
				return err
			}
		}
		sent += int64(len(cs))
		if sent-lastSaved >= progressEveryRow {
			e.Rows = sent
			_ = l.saveExport(ctx, e)
			lastSaved = sent
		}
		return nil
	})
	if err == nil {
		err = enc.Close()
	}
	if err != nil {
		_ = pw.CloseWithError(err)
		<-done
		return 0, rows, err
	}
	_ = pw.Close()
	res := <-done
	if res.err != nil {
		return 0, rows, fmt.Errorf("store export file: %w", res.err)
	}
	return res.n, rows, nil
}
