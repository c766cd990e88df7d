package ledger

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/testenv"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
)

// failingExports refuses the first n writes of export files.
type failingExports struct {
	cds.Store
	n atomic.Int32
}

func (f *failingExports) Put(ctx context.Context, key string, r io.Reader, ct string) (int64, error) {
	if strings.HasPrefix(key, "exports/") && f.n.Add(-1) >= 0 {
		_, _ = io.Copy(io.Discard, r)
		return 0, errors.New("cds s3 put " + key + ": bucket secret-bucket-name unreachable")
	}
	return f.Store.Put(ctx, key, r, ct)
}

func TestExportRetriesAStoreFaultAndConcealsIt(t *testing.T) {
	r := newRig(t, testSettings())
	r.run(r.l)
	in := genCDRs("a.example", 700, 1, 11)
	r.publish(in)
	r.drained()
	store := &failingExports{Store: r.store}
	l := New(r.d.JS, r.d.Names, r.d.Redis, store, testDomains, testSettings(), testenv.Logger(), nil)
	ctx := context.Background()
	run := func(id string) *cdrv1.Export {
		t.Helper()
		e, err := l.RunExportNow(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(e.GetError(), "secret-bucket-name") {
			t.Fatalf("the export's error shows the store's detail: %q", e.GetError())
		}
		return e
	}

	store.n.Store(1)
	e, err := l.CreateExport(ctx, system, query("a.example", base, base.AddDate(0, 0, 1)), cdrv1.ExportFormat_EXPORT_FORMAT_NDJSON)
	if err != nil {
		t.Fatal(err)
	}
	if got := run(e.GetId()); got.GetState() != cdrv1.ExportState_EXPORT_STATE_QUEUED || got.GetAttempts() != 1 {
		t.Fatalf("after one failed attempt: %v attempt %d, want queued again", got.GetState(), got.GetAttempts())
	}
	got := run(e.GetId())
	if got.GetState() != cdrv1.ExportState_EXPORT_STATE_DONE || got.GetAttempts() != 2 || got.GetRows() != int64(len(in)) {
		t.Fatalf("second attempt: %v, %d attempts, %d rows; want done with %d", got.GetState(), got.GetAttempts(), got.GetRows(), len(in))
	}
	if n, _ := r.d.Redis.ZCard(ctx, l.k.exportPending()).Result(); n != 0 {
		t.Errorf("%d exports still queued after it finished", n)
	}

	store.n.Store(100)
	e, err = l.CreateExport(ctx, system, query("a.example", base, base.AddDate(0, 0, 1)), cdrv1.ExportFormat_EXPORT_FORMAT_CSV)
	if err != nil {
		t.Fatal(err)
	}
	for range maxExportAttempts {
		got = run(e.GetId())
	}
	if got.GetState() != cdrv1.ExportState_EXPORT_STATE_FAILED || got.GetAttempts() != maxExportAttempts || got.GetError() == "" {
		t.Fatalf("after %d failures: %v, %d attempts, %q; want failed", maxExportAttempts, got.GetState(), got.GetAttempts(), got.GetError())
	}
	if _, _, err := l.OpenExport(ctx, system, e.GetId()); err == nil {
		t.Error("a failed export opened")
	}
}
