package bus_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/testenv"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
)

func setup(t *testing.T) (jetstream.JetStream, bus.Names) {
	t.Helper()
	ns := testenv.Namespace(t)
	_, js := testenv.NATS(t, ns)
	names, err := bus.NewNames(ns)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bus.EnsureStreams(ctx, js, names, bus.StreamOptions{Replicas: 1, DuplicateWindow: time.Minute}); err != nil {
		t.Fatal(err)
	}
	return js, names
}

func envelope(id string) *eventv1.Envelope {
	return &eventv1.Envelope{Id: id, AcceptedAt: timestamppb.Now(), Tenant: &eventv1.Tenant{Reseller: "r1", Domain: "a.example"}}
}

// run starts c and returns a stop function that drains it.
func run(t *testing.T, c *bus.Consumer) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("consumer run: %v", err)
		}
	}
}

func TestPublishDeduplicatesByMsgID(t *testing.T) {
	t.Parallel()
	js, names := setup(t)
	ctx := context.Background()
	a1, err := bus.PublishEnvelope(ctx, js, names.RecordingSubject(), "rec-1", envelope("rec-1"))
	if err != nil {
		t.Fatal(err)
	}
	a2, err := bus.PublishEnvelope(ctx, js, names.RecordingSubject(), "rec-1", envelope("rec-1"))
	if err != nil {
		t.Fatal(err)
	}
	if a1.Duplicate || !a2.Duplicate || a1.Sequence != a2.Sequence {
		t.Fatalf("first %+v second %+v: want the second to be a duplicate of the first", a1, a2)
	}
}

func TestConsumerDeadLettersPoisonAndKeepsGoing(t *testing.T) {
	t.Parallel()
	js, names := setup(t)
	ctx := context.Background()
	var handled sync.Map
	h := func(_ context.Context, m jetstream.Msg) error {
		env, err := bus.DecodeEnvelope(m.Data())
		if err != nil {
			return err
		}
		handled.Store(env.GetId(), true)
		return nil
	}
	spec := bus.DefaultSpec(names.IngestStream(), "poison-test", names.RecordingSubject())
	stop := run(t, bus.NewConsumer(js, names, spec, h, testenv.Logger(), bus.NewMetrics(prometheus.NewRegistry())))
	defer stop()

	if _, err := js.Publish(ctx, names.RecordingSubject(), []byte("not a protobuf \xff\xff")); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.PublishEnvelope(ctx, js, names.RecordingSubject(), "good-1", envelope("good-1")); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the good message after the poison one", func() bool { _, ok := handled.Load("good-1"); return ok })
	var dls []bus.DeadLetter
	testenv.WaitFor(t, "a dead letter", func() bool {
		var err error
		dls, err = bus.ListDeadLetters(ctx, js, names, 1, 10)
		return err == nil && len(dls) == 1
	})
	dl := dls[0]
	if dl.Consumer != "poison-test" || dl.SourceStream != names.IngestStream() || dl.SourceSequence != "1" || dl.Reason == "" {
		t.Fatalf("dead letter %+v: want consumer, source stream, source sequence 1 and a reason", dl)
	}
	if dl.Attempts != "1" {
		t.Fatalf("poison was tried %s times, want 1", dl.Attempts)
	}
}

func TestConsumerRetriesTransientFaults(t *testing.T) {
	t.Parallel()
	js, names := setup(t)
	var calls atomic.Int32
	h := func(context.Context, jetstream.Msg) error {
		if calls.Add(1) < 3 {
			return errors.New("redis is restarting")
		}
		return nil
	}
	spec := bus.DefaultSpec(names.IngestStream(), "retry-test", names.RecordingSubject())
	spec.BackOff = []time.Duration{50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond}
	spec.MaxDeliver = 5
	stop := run(t, bus.NewConsumer(js, names, spec, h, testenv.Logger(), nil))
	defer stop()
	if _, err := bus.PublishEnvelope(context.Background(), js, names.RecordingSubject(), "rec-1", envelope("rec-1")); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "third attempt", func() bool { return calls.Load() >= 3 })
	cons, err := js.Consumer(context.Background(), names.IngestStream(), "retry-test")
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the ack", func() bool {
		info, err := cons.Info(context.Background())
		return err == nil && info.AckFloor.Stream == 1 && info.NumAckPending == 0
	})
	dls, err := bus.ListDeadLetters(context.Background(), js, names, 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 0 {
		t.Fatalf("a message that succeeded on retry was dead-lettered: %+v", dls)
	}
}

func TestConsumerDeadLettersAfterMaxDeliver(t *testing.T) {
	t.Parallel()
	js, names := setup(t)
	var calls atomic.Int32
	h := func(context.Context, jetstream.Msg) error {
		calls.Add(1)
		return fmt.Errorf("still down")
	}
	spec := bus.DefaultSpec(names.IngestStream(), "exhaust-test", names.RecordingSubject())
	spec.BackOff = []time.Duration{20 * time.Millisecond, 20 * time.Millisecond}
	spec.MaxDeliver = 3
	stop := run(t, bus.NewConsumer(js, names, spec, h, testenv.Logger(), nil))
	defer stop()
	if _, err := bus.PublishEnvelope(context.Background(), js, names.RecordingSubject(), "rec-1", envelope("rec-1")); err != nil {
		t.Fatal(err)
	}
	var dls []bus.DeadLetter
	testenv.WaitFor(t, "the dead letter", func() bool {
		var err error
		dls, err = bus.ListDeadLetters(context.Background(), js, names, 1, 10)
		return err == nil && len(dls) == 1
	})
	if dls[0].Attempts != "3" || dls[0].Reason != "still down" {
		t.Fatalf("dead letter %+v: want 3 attempts and the handler's reason", dls[0])
	}
	if got := calls.Load(); got != 3 {
		t.Fatalf("handler called %d times, want MaxDeliver = 3", got)
	}
}

func TestReplayDeliversEverythingInOrder(t *testing.T) {
	t.Parallel()
	js, names := setup(t)
	ctx := context.Background()
	for i := range 50 {
		id := fmt.Sprintf("rec-%02d", i)
		if _, err := bus.PublishEnvelope(ctx, js, names.RecordingSubject(), id, envelope(id)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.Publish(ctx, names.RecordingSubject(), []byte{0xff}); err != nil {
		t.Fatal(err)
	}
	var got []string
	n, skipped, err := bus.Replay(ctx, js, names.IngestStream(), nil, func(_ context.Context, env *eventv1.Envelope, _ uint64) error {
		got = append(got, env.GetId())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != 50 || skipped != 1 || len(got) != 50 || got[0] != "rec-00" || got[49] != "rec-49" {
		t.Fatalf("replayed %d (skipped %d): first %v last %v; want 50 in order and 1 skipped", n, skipped, got[0], got[len(got)-1])
	}
}
