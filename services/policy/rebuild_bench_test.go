package policy

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/pkg/testenv"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
)

// The rebuild workload: admitted recordings and messages across 200
// domains of 50 users, with refusals and about 2,000 tombstones among them, as the
// live consumers record them.
const (
	benchAdmitted = 50_000
	benchRefusals = 2_000
)

// benchIngest is the ingest event of artifact i: four in five are
// automatic recordings, the rest voicemails, faxes and SMS.
func benchIngest(i int) *eventv1.Envelope {
	domain := fmt.Sprintf("tenant%03d.example", i%200)
	id := fmt.Sprintf("0193f2c4-7b1a-7c3e-9a4b-%012d", i)
	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second)
	env := &eventv1.Envelope{
		Id: id, ArtifactId: id, SchemaVersion: bus.SchemaVersion, AcceptedAt: timestamppb.New(at.Add(3 * time.Minute)), Source: "ingest",
		Tenant: &eventv1.Tenant{Reseller: "reseller-" + strconv.Itoa(i%7), Domain: domain, User: strconv.Itoa(100 + i%50)},
	}
	if i%5 != 0 {
		env.Type = "recording.stored"
		env.Body = &eventv1.Envelope_Recording{Recording: &eventv1.RecordingStored{
			CallId: fmt.Sprintf("%08x-4f2a-11ef@pbx-%02d.example", i, i%16), Mode: eventv1.RecordingMode_RECORDING_MODE_AUTOMATIC,
			StartedAt: timestamppb.New(at), DurationS: 185,
			Media: &eventv1.MediaObject{
				Key: fmt.Sprintf("recordings/%s/2026/11/01/%s-a1b2c3d4e5f6", domain, id), SizeBytes: 3_100_000,
				Sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", ContentType: "audio/wav",
			},
		}}
		return env
	}
	kinds := []eventv1.DataKind{eventv1.DataKind_DATA_KIND_VOICEMAIL, eventv1.DataKind_DATA_KIND_FAX_RECEIVED, eventv1.DataKind_DATA_KIND_SMS}
	kind := kinds[(i/5)%len(kinds)]
	m := &eventv1.MessageStored{
		Kind: kind, ReceivedAt: timestamppb.New(at), From: "+15550100", To: "+15550199",
		Media: &eventv1.MediaObject{Key: fmt.Sprintf("messages/%s/%s", domain, id), SizeBytes: 48_000, Sha256: "ab12", ContentType: "audio/wav"},
	}
	if kind == eventv1.DataKind_DATA_KIND_SMS {
		m.Folder = eventv1.MessageFolder_MESSAGE_FOLDER_INBOX
	}
	env.Type, env.Body = "message.stored", &eventv1.Envelope_Message{Message: m}
	return env
}

// publishWorkload publishes the decision events of the workload on the
// ingest stream and returns how many events it published and how many
// were tombstones. Refusals and tombstones are spread evenly among the
// admissions.
func publishWorkload(b *testing.B, d *platform.Deps, s *Service) (n, tombstones int) {
	b.Helper()
	publish := func(subject string, env *eventv1.Envelope) {
		data, err := proto.Marshal(env)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := d.JS.PublishAsync(subject, data, jetstream.WithMsgID(env.GetId())); err != nil {
			b.Fatal(err)
		}
		n++
	}
	every := benchAdmitted / benchRefusals
	for i := 0; i < benchAdmitted+benchRefusals; i++ {
		in := benchIngest(i)
		a, kind, err := s.artifactOf(in, uint64(i+1))
		if err != nil {
			b.Fatal(err)
		}
		dec := catalog.Decision{State: catalog.StateAdmitted}
		if i%(every+1) == every {
			dec = catalog.Decision{State: catalog.StateRefused, Reason: "monthly_cap"}
		}
		ev := decisionEvent(in, a, kind, dec, uint64(i+1))
		publish(ev.subject(d.Names), ev.env)
		// A tombstone for a recording admitted a while ago (only
		// recordings: removing an artifact with no call id is not
		// supported by the catalog's remove script yet).
		if j := i - 1000; i%(every+1) == 0 && j > 0 {
			if j%5 == 0 {
				j--
			}
			old := benchIngest(j)
			rec := catalog.Record{
				ID: old.GetId(), Domain: old.GetTenant().GetDomain(), User: old.GetTenant().GetUser(), Kind: catalog.KindRecording,
				Reason: "expired", Rule: "recording_automatic 12 months", Actor: "culler", Size: mediaOf(old).GetSizeBytes(),
				ObjectKey: mediaOf(old).GetKey(), DeletedAt: old.GetAcceptedAt().AsTime().Add(24 * time.Hour),
			}
			publish(d.Names.DeletionSubject(), tombstone(old.GetTenant().GetReseller(), rec))
			tombstones++
		}
	}
	select {
	case <-d.JS.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		b.Fatal("publishing the workload did not complete")
	}
	return n, tombstones
}

