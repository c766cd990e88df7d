package ledger

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/testenv"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
)

// A worker killed mid-export leaves its lease, a running record with
// partial progress and half a file. Once the lease lapses another worker
// runs the export again from the start: done, every row once, the file
// whole, attempts 2.
func TestBreak11ExportWorkerKilledMidExport(t *testing.T) {
	r := newRig(t, testSettings())
	ctx := context.Background()
	cdrs := genCDRs("a.example", 3000, 3, 11)
	r.publish(cdrs)
	w := New(r.d.JS, r.d.Names, r.d.Redis, r.d.CDS, testDomains, Settings{SegmentCDRs: 1000, FlushAge: 100 * time.Millisecond, BlockCDRs: 256, AckWait: 2 * time.Second, CompactEvery: time.Hour}, testenv.Logger(), nil)
	r.run(w)
	q := query("a.example", base, base.AddDate(0, 0, 3))
	testenv.WaitFor(t, "the CDRs indexed", func() bool {
		got, err := r.export(system, q)
		return err == nil && len(got) == len(cdrs)
	})
	admin := auth.Principal{Name: "adm", Level: auth.LevelDomain, Reseller: "r1", Domain: "a.example"}
	e, err := w.CreateExport(ctx, admin, q, cdrv1.ExportFormat_EXPORT_FORMAT_NDJSON)
	if err != nil {
		t.Fatal(err)
	}
	// The dead worker: holds the lease a little longer, left the record
	// running and a half-written file behind.
	if err := r.d.Redis.Set(ctx, r.l.k.exportLease(e.GetId()), "dead-worker", 2*time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	e.State, e.Attempts, e.Rows, e.PartitionsDone, e.PartitionsTotal = cdrv1.ExportState_EXPORT_STATE_RUNNING, 1, 1234, 1, 3
	if err := w.saveExport(ctx, e); err != nil {
		t.Fatal(err)
	}
	if _, err := r.d.CDS.Put(ctx, ExportKey("a.example", e.GetId(), e.GetFormat()), strings.NewReader(`{"id":"half`), "application/x-ndjson"); err != nil {
		t.Fatal(err)
	}
	// A reader while it is dead sees it running, not done.
	if got, err := w.GetExport(ctx, admin, e.GetId()); err != nil || got.GetState() != cdrv1.ExportState_EXPORT_STATE_RUNNING {
		t.Fatalf("while the worker is dead: %v %v", got, err)
	}
	// Now a live worker pool.
	live := New(r.d.JS, r.d.Names, r.d.Redis, r.d.CDS, testDomains, testSettings(), testenv.Logger(), nil)
	r.run(live)
	var got *cdrv1.Export
	testenv.WaitFor(t, "the export restarted and done", func() bool {
		got, err = w.GetExport(ctx, admin, e.GetId())
		return err == nil && (got.GetState() == cdrv1.ExportState_EXPORT_STATE_DONE || got.GetState() == cdrv1.ExportState_EXPORT_STATE_FAILED)
	})
	if got.GetState() != cdrv1.ExportState_EXPORT_STATE_DONE || got.GetAttempts() != 2 || got.GetRows() != int64(len(cdrs)) || got.GetPartitionsDone() != got.GetPartitionsTotal() {
		t.Fatalf("after the restart: %v", got)
	}
	rc, _, err := w.OpenExport(ctx, admin, e.GetId())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	if n := bytes.Count(b, []byte{'\n'}); n != len(cdrs) || int64(len(b)) != got.GetSizeBytes() || bytes.Contains(b, []byte(`"half`)) {
		t.Fatalf("file after the restart: %d lines, %d bytes (record says %d)", n, len(b), got.GetSizeBytes())
	}
}
