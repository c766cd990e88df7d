package bus_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/testenv"
)

// failDeadLetters fails the first n dead-letter publishes, then passes
// every call to the real JetStream.
type failDeadLetters struct {
	jetstream.JetStream
	n atomic.Int32
}

func (f *failDeadLetters) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if strings.Contains(msg.Subject, ".dlq.") && f.n.Add(-1) >= 0 {
		return nil, errors.New("injected: dead-letter stream unavailable")
	}
	return f.JetStream.PublishMsg(ctx, msg, opts...)
}

// settled waits until the consumer has no message in flight and has
// acknowledged (or terminated) stream sequence 1.
func settled(t *testing.T, js jetstream.JetStream, stream, durable string) {
	t.Helper()
	testenv.WaitFor(t, "the message to be settled", func() bool {
		cons, err := js.Consumer(context.Background(), stream, durable)
		if err != nil {
			return false // Run has not created it yet
		}
		info, err := cons.Info(context.Background())
		return err == nil && info.AckFloor.Stream == 1 && info.NumAckPending == 0 && info.NumPending == 0
	})
}

func deadLetters(t *testing.T, js jetstream.JetStream, names bus.Names) []bus.DeadLetter {
	t.Helper()
	dls, err := bus.ListDeadLetters(context.Background(), js, names, 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	return dls
}

func TestConsumerSlowHandlerRunsOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		spec func(bus.ConsumerSpec) bus.ConsumerSpec
	}{
		{"default spec", func(s bus.ConsumerSpec) bus.ConsumerSpec { return s }},
		// An ack wait shorter than the handler: in-progress acks keep the
		// message from being redelivered while the handler still runs.
		{"ack wait shorter than the handler", func(s bus.ConsumerSpec) bus.ConsumerSpec {
			s.AckWait = time.Second
			return s
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			js, names := setup(t)
			var calls atomic.Int32
			h := func(context.Context, jetstream.Msg) error {
				calls.Add(1)
				time.Sleep(2500 * time.Millisecond)
				return nil
			}
			spec := tc.spec(bus.DefaultSpec(names.IngestStream(), "slow-test", names.RecordingSubject()))
			stop := run(t, bus.NewConsumer(js, names, spec, h, testenv.Logger(), nil))
			defer stop()
			if _, err := bus.PublishEnvelope(context.Background(), js, names.RecordingSubject(), "rec-1", envelope("rec-1")); err != nil {
				t.Fatal(err)
			}
			settled(t, js, names.IngestStream(), "slow-test")
			// A redelivery made during the first call would run now.
			time.Sleep(1500 * time.Millisecond)
			if got := calls.Load(); got != 1 {
				t.Fatalf("a 2.5 s handler ran %d times, want once", got)
			}
		})
	}
}

func TestConsumerTimedOutLastAttemptDeadLetters(t *testing.T) {
	t.Parallel()
	js, names := setup(t)
	var calls atomic.Int32
	h := func(ctx context.Context, _ jetstream.Msg) error {
		calls.Add(1)
		<-ctx.Done()
		return ctx.Err()
	}
	spec := bus.DefaultSpec(names.IngestStream(), "timeout-test", names.RecordingSubject())
	spec.HandlerTimeout = 300 * time.Millisecond
	spec.BackOff = []time.Duration{20 * time.Millisecond}
	spec.MaxDeliver = 2
	stop := run(t, bus.NewConsumer(js, names, spec, h, testenv.Logger(), nil))
	defer stop()
	if _, err := bus.PublishEnvelope(context.Background(), js, names.RecordingSubject(), "rec-1", envelope("rec-1")); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "a dead letter", func() bool { return len(deadLetters(t, js, names)) > 0 })
	settled(t, js, names.IngestStream(), "timeout-test")
	time.Sleep(time.Second)
	dls := deadLetters(t, js, names)
	if len(dls) != 1 {
		t.Fatalf("%d dead letters, want exactly 1: %+v", len(dls), dls)
	}
	if !strings.Contains(dls[0].Reason, "timed out") || dls[0].Attempts != "2" || dls[0].SourceSequence != "1" {
		t.Fatalf("dead letter %+v: want the timeout as reason, 2 attempts, source sequence 1", dls[0])
	}
	if got := calls.Load(); got != 2 {
		t.Fatalf("handler called %d times, want MaxDeliver = 2 and no delivery after the dead letter", got)
	}
}

func TestConsumerDeadLetterPublishFailureIsRetried(t *testing.T) {
	t.Parallel()
	js, names := setup(t)
	faulty := &failDeadLetters{JetStream: js}
	faulty.n.Store(1)
	var calls atomic.Int32
	h := func(context.Context, jetstream.Msg) error {
		calls.Add(1)
		return errors.New("still down")
	}
	spec := bus.DefaultSpec(names.IngestStream(), "dlfail-test", names.RecordingSubject())
	spec.BackOff = []time.Duration{20 * time.Millisecond}
	spec.MaxDeliver = 2
	stop := run(t, bus.NewConsumer(faulty, names, spec, h, testenv.Logger(), nil))
	defer stop()
	if _, err := bus.PublishEnvelope(context.Background(), js, names.RecordingSubject(), "rec-1", envelope("rec-1")); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "a dead letter", func() bool { return len(deadLetters(t, js, names)) > 0 })
	settled(t, js, names.IngestStream(), "dlfail-test")
	time.Sleep(time.Second)
	dls := deadLetters(t, js, names)
	if len(dls) != 1 {
		t.Fatalf("%d dead letters, want exactly 1: %+v", len(dls), dls)
	}
	if dls[0].Reason != "still down" || dls[0].Attempts != "2" {
		t.Fatalf("dead letter %+v: want the handler's reason and 2 attempts", dls[0])
	}
	if faulty.n.Load() >= 0 {
		t.Fatal("the injected dead-letter failure never happened")
	}
	if got := calls.Load(); got != 2 {
		t.Fatalf("handler called %d times, want 2: a message out of attempts is dead-lettered, not handled again", got)
	}
}
