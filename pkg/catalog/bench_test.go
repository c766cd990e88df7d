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

// benchRecording looks like production: a UUID-sized id, a SIP call id,
// 200 domains, 50 users each.
func benchRecording(i int) catalog.Recording {
	d := fmt.Sprintf("tenant%03d.example", i%200)
	return catalog.Recording{
		ID: fmt.Sprintf("0193f2c4-7b1a-7c3e-9a4b-%012d", i), CallID: fmt.Sprintf("%08x-4f2a-11ef@pbx-%02d.example", i, i%16),
		Reseller: "reseller-" + strconv.Itoa(i%7), Domain: d, User: strconv.Itoa(100 + i%50), Mode: "automatic",
		StartedAt: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second), DurationS: 185,
		ContentType: "audio/wav", Size: 3_100_000, SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		ObjectKey:  fmt.Sprintf("recordings/%s/2026/11/01/0193f2c4-7b1a-7c3e-9a4b-%012d-a1b2c3d4e5f6", d, i),
		AcceptedAt: time.Date(2026, 11, 1, 0, 3, 5, 0, time.UTC), StreamSeq: uint64(i + 1),
	}
}

// BenchmarkAdmitRecording admits one recording per call, as the consumer
// does for automatic recordings: the capped script with the monthly
// counter, plus one registry pipeline.
func BenchmarkAdmitRecording(b *testing.B) {
	ns := testenv.Namespace(b)
	c := catalog.New(testenv.Redis(b, ns), ns)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := benchRecording(i)
		check := catalog.CapCheck{Mode: catalog.MonthlyLimit, Limit: 1 << 40}
		if _, err := c.Decide(ctx, c.RecordingArtifact(r), check); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "admissions/s")
}

// BenchmarkAdmitRecordingsPipelined admits in batches of 500.
func BenchmarkAdmitRecordingsPipelined(b *testing.B) {
	ns := testenv.Namespace(b)
	c := catalog.New(testenv.Redis(b, ns), ns)
	ctx := context.Background()
	const batch = 500
	recs := make([]catalog.Recording, 0, batch)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		recs = append(recs, benchRecording(i))
		if len(recs) == batch || i == b.N-1 {
			if _, err := c.AdmitRecordings(ctx, recs); err != nil {
				b.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "admissions/s")
}

// BenchmarkMemoryPerRecording catalogues 100,000 recordings per run and
// reports the Redis memory they take: MEMORY USAGE summed over every key
// they created, and the growth of the server's used_memory. Run it with
// -benchtime=1x (make bench does).
func BenchmarkMemoryPerRecording(b *testing.B) {
	for b.Loop() {
		measureMemory(b)
	}
}

func measureMemory(t *testing.B) {
	ns := testenv.Namespace(t)
	rdb := testenv.Redis(t, ns)
	c := catalog.New(rdb, ns)
	ctx := context.Background()
	const n = 100_000
	before, err := rdb.InfoMap(ctx, "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i += 1000 {
		recs := make([]catalog.Recording, 0, 1000)
		for j := i; j < i+1000; j++ {
			recs = append(recs, benchRecording(j))
		}
		if _, err := c.AdmitRecordings(ctx, recs); err != nil {
			t.Fatal(err)
		}
	}
	after, err := rdb.InfoMap(ctx, "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	var total, keys int64
	iter := rdb.Scan(ctx, 0, ns+":*", 5000).Iterator()
	for iter.Next(ctx) {
		m, err := rdb.MemoryUsage(ctx, iter.Val()).Result()
		if err != nil {
			t.Fatal(err)
		}
		total += m
		keys++
	}
	used := func(m map[string]map[string]string) int64 {
		v, _ := strconv.ParseInt(m["Memory"]["used_memory"], 10, 64)
		return v
	}
	delta := used(after) - used(before)
	if total == 0 || keys < n {
		t.Fatalf("measured %d bytes over %d keys: the recordings were not catalogued", total, keys)
	}
	t.ReportMetric(float64(total)/n, "memory-usage-B/recording")
	t.ReportMetric(float64(delta)/n, "used-memory-B/recording")
	t.ReportMetric(float64(keys), "keys")
}
