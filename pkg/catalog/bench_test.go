package catalog_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/testenv"
)

// The memory workload: 1,000,000 artifacts over 100 domains of 50 users
// each (5,000 users), each domain's spread evenly over 30 days (about 14
// an hour), with production-sized values: a UUID id, a SIP call id, a
// SHA-256, ingest's object key.
const (
	memArtifacts = 1_000_000
	memDomains   = 100
	memUsers     = 50
	memSpan      = 30 * 24 * time.Hour
)

var memStart = time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)

func benchID(i int) string { return fmt.Sprintf("0193f2c4-7b1a-7c3e-9a4b-%012d", i) }

// benchRecording is recording i of the workload.
func benchRecording(i int) catalog.Recording {
	d := fmt.Sprintf("tenant%03d.example", i%memDomains)
	k := i / memDomains
	at := memStart.Add(time.Duration(k) * memSpan / (memArtifacts / memDomains))
	return catalog.Recording{
		ID: benchID(i), CallID: fmt.Sprintf("%08x-4f2a-11ef@pbx-%02d.example", i, i%16),
		Reseller: "reseller-" + strconv.Itoa(i%7), Domain: d, User: strconv.Itoa(100 + k%memUsers), Mode: "automatic",
		StartedAt: at, DurationS: 185, ContentType: "audio/wav", Size: 3_100_000,
		SHA256:     "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		ObjectKey:  fmt.Sprintf("recordings/%s/%s/%s-a1b2c3d4e5f6", d, at.Format("2006/01/02"), benchID(i)),
		AcceptedAt: at.Add(3 * time.Minute), StreamSeq: uint64(i + 1),
	}
}

// benchMessage is voicemail (or SMS) i of the workload.
func benchMessage(i int, kind string) catalog.Message {
	d := fmt.Sprintf("tenant%03d.example", i%memDomains)
	k := i / memDomains
	at := memStart.Add(time.Duration(k) * memSpan / (memArtifacts / memDomains))
	m := catalog.Message{
		ID: benchID(i), Reseller: "reseller-" + strconv.Itoa(i%7), Domain: d, User: strconv.Itoa(100 + k%memUsers), Kind: kind,
		ReceivedAt: at, From: "+15550100", To: "+15550199", Size: 48_000, SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		ObjectKey: fmt.Sprintf("messages/%s/%s", d, benchID(i)), ContentType: "audio/wav", AcceptedAt: at.Add(time.Minute), StreamSeq: uint64(i + 1),
	}
	if kind == "sms" {
		m.Folder, m.ContentType, m.Size = "inbox", "text/plain", 160
	}
	return m
}

