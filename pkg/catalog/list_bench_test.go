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

// The listing workload: one domain holding 1,000,000 recordings over two
// years (about 57 an hour) of 500 users.
const (
	listN     = 1_000_000
	listUsers = 500
	listSpan  = 730 * 24 * time.Hour
)

var listStart = time.Date(2024, 12, 1, 0, 0, 0, 0, time.UTC)

func listRecording(i int) catalog.Recording {
	at := listStart.Add(time.Duration(i) * (listSpan / listN))
	id := benchID(i)
	return catalog.Recording{
		ID: id, CallID: fmt.Sprintf("%08x-4f2a-11ef@pbx-%02d.example", i, i%16), Reseller: "r1", Domain: "big.example",
		User: strconv.Itoa(1000 + i%listUsers), Mode: "automatic", StartedAt: at, DurationS: 185, ContentType: "audio/wav", Size: 3_100_000,
		SHA256:     "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		ObjectKey:  fmt.Sprintf("recordings/big.example/%s/%s-a1b2c3d4e5f6", at.Format("2006/01/02"), id),
		AcceptedAt: at.Add(3 * time.Minute), StreamSeq: uint64(i + 1),
	}
}

// BenchmarkList pages 50 recordings at a time through a domain of
// 1,000,000: at the newest end and 900,000 deep, by domain and by user,
// and a call's recordings, and reports the p50 and p99 of each (ms).
func BenchmarkList(b *testing.B) {
	ns := testenv.Namespace(b)
	rdb := testenv.Redis(b, ns)
	deployedListpack(b, rdb)
	c := catalog.New(rdb, ns)
	ctx := context.Background()
	if _, err := c.ApplyDomain(ctx, catalog.Domain{Domain: "big.example", Reseller: "r1", ProvisionedAt: listStart}, 1); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < listN; i += 2000 {
		recs := make([]catalog.Recording, 0, 2000)
		for j := i; j < i+2000; j++ {
			recs = append(recs, listRecording(j))
		}
		if _, err := c.AdmitRecordings(ctx, recs); err != nil {
			b.Fatal(err)
		}
	}
	deep := listRecording(listN - 1 - 900_000) // the 900,001st newest
	cases := []struct {
		name string
		q    catalog.Query
		want int
	}{
		{"domain-top", catalog.Query{Domain: "big.example", Limit: 50}, 50},
		{"domain-deep", catalog.Query{Domain: "big.example", Limit: 50, Cursor: catalog.CursorAt(deep.StartedAt, deep.ID)}, 50},
		{"user-top", catalog.Query{Domain: "big.example", User: listRecording(listN - 1).User, Limit: 50}, 50},
		{"user-deep", catalog.Query{Domain: "big.example", User: deep.User, Limit: 50, Cursor: catalog.CursorAt(deep.StartedAt, deep.ID)}, 50},
		{"call", catalog.Query{Domain: "big.example", CallID: deep.CallID, Limit: 50}, 1},
	}
	b.ResetTimer()
	for _, tc := range cases {
		times := make([]time.Duration, 0, 300)
		for range 300 {
			start := time.Now()
			page, err := c.ListRecordings(ctx, tc.q)
			times = append(times, time.Since(start))
			if err != nil {
				b.Fatal(err)
			}
			if len(page.Recordings) != tc.want {
				b.Fatalf("%s: %d recordings, want %d", tc.name, len(page.Recordings), tc.want)
			}
		}
		b.ReportMetric(float64(percentile(times, 50).Microseconds())/1000, tc.name+"-p50-ms")
		b.ReportMetric(float64(percentile(times, 99).Microseconds())/1000, tc.name+"-p99-ms")
	}
}