// rawRead reads the decision subjects of the ingest stream with an
// ordered consumer and decodes every envelope: the floor a rebuild cannot
// beat.
func rawRead(b *testing.B, d *platform.Deps, want int) {
	b.Helper()
	ctx := context.Background()
	cons, err := d.JS.OrderedConsumer(ctx, d.Names.IngestStream(), jetstream.OrderedConsumerConfig{FilterSubjects: d.Names.DecisionSubjects()})
	if err != nil {
		b.Fatal(err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(512))
	if err != nil {
		b.Fatal(err)
	}
	defer it.Stop()
	for i := 0; i < want; i++ {
		msg, err := it.Next()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := bus.DecodeEnvelope(msg.Data()); err != nil {
			b.Fatal(err)
		}
	}
}

// redisCPU is the CPU time the Redis server has used, in seconds.
func redisCPU(b *testing.B, d *platform.Deps) float64 {
	b.Helper()
	info, err := d.Redis.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\r\n") {
		k, v, _ := strings.Cut(line, ":")
		if k == "used_cpu_sys" || k == "used_cpu_user" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatal(err)
			}
			total += f
		}
	}
	return total
}

// selfCPU is the CPU time this process has used, in seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// redisBytes sums MEMORY USAGE over the namespace's keys.
func redisBytes(b *testing.B, d *platform.Deps) int64 {
	b.Helper()
	ctx := context.Background()
	var total int64
	iter := d.Redis.Scan(ctx, 0, d.Names.Namespace()+":*", 5000).Iterator()
	for iter.Next(ctx) {
		m, err := d.Redis.MemoryUsage(ctx, iter.Val()).Result()
		if err != nil {
			b.Fatal(err)
		}
		total += m
	}
	if err := iter.Err(); err != nil {
		b.Fatal(err)
	}
	return total
}

func wipeNamespace(b *testing.B, d *platform.Deps) {
	b.Helper()
	ctx := context.Background()
	iter := d.Redis.Scan(ctx, 0, d.Names.Namespace()+":*", 5000).Iterator()
	for iter.Next(ctx) {
		if err := d.Redis.Del(ctx, iter.Val()).Err(); err != nil {
			b.Fatal(err)
		}
	}
	if err := iter.Err(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRebuild publishes a mixed stream of decision events, then in
// each round reads it raw with an ordered consumer and rebuilds the
// catalog from it into an empty Redis namespace. It reports both rates,
// their ratio, and the Redis bytes per catalogued artifact after the
// rebuild. Run it with -benchtime=1x (make bench does).
func BenchmarkRebuild(b *testing.B) {
	store, err := cds.NewFS(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	d := testenv.Deps(b, store)
	s, err := New(d, Settings{})
	if err != nil {
		b.Fatal(err)
	}
	events, tombstones := publishWorkload(b, d, s)
	ctx := context.Background()
	var raw, rebuild time.Duration
	var redisBusy, selfBusy, rawSelf float64
	for b.Loop() {
		b.StopTimer()
		wipeNamespace(b, d)
		rawSelf0 := selfCPU()
		start := time.Now()
		rawRead(b, d, events)
		raw += time.Since(start)
		rawSelf += selfCPU() - rawSelf0
		b.StartTimer()

		redis0, self0 := redisCPU(b, d), selfCPU()
		start = time.Now()
		n, err := s.Rebuild(ctx)
		rebuild += time.Since(start)
		redisBusy += redisCPU(b, d) - redis0
		selfBusy += selfCPU() - self0
		if err != nil {
			b.Fatal(err)
		}
		if n != events {
			b.Fatalf("rebuild applied %d of %d events", n, events)
		}
	}
	b.StopTimer()
	// The last artifact is admitted, the first one tombstoned is deleted.
	last, first := benchIngest(benchAdmitted+benchRefusals-2), benchIngest(14)
	if r, err := s.catalog.Record(ctx, last.GetTenant().GetDomain(), last.GetId()); err != nil || r.State != catalog.StateAdmitted {
		b.Fatalf("last artifact after the rebuild: %+v, %v", r, err)
	}
	if r, err := s.catalog.Record(ctx, first.GetTenant().GetDomain(), first.GetId()); err != nil || r.State != catalog.StateDeleted {
		b.Fatalf("tombstoned artifact after the rebuild: %+v, %v", r, err)
	}
	admitted := benchAdmitted - tombstones
	rawRate := float64(events*b.N) / raw.Seconds()
	rebuildRate := float64(events*b.N) / rebuild.Seconds()
	b.ReportMetric(rawRate, "raw-events/s")
	b.ReportMetric(rebuildRate, "rebuild-events/s")
	b.ReportMetric(rebuildRate/rawRate, "rebuild/raw")
	// Where the rebuild's time goes: the CPU seconds Redis and this
	// process used per second of rebuild (on a machine with few cores,
	// their sum with the NATS server's is what bounds the ratio).
	b.ReportMetric(redisBusy/rebuild.Seconds(), "redis-cpu/s")
	b.ReportMetric(selfBusy/rebuild.Seconds(), "service-cpu/s")
	b.ReportMetric(rawSelf/raw.Seconds(), "raw-reader-cpu/s")
	b.ReportMetric(float64(redisBytes(b, d))/float64(admitted), "redis-B/artifact")
}
