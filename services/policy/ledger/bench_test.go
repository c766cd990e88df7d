package ledger

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/callvault/callvault/pkg/cdr"
	"github.com/callvault/callvault/pkg/testenv"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
)

// BenchmarkCdrPipeline measures CDRs end to end (published to the CDR
// stream until every one is in a durable, indexed segment) beside the raw
// JetStream async publish of the same payloads to the same server, then
// export speed, CDS bytes per CDR and Redis bytes per partition.
func BenchmarkCdrPipeline(b *testing.B) {
	const n = 100000
	d := testenv.Deps(b, nil)
	l := New(d.JS, d.Names, d.Redis, d.CDS, testDomains, Settings{CompactEvery: time.Hour, ExportWorkers: 1, FlushAge: benchFlushAge}, testenv.Logger(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = l.Run(ctx) }()
	defer func() { cancel(); <-done }()

	raw, err := d.JS.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: d.Names.CdrStream() + "_RAW", Subjects: []string{d.Names.Namespace() + ".rawbench.>"}, Storage: jetstream.FileStorage,
	})
	if err != nil {
		b.Fatal(err)
	}
	_ = raw
	var rawRate, e2eRate, exportRate float64
	for i := 0; i < b.N; i++ {
		in := genCDRs("a.example", n, 7, uint64(1000+i))
		payloads := make([][]byte, n)
		ids := make([]string, n)
		for j, c := range in {
			env := cdr.ToEvent(c, time.Now(), "bench")
			payloads[j], _ = proto.Marshal(env)
			ids[j] = env.GetId()
		}
		b.ResetTimer()
		start := time.Now()
		publishRaw(b, d.JS, d.Names.Namespace()+".rawbench.cdr", payloads, ids)
		rawRate = n / time.Since(start).Seconds()

		start = time.Now()
		publishRaw(b, d.JS, d.Names.CdrSubject(), payloads, ids)
		waitDrained(b, d.JS, d.Names)
		e2eRate = n / time.Since(start).Seconds()

		start = time.Now()
		rows := 0
		err := l.Export(context.Background(), system, query("a.example", base, base.AddDate(0, 0, 7)), func(cs []*cdrv1.Cdr) error {
			rows += len(cs)
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		exportRate = float64(rows) / time.Since(start).Seconds()
		b.StopTimer()
	}
	cdrs, bytes, _, err := l.Stat(context.Background(), "a.example")
	if err != nil {
		b.Fatal(err)
	}
	days, _ := d.Redis.ZRange(context.Background(), l.k.days("a.example"), 0, -1).Result()
	var redisBytes int64
	for _, day := range days {
		redisBytes += d.Redis.MemoryUsage(context.Background(), l.k.segs("a.example", day)).Val()
	}
	redisBytes += d.Redis.MemoryUsage(context.Background(), l.k.days("a.example")).Val()
	redisBytes += d.Redis.MemoryUsage(context.Background(), l.k.stat("a.example")).Val()
	perPart := float64(redisBytes) / float64(max(len(days), 1))
	b.ReportMetric(e2eRate, "cdrs/s")
	b.ReportMetric(rawRate, "raw-publish/s")
	b.ReportMetric(e2eRate/rawRate, "ratio")
	b.ReportMetric(exportRate, "export-rows/s")
	b.ReportMetric(float64(bytes)/float64(cdrs), "cds-bytes/cdr")
	b.ReportMetric(perPart, "redis-bytes/partition")
	fmt.Printf("CDR pipeline: %.0f CDRs/s end to end (segment durable and indexed) vs %.0f/s raw JetStream async publish = ratio %.2f (goal 0.5); export %.0f rows/s; %.1f CDS bytes per CDR; %.0f Redis bytes per partition (%d partitions)\n",
		e2eRate, rawRate, e2eRate/rawRate, exportRate, float64(bytes)/float64(cdrs), perPart, len(days))
}

// publishRaw async-publishes payloads with a bounded window, waiting for
// every PubAck.
func publishRaw(b *testing.B, js jetstream.JetStream, subject string, payloads [][]byte, ids []string) {
	futs := make([]jetstream.PubAckFuture, 0, len(payloads))
	for j, p := range payloads {
		f, err := js.PublishMsgAsync(&nats.Msg{Subject: subject, Data: p}, jetstream.WithMsgID(ids[j]))
		if err != nil {
			b.Fatal(err)
		}
		futs = append(futs, f)
		if j%2048 == 2047 {
			<-js.PublishAsyncComplete()
		}
	}
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatal(err)
		}
	}
}

// benchFlushAge is the writer's default age flush.
var benchFlushAge = Settings{}.withDefaults().FlushAge
