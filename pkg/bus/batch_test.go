package bus_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/testenv"
)

// TestBatchConsumerSettlesEachMessageOnItsOwn publishes 300 messages and
// hands them out in batches of up to 64: each batch is in stream order,
// one message is poison (dead-lettered with its reason, once), one fails
// twice and then succeeds (retried on its own, not with its batch), one
// the handler gives no outcome for (retried), and every other message is
// acknowledged once and never handled again.
func TestBatchConsumerSettlesEachMessageOnItsOwn(t *testing.T) {
	t.Parallel()
	js, names := setup(t)
	ctx := context.Background()
	const n = 300
	for i := range n {
		id := fmt.Sprintf("rec-%03d", i)
		if _, err := bus.PublishEnvelope(ctx, js, names.RecordingSubject(), id, envelope(id)); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	handled := map[string]int{}
	var sizes []int
	var disorder error
	h := func(_ context.Context, msgs []jetstream.Msg) []error {
		mu.Lock()
		defer mu.Unlock()
		sizes = append(sizes, len(msgs))
		errs := make([]error, len(msgs))
		var last uint64
		for i, m := range msgs {
			md, err := m.Metadata()
			if err != nil {
				errs[i] = err
				continue
			}
			if md.Sequence.Stream <= last && disorder == nil {
				disorder = fmt.Errorf("sequence %d after %d in one batch", md.Sequence.Stream, last)
			}
			last = md.Sequence.Stream
			env, err := bus.DecodeEnvelope(m.Data())
			if err != nil {
				errs[i] = err
				continue
			}
			id := env.GetId()
			handled[id]++
			switch {
			case id == "rec-007":
				errs[i] = bus.Poison(errors.New("rec-007 can never be admitted"))
			case id == "rec-150" && handled[id] <= 2:
				errs[i] = errors.New("transient: try again")
			}
		}
		if len(msgs) > 1 && msgs[len(msgs)-1] != nil {
			if env, err := bus.DecodeEnvelope(msgs[len(msgs)-1].Data()); err == nil && env.GetId() == "rec-299" && handled["rec-299"] == 1 {
				return errs[:len(errs)-1] // no outcome for the last one
			}
		}
		return errs
	}
	spec := bus.DefaultSpec(names.IngestStream(), "batch-test", names.RecordingSubject())
	spec.BackOff = []time.Duration{50 * time.Millisecond}
	stop := run(t, bus.NewBatchConsumer(js, names, spec, 64, h, testenv.Logger(), nil))
	defer stop()
	testenv.WaitFor(t, "every message to be settled", func() bool {
		cons, err := js.Consumer(ctx, names.IngestStream(), "batch-test")
		if err != nil {
			return false
		}
		info, err := cons.Info(ctx)
		return err == nil && info.AckFloor.Stream == n && info.NumAckPending == 0 && info.NumPending == 0
	})
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if disorder != nil {
		t.Fatal(disorder)
	}
	if slices.Max(sizes) < 2 || slices.Max(sizes) > 64 {
		t.Fatalf("batch sizes %v: want batches of more than one message and at most 64", sizes)
	}
	for i := range n {
		id := fmt.Sprintf("rec-%03d", i)
		want := 1
		switch id {
		case "rec-150":
			want = 3
		case "rec-299":
			want = 2
		}
		if handled[id] != want {
			t.Errorf("%s handled %d times, want %d", id, handled[id], want)
		}
	}
	dls := deadLetters(t, js, names)
	if len(dls) != 1 || dls[0].Reason != "rec-007 can never be admitted" || dls[0].SourceSequence != "8" {
		t.Fatalf("dead letters %+v: want rec-007's, with its reason", dls)
	}
}

// TestBatchConsumerDrainsOnStop: messages fetched when the consumer stops
// are handled and acknowledged before Run returns, not left to the ack
// wait.
func TestBatchConsumerDrainsOnStop(t *testing.T) {
	t.Parallel()
	js, names := setup(t)
	ctx := context.Background()
	const n = 200
	for i := range n {
		id := fmt.Sprintf("rec-%03d", i)
		if _, err := bus.PublishEnvelope(ctx, js, names.RecordingSubject(), id, envelope(id)); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	seen := 0
	started := make(chan struct{})
	var once sync.Once
	h := func(_ context.Context, msgs []jetstream.Msg) []error {
		once.Do(func() { close(started) })
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		seen += len(msgs)
		mu.Unlock()
		return make([]error, len(msgs))
	}
	spec := bus.DefaultSpec(names.IngestStream(), "drain-test", names.RecordingSubject())
	stop := run(t, bus.NewBatchConsumer(js, names, spec, 16, h, testenv.Logger(), nil))
	<-started
	stop()
	cons, err := js.Consumer(ctx, names.IngestStream(), "drain-test")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if info.NumAckPending != 0 || info.AckFloor.Stream != uint64(seen) || seen == 0 {
		t.Fatalf("after stop: %d handled, ack floor %d, %d unacknowledged; want every fetched message handled and acknowledged", seen, info.AckFloor.Stream, info.NumAckPending)
	}
}
