package policy_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/testenv"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	"github.com/callvault/callvault/services/policy"
)

// consumerBenchN is how many ingest events the consumer benchmark admits
// per run: recordings over 100 domains of 50 users.
const consumerBenchN = 20_000

func consumerBenchEvent(i int) *eventv1.Envelope {
	domain := fmt.Sprintf("tenant%03d.example", i%100)
	id := fmt.Sprintf("0193f2c4-7b1a-7c3e-9a4b-%012d", i)
	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second)
	return &eventv1.Envelope{
		Id: id, AcceptedAt: timestamppb.New(at.Add(time.Minute)), Source: "ingest",
		Tenant: &eventv1.Tenant{Reseller: "r1", Domain: domain, User: strconv.Itoa(100 + (i/100)%50)},
		Body: &eventv1.Envelope_Recording{Recording: &eventv1.RecordingStored{
			CallId: fmt.Sprintf("%08x@pbx.example", i), Mode: eventv1.RecordingMode_RECORDING_MODE_AUTOMATIC,
			StartedAt: timestamppb.New(at), DurationS: 185,
			Media: &eventv1.MediaObject{Key: fmt.Sprintf("recordings/%s/2026/11/01/%s-a1b2c3d4e5f6", domain, id), SizeBytes: 3_100_000,
				Sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", ContentType: "audio/wav"},
		}},
	}
}

// BenchmarkAdmitConsumer runs the admission consumer over a backlog of
// consumerBenchN ingest events, deciding one at a time and 256 at a
// time, and writes as many records of the same size with pipelined SETs
// (batches of 512) on the same Redis in the same run: admissions/s
// through the whole consumer (decide, publish the decision, confirm,
// acknowledge) beside the raw write rate. Run it with -benchtime=1x
// (make bench does).
func BenchmarkAdmitConsumer(b *testing.B) {
	ctx := context.Background()
	events := make([][]byte, consumerBenchN)
	for i := range events {
		data, err := proto.Marshal(consumerBenchEvent(i))
		if err != nil {
			b.Fatal(err)
		}
		events[i] = data
	}
	run := func(batch int) float64 {
		store, err := cds.NewFS(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		d := testenv.Deps(b, store)
		svc, err := policy.New(d, policy.Settings{AdmitBatch: batch})
		if err != nil {
			b.Fatal(err)
		}
		for dom := range 100 {
			if _, _, err := svc.ProvisionDomain(ctx, system, fmt.Sprintf("tenant%03d.example", dom), "r1"); err != nil {
				b.Fatal(err)
			}
		}
		for i, data := range events {
			if _, err := d.JS.PublishAsync(d.Names.RecordingSubject(), data, jetstream.WithMsgID(strconv.Itoa(i))); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-d.JS.PublishAsyncComplete():
		case <-time.After(2 * time.Minute):
			b.Fatal("publishing the backlog did not complete")
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- svc.Run(rctx) }()
		for {
			cons, err := d.JS.Consumer(ctx, d.Names.IngestStream(), policy.AdmitConsumer)
			if err == nil {
				if info, err := cons.Info(ctx); err == nil && info.AckFloor.Stream >= consumerBenchN && info.NumAckPending == 0 {
					break
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		elapsed := time.Since(start)
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		return consumerBenchN / elapsed.Seconds()
	}
	for b.Loop() {
		ns := testenv.Namespace(b)
		rdb := testenv.Redis(b, ns)
		value := string(make([]byte, 150))
		start := time.Now()
		for i := 0; i < consumerBenchN; i += 512 {
			pipe := rdb.Pipeline()
			for j := i; j < min(i+512, consumerBenchN); j++ {
				pipe.Set(ctx, ns+":set:"+strconv.Itoa(j), value, 0)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatal(err)
			}
		}
		setRate := consumerBenchN / time.Since(start).Seconds()
		one, many := run(1), run(policy.DefaultAdmitBatch)
		b.ReportMetric(setRate, "set/s")
		b.ReportMetric(one, "consumer-1/s")
		b.ReportMetric(many, "consumer-256/s")
		b.ReportMetric(many/setRate, "consumer-256/set")
	}
}
