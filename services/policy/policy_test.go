package policy_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/testenv"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	"github.com/callvault/callvault/services/policy"
)

func recordingEvent(id string, size int64, at time.Time) *eventv1.Envelope {
	return &eventv1.Envelope{
		Id: id, AcceptedAt: timestamppb.Now(), Source: "test",
		Tenant: &eventv1.Tenant{Reseller: "r1", Domain: "a.example", User: "101"},
		Body: &eventv1.Envelope_Recording{Recording: &eventv1.RecordingStored{
			CallId: "call-" + id, Mode: eventv1.RecordingMode_RECORDING_MODE_AUTOMATIC, StartedAt: timestamppb.New(at), DurationS: 10,
			Media: &eventv1.MediaObject{Key: "recordings/a.example/" + id, SizeBytes: size, Sha256: "ab12", ContentType: "audio/wav"},
		}},
	}
}

// TestAdmissionIsIdempotent publishes the same recording twice under two
// message ids (as a replay or a publisher beyond the dedup window would):
// the catalog holds it once and usage counts it once. A poison message in
// between is dead-lettered and does not block the consumer.
func TestAdmissionIsIdempotent(t *testing.T) {
	t.Parallel()
	d, svc := setup(t)
	runService(t, svc)

	at := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	pub := func(msgID string, env *eventv1.Envelope) {
		t.Helper()
		if _, err := bus.PublishEnvelope(context.Background(), d.JS, d.Names.RecordingSubject(), msgID, env); err != nil {
			t.Fatal(err)
		}
	}
	pub("rec-1", recordingEvent("rec-1", 1000, at))
	if _, err := d.JS.Publish(context.Background(), d.Names.RecordingSubject(), []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	pub("rec-1-again", recordingEvent("rec-1", 1000, at))
	incomplete := recordingEvent("rec-bad", 5, at)
	incomplete.Tenant = nil
	pub("rec-bad", incomplete)
	pub("rec-2", recordingEvent("rec-2", 500, at.Add(time.Minute)))

	cat := catalog.New(d.Redis, d.Names.Namespace())
	testenv.WaitFor(t, "rec-2 admitted", func() bool {
		_, err := cat.GetRecording(context.Background(), "a.example", "rec-2")
		return err == nil
	})
	cons, err := d.JS.Consumer(context.Background(), d.Names.IngestStream(), policy.AdmitConsumer)
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "all five messages acked", func() bool {
		info, err := cons.Info(context.Background())
		return err == nil && info.AckFloor.Stream == 5
	})
	u, err := cat.Usage(context.Background(), "a.example")
	if err != nil {
		t.Fatal(err)
	}
	if got := u[catalog.KindRecording]; got.Count != 2 || got.Bytes != 1500 {
		t.Fatalf("usage = %+v, want 2 recordings and 1500 bytes", got)
	}
	dls, err := bus.ListDeadLetters(context.Background(), d.JS, d.Names, 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 2 || dls[0].SourceSequence != "2" || dls[1].SourceSequence != "4" {
		t.Fatalf("dead letters = %+v, want the garbage (seq 2) and the incomplete event (seq 4)", dls)
	}

	// Rebuild into an empty namespace of keys gives the same catalog.
	wipeRedis(t, d)
	n, err := svc.Rebuild(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("rebuild applied %d events, want the 2 admission decisions (the repeated recording was decided once)", n)
	}
	u, err = cat.Usage(context.Background(), "a.example")
	if err != nil {
		t.Fatal(err)
	}
	if got := u[catalog.KindRecording]; got.Count != 2 || got.Bytes != 1500 {
		t.Fatalf("usage after rebuild = %+v, want 2 recordings and 1500 bytes", got)
	}
	page, err := cat.ListRecordings(context.Background(), catalog.Query{Domain: "a.example", Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Recordings) != 2 || page.Recordings[0].ID != "rec-2" || page.Recordings[1].ID != "rec-1" {
		t.Fatalf("after rebuild list = %+v", page.Recordings)
	}
}