// deployedListpack sets the listpack limits deployments use
// (deploy/redis/redis.conf) on the test server, so the figures are the
// deployed ones whatever the server was started with.
func deployedListpack(b *testing.B, rdb redis.UniversalClient) {
	ctx := context.Background()
	for k, v := range map[string]string{"hash-max-listpack-entries": "512", "hash-max-listpack-value": "256", "zset-max-listpack-entries": "1024"} {
		if err := rdb.ConfigSet(ctx, k, v).Err(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMemoryPerRecording catalogues 1,000,000 recordings and reports
// the Redis memory they take: MEMORY USAGE summed over every key they
// created, and the growth of the server's used_memory. Run it with
// -benchtime=1x (make bench does).
func BenchmarkMemoryPerRecording(b *testing.B) {
	for b.Loop() {
		measureMemory(b, "recording", func(c *catalog.Catalog, ctx context.Context, from, to int) error {
			recs := make([]catalog.Recording, 0, to-from)
			for i := from; i < to; i++ {
				recs = append(recs, benchRecording(i))
			}
			_, err := c.AdmitRecordings(ctx, recs)
			return err
		})
	}
}

// BenchmarkMemoryPerVoicemail is the same for 1,000,000 voicemails (200
// in each user's box).
func BenchmarkMemoryPerVoicemail(b *testing.B) {
	for b.Loop() {
		measureMemory(b, "voicemail", admitMessages("voicemail"))
	}
}

// BenchmarkMemoryPerSMS is the same for 1,000,000 SMS (200 in each
// user's inbox).
func BenchmarkMemoryPerSMS(b *testing.B) {
	for b.Loop() {
		measureMemory(b, "sms", admitMessages("sms"))
	}
}

func admitMessages(kind string) func(c *catalog.Catalog, ctx context.Context, from, to int) error {
	return func(c *catalog.Catalog, ctx context.Context, from, to int) error {
		batch := make([]catalog.Admission, 0, to-from)
		for i := from; i < to; i++ {
			batch = append(batch, catalog.Admission{Artifact: c.MessageArtifact(benchMessage(i, kind))})
		}
		return c.ApplyAdmissions(ctx, batch)
	}
}

func measureMemory(b *testing.B, what string, fill func(c *catalog.Catalog, ctx context.Context, from, to int) error) {
	ns := testenv.Namespace(b)
	rdb := testenv.Redis(b, ns)
	deployedListpack(b, rdb)
	c := catalog.New(rdb, ns)
	ctx := context.Background()
	for d := 0; d < memDomains; d++ {
		if _, err := c.ApplyDomain(ctx, catalog.Domain{Domain: fmt.Sprintf("tenant%03d.example", d), Reseller: "reseller-" + strconv.Itoa(d%7), ProvisionedAt: memStart}, uint64(d+1)); err != nil {
			b.Fatal(err)
		}
	}
	used := func() int64 {
		m, err := rdb.InfoMap(ctx, "memory").Result()
		if err != nil {
			b.Fatal(err)
		}
		v, _ := strconv.ParseInt(m["Memory"]["used_memory"], 10, 64)
		return v
	}
	var keysBefore int64
	iter := rdb.Scan(ctx, 0, ns+":*", 5000).Iterator()
	for iter.Next(ctx) {
		keysBefore++
	}
	before := used()
	start := time.Now()
	for i := 0; i < memArtifacts; i += 2000 {
		if err := fill(c, ctx, i, i+2000); err != nil {
			b.Fatal(err)
		}
	}
	fillTime := time.Since(start)
	delta := used() - before
	var total, keys int64
	parts := map[string]int64{}
	iter = rdb.Scan(ctx, 0, ns+":*", 5000).Iterator()
	batch := make([]string, 0, 1000)
	flush := func() {
		pipe := rdb.Pipeline()
		cmds := make([]*redis.IntCmd, len(batch))
		for i, k := range batch {
			cmds[i] = pipe.MemoryUsage(ctx, k, 0)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
		for i, cmd := range cmds {
			total += cmd.Val()
			parts[keyPart(batch[i])] += cmd.Val()
		}
		keys += int64(len(batch))
		batch = batch[:0]
	}
	for iter.Next(ctx) {
		if batch = append(batch, iter.Val()); len(batch) == cap(batch) {
			flush()
		}
	}
	flush()
	if total == 0 || keys-keysBefore < memArtifacts/1000 {
		b.Fatalf("measured %d bytes over %d keys: the %s entries were not catalogued", total, keys, what)
	}
	b.ReportMetric(float64(total)/memArtifacts, "memory-usage-B/"+what)
	b.ReportMetric(float64(delta)/memArtifacts, "used-memory-B/"+what)
	b.ReportMetric(float64(keys), "keys")
	for part, n := range parts {
		b.ReportMetric(float64(n)/memArtifacts, part+"-B/"+what)
	}
	b.ReportMetric(float64(memArtifacts)/fillTime.Seconds(), "filled/s")
}

// keyPart names the part of the layout a key belongs to, for the
// breakdown of the memory figures.
func keyPart(k string) string {
	switch {
	case strings.Contains(k, ":ids:{"):
		return "claims"
	case strings.Contains(k, "}:h:"):
		return "records"
	case strings.Contains(k, "}:hb:"):
		return "hours"
	case strings.Contains(k, "}:u:"):
		return "users"
	case strings.Contains(k, "}:c:"):
		return "calls"
	case strings.Contains(k, "}:box:"), strings.Contains(k, "}:sms:"):
		return "boxes"
	}
	return "other"
}

// percentile is the p-th percentile (0-100) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p/100))]
}
