package bus_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/testenv"
)

// TestConcurrentConsumerDoesNotWaitForTheSlowest: one message whose
// handler takes 3 s holds one worker; the 40 after it are handled and
// acknowledged meanwhile; a poison one is dead-lettered; every message is
// handled to success exactly once, and a stop drains what was fetched.
func TestConcurrentConsumerDoesNotWaitForTheSlowest(t *testing.T) {
	t.Parallel()
	js, names := setup(t)
	ctx := context.Background()
	const n = 42
	for i := range n {
		id := fmt.Sprintf("rec-%03d", i)
		if _, err := bus.PublishEnvelope(ctx, js, names.RecordingSubject(), id, envelope(id)); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	done := map[string]int{}
	var fastDoneAt time.Time
	slowStarted := make(chan struct{})
	h := func(_ context.Context, m jetstream.Msg) error {
		env, err := bus.DecodeEnvelope(m.Data())
		if err != nil {
			return err
		}
		id := env.GetId()
		switch id {
		case "rec-000":
			close(slowStarted)
			time.Sleep(3 * time.Second)
		case "rec-007":
			return bus.Poison(errors.New("rec-007 cannot be handled"))
		}
		mu.Lock()
		done[id]++
		if len(done) == n-2 && id != "rec-000" {
			fastDoneAt = time.Now()
		}
		mu.Unlock()
		return nil
	}
	spec := bus.DefaultSpec(names.IngestStream(), "concurrent", names.RecordingSubject())
	c := bus.NewConcurrentConsumer(js, names, spec, 4, h, testenv.Logger(), nil)
	rctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- c.Run(rctx) }()
	<-slowStarted
	start := time.Now()
	testenv.WaitFor(t, "every message but the slow and the poison handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(done) >= n-2
	})
	mu.Lock()
	took := fastDoneAt.Sub(start)
	mu.Unlock()
	if took >= 3*time.Second {
		t.Errorf("the other messages waited %s for the slow one", took)
	}
	testenv.WaitFor(t, "the slow one handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return done["rec-000"] == 1
	})
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	for i := range n {
		id := fmt.Sprintf("rec-%03d", i)
		want := 1
		if id == "rec-007" {
			want = 0
		}
		if done[id] != want {
			t.Errorf("%s handled %d times, want %d", id, done[id], want)
		}
	}
	dls, err := bus.ListDeadLetters(ctx, js, names, 1, 10)
	if err != nil || len(dls) != 1 || dls[0].SourceSequence != "8" {
		t.Fatalf("dead letters = %+v, %v; want rec-007 (sequence 8)", dls, err)
	}
}
