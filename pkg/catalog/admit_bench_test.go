package catalog_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/testenv"
)

// admitN is how many recordings each admission benchmark decides, spread
// as the memory workload is (100 domains, 5,000 users), under the monthly
// recording cap.
const admitN = 100_000

// BenchmarkAdmit decides admitN recordings one at a time (Decide, as the
// consumer does today) and in batches of 512 (DecideMany), and writes the
// same number of records with pipelined SETs of the same size on the same
// Redis, in batches of 512: the raw rate the ratios are against.
func BenchmarkAdmit(b *testing.B) {
	ctx := context.Background()
	recs := make([]catalog.Recording, admitN)
	for i := range recs {
		recs[i] = benchRecording(i)
	}
	rate := func(n int, d time.Duration) float64 { return float64(n) / d.Seconds() }
	for b.Loop() {
		// Pipelined SETs: one key per record, the value a packed record.
		ns := testenv.Namespace(b)
		rdb := testenv.Redis(b, ns)
		deployedListpack(b, rdb)
		value := catalog.Stored{State: catalog.StateAdmitted, ID: recs[0].ID, Kind: catalog.KindRecording, Mode: "automatic", At: recs[0].StartedAt,
			Size: recs[0].Size, User: recs[0].User, CallID: recs[0].CallID, SHA256: recs[0].SHA256, ObjectKey: recs[0].ObjectKey}.Pack(recs[0].Domain)
		start := time.Now()
		for i := 0; i < admitN; i += 512 {
			pipe := rdb.Pipeline()
			for j := i; j < min(i+512, admitN); j++ {
				pipe.Set(ctx, ns+":set:"+strconv.Itoa(j), value, 0)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatal(err)
			}
		}
		setRate := rate(admitN, time.Since(start))

		decideAll := func(batch int) float64 {
			ns := testenv.Namespace(b)
			c := catalog.New(testenv.Redis(b, ns), ns)
			for d := 0; d < memDomains; d++ {
				if _, err := c.ApplyDomain(ctx, catalog.Domain{Domain: fmt.Sprintf("tenant%03d.example", d), Reseller: "r", ProvisionedAt: memStart}, uint64(d+1)); err != nil {
					b.Fatal(err)
				}
			}
			check := catalog.CapCheck{Mode: catalog.MonthlyLimit, Limit: 1 << 40}
			start := time.Now()
			if batch == 1 {
				for _, r := range recs {
					if d, err := c.Decide(ctx, c.RecordingArtifact(r), check); err != nil || !d.Admitted() {
						b.Fatalf("decide %s: %+v %v", r.ID, d, err)
					}
				}
				return rate(admitN, time.Since(start))
			}
			for i := 0; i < admitN; i += batch {
				pend := make([]catalog.Pending, 0, batch)
				for _, r := range recs[i:min(i+batch, admitN)] {
					pend = append(pend, catalog.Pending{Artifact: c.RecordingArtifact(r), Cap: check})
				}
				ds, errs := c.DecideMany(ctx, pend)
				for j, err := range errs {
					if err != nil || !ds[j].Admitted() {
						b.Fatalf("decide many: %+v %v", ds[j], err)
					}
				}
			}
			return rate(admitN, time.Since(start))
		}
		single, batched := decideAll(1), decideAll(512)
		b.ReportMetric(setRate, "set/s")
		b.ReportMetric(single, "single/s")
		b.ReportMetric(batched, "batched/s")
		b.ReportMetric(single/setRate, "single/set")
		b.ReportMetric(batched/setRate, "batched/set")
	}
}
