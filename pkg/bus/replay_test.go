package bus_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/testenv"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
)

// stallProxy forwards TCP connections to the real NATS server and can
// hold every byte in both directions until it is released: a server that
// stops answering without closing the connection.
type stallProxy struct {
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	open     chan struct{} // closed while traffic flows
}

func newStallProxy(t *testing.T) *stallProxy {
	t.Helper()
	u, err := url.Parse(testenv.Env(t, "CALLVAULT_TEST_NATS_URL"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, upstream: u.Host, open: make(chan struct{})}
	close(p.open)
	t.Cleanup(func() { p.resume(); _ = ln.Close() })
	go p.serve()
	return p
}

func (p *stallProxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *stallProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			up, err := net.Dial("tcp", p.upstream)
			if err != nil {
				_ = c.Close()
				return
			}
			go p.pipe(up, c)
			p.pipe(c, up)
		}()
	}
}

// pipe copies src to dst, holding each chunk while the proxy is paused.
func (p *stallProxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			open := p.open
			p.mu.Unlock()
			<-open
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *stallProxy) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
		p.open = make(chan struct{})
	default:
	}
}

func (p *stallProxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
	default:
		close(p.open)
	}
}

// viaProxy connects to NATS through p.
func viaProxy(t *testing.T, p *stallProxy) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(p.url())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// publishN publishes n envelopes on subject, ids prefix-0 .. prefix-(n-1).
func publishN(t *testing.T, js jetstream.JetStream, subject, prefix string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < n; i++ {
		data, err := proto.Marshal(envelope(fmt.Sprintf("%s-%d", prefix, i)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishAsync(subject, data); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("publishing did not complete")
	}
}

// TestReplayWaitsThroughAStall pauses all traffic between the client and
// NATS for 3 seconds in the middle of a replay of 20,000 events: the
// replay waits and returns every one of them, in order.
func TestReplayWaitsThroughAStall(t *testing.T) {
	t.Parallel()
	js, names := setup(t)
	const total = 20_000
	publishN(t, js, names.RecordingSubject(), "rec", total)
	p := newStallProxy(t)
	pjs := viaProxy(t, p)

	var stalled sync.WaitGroup
	seen := 0
	var lastSeq uint64
	n, skipped, err := bus.Replay(context.Background(), pjs, names.IngestStream(), nil, func(_ context.Context, env *eventv1.Envelope, seq uint64) error {
		if want := fmt.Sprintf("rec-%d", seen); env.GetId() != want {
			return fmt.Errorf("got %s, want %s", env.GetId(), want)
		}
		if seq <= lastSeq {
			return fmt.Errorf("seq %d after %d", seq, lastSeq)
		}
		seen++
		lastSeq = seq
		if seen == total/2 {
			p.pause()
			stalled.Add(1)
			go func() {
				defer stalled.Done()
				time.Sleep(3 * time.Second)
				p.resume()
			}()
		}
		return nil
	})
	stalled.Wait()
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	if n != total || skipped != 0 || seen != total {
		t.Fatalf("replayed %d (skipped %d, seen %d), want %d", n, skipped, seen, total)
	}
}

// TestReplayFailsWhenAStallOutlastsTheBound never releases the stall: the
// replay reports ErrReplayTimeout instead of a short success.
func TestReplayFailsWhenAStallOutlastsTheBound(t *testing.T) {
	t.Parallel()
	js, names := setup(t)
	const total = 5_000
	publishN(t, js, names.RecordingSubject(), "rec", total)
	p := newStallProxy(t)
	pjs := viaProxy(t, p)

	seen := 0
	n, _, err := bus.Replay(context.Background(), pjs, names.IngestStream(), nil, func(context.Context, *eventv1.Envelope, uint64) error {
		seen++
		if seen == 100 {
			p.pause()
		}
		return nil
	}, bus.ReplayTimeout(time.Second))
	if !errors.Is(err, bus.ErrReplayTimeout) {
		t.Fatalf("replay returned %d, %v; want ErrReplayTimeout", n, err)
	}
	if n >= total {
		t.Fatalf("replayed %d of %d through a stall that never ended", n, total)
	}
}

// TestReplayFilteredEndsAtTheLastMatch replays one subject whose last
// message is far before the stream's end. Once that message is handled
// all traffic stops for good: the replay must end there, without waiting
// for more messages or for its bound.
func TestReplayFilteredEndsAtTheLastMatch(t *testing.T) {
	t.Parallel()
	js, names := setup(t)
	publishN(t, js, names.RefusalSubject(), "ref", 100)
	publishN(t, js, names.RecordingSubject(), "rec", 5_000)
	p := newStallProxy(t)
	pjs := viaProxy(t, p)

	seen := 0
	n, skipped, err := bus.Replay(context.Background(), pjs, names.IngestStream(), []string{names.RefusalSubject()}, func(_ context.Context, env *eventv1.Envelope, _ uint64) error {
		if want := fmt.Sprintf("ref-%d", seen); env.GetId() != want {
			return fmt.Errorf("got %s, want %s", env.GetId(), want)
		}
		seen++
		if seen == 100 {
			p.pause()
		}
		return nil
	}, bus.ReplayTimeout(time.Minute))
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	if n != 100 || skipped != 0 {
		t.Fatalf("replayed %d (skipped %d), want 100", n, skipped)
	}
}

// TestReplayIgnoresMessagesAppendedWhileReplaying publishes more messages
// of the replayed subject during the replay: they are not part of it.
func TestReplayIgnoresMessagesAppendedWhileReplaying(t *testing.T) {
	t.Parallel()
	js, names := setup(t)
	publishN(t, js, names.RefusalSubject(), "ref", 1_000)
	publishN(t, js, names.RecordingSubject(), "rec", 1_000)
	seen := 0
	n, _, err := bus.Replay(context.Background(), js, names.IngestStream(), []string{names.RefusalSubject()}, func(ctx context.Context, env *eventv1.Envelope, _ uint64) error {
		if seen == 0 {
			publishN(t, js, names.RefusalSubject(), "late", 50)
		}
		if want := fmt.Sprintf("ref-%d", seen); env.GetId() != want {
			return fmt.Errorf("got %s, want %s", env.GetId(), want)
		}
		seen++
		return nil
	})
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	if n != 1_000 {
		t.Fatalf("replayed %d, want the 1,000 present at the start", n)
	}
}

// TestReplayOfAnEmptyFilterReturnsAtOnce replays a subject with no
// messages in a stream that has some.
func TestReplayOfAnEmptyFilterReturnsAtOnce(t *testing.T) {
	t.Parallel()
	js, names := setup(t)
	publishN(t, js, names.RecordingSubject(), "rec", 10)
	n, _, err := bus.Replay(context.Background(), js, names.IngestStream(), []string{names.DeletionSubject()}, func(context.Context, *eventv1.Envelope, uint64) error {
		return errors.New("nothing should be replayed")
	}, bus.ReplayTimeout(time.Hour))
	if err != nil || n != 0 {
		t.Fatalf("replay = %d, %v; want 0, nil", n, err)
	}
}

// TestReplayOfADeletedStreamFails deletes the stream during the
// replay: the replay fails with the stream's absence rather than waiting
// for its bound.
func TestReplayOfADeletedStreamFails(t *testing.T) {
	t.Parallel()
	js, names := setup(t)
	publishN(t, js, names.RecordingSubject(), "rec", 5_000)
	seen := 0
	_, _, err := bus.Replay(context.Background(), js, names.IngestStream(), nil, func(ctx context.Context, _ *eventv1.Envelope, _ uint64) error {
		seen++
		if seen == 10 {
			if err := js.DeleteStream(ctx, names.IngestStream()); err != nil {
				return err
			}
		}
		return nil
	}, bus.ReplayTimeout(time.Hour))
	if err == nil {
		t.Fatal("replay of a deleted stream succeeded")
	}
}
