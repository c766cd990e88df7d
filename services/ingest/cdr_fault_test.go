package ingest_test

import (
	"context"
	"net/http"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/cdr"
	"github.com/callvault/callvault/pkg/testenv"
	"github.com/callvault/callvault/services/ingest"
)

type cdrFault int

const (
	noFault cdrFault = iota
	// lostAck: the server stores the message, its PubAck never arrives.
	lostAck
	// unsent: the attempt times out before anything reaches the server.
	unsent
)

// faultCdrJS wraps the real JetStream of the CDR publisher. Its decide
// picks each attempt's fault from the CDR's event id and the attempt's
// number; it counts the publishes awaiting an answer.
type faultCdrJS struct {
	jetstream.JetStream
	mu          sync.Mutex
	decide      func(id string, attempt int) cdrFault
	attempts    map[string]int
	inflight    int
	maxInflight int
}

func newFaultCdrJS(decide func(id string, attempt int) cdrFault) *faultCdrJS {
	return &faultCdrJS{decide: decide, attempts: map[string]int{}}
}

func (f *faultCdrJS) wrap(js jetstream.JetStream) jetstream.JetStream {
	f.JetStream = js
	return f
}

func (f *faultCdrJS) setDecide(decide func(id string, attempt int) cdrFault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.decide = decide
}

func (f *faultCdrJS) stats() (attempts map[string]int, maxInflight int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	attempts = make(map[string]int, len(f.attempts))
	for id, n := range f.attempts {
		attempts[id] = n
	}
	return attempts, f.maxInflight
}

func (f *faultCdrJS) done() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inflight--
}

// fakeFuture is what the publisher waits on: the wrapper answers it.
type fakeFuture struct {
	msg *nats.Msg
	ok  chan *jetstream.PubAck
	err chan error
}

func (p *fakeFuture) Ok() <-chan *jetstream.PubAck { return p.ok }
func (p *fakeFuture) Err() <-chan error            { return p.err }
func (p *fakeFuture) Msg() *nats.Msg               { return p.msg }

func (f *faultCdrJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	env, err := bus.DecodeEnvelope(m.Data)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	attempt := f.attempts[env.GetId()]
	f.attempts[env.GetId()]++
	f.inflight++
	f.maxInflight = max(f.maxInflight, f.inflight)
	fault := noFault
	if f.decide != nil {
		fault = f.decide(env.GetId(), attempt)
	}
	f.mu.Unlock()
	fut := &fakeFuture{msg: m, ok: make(chan *jetstream.PubAck, 1), err: make(chan error, 1)}
	if fault == unsent {
		go func() {
			time.Sleep(time.Millisecond)
			f.done()
			fut.err <- jetstream.ErrAsyncPublishTimeout
		}()
		return fut, nil
	}
	real, err := f.JetStream.PublishMsgAsync(m, opts...)
	if err != nil {
		f.done()
		return nil, err
	}
	go func() {
		select {
		case ack := <-real.Ok():
			f.done()
			if fault == lostAck {
				fut.err <- jetstream.ErrAsyncPublishTimeout
			} else {
				fut.ok <- ack
			}
		case err := <-real.Err():
			f.done()
			fut.err <- err
		}
	}()
	return fut, nil
}

// A publish whose PubAck is lost after the server stored the CDR, or that
// times out before it is sent, is retried with the same Nats-Msg-Id: each
// CDR is stored once, and the answer counts this request's CDRs as
// accepted, not as duplicates of themselves.
func TestCdrPublishFaultsStoreOnce(t *testing.T) {
	t.Parallel()
	for name, fault := range map[string]cdrFault{"ack lost after the store": lostAck, "timed out before sending": unsent} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newFaultCdrJS(func(_ string, attempt int) cdrFault {
				if attempt == 0 {
					return fault
				}
				return noFault
			})
			r := newCdrRig(t, rigOptions{wrap: f.wrap})
			batch := goodCdrs("f", 300)
			got, err := r.unary(t, testenv.BootstrapToken, clones(batch))
			if err != nil {
				t.Fatal(err)
			}
			if want := (answer{Accepted: 300, Rejected: []ingest.CdrRejection{}}); !reflect.DeepEqual(got, want) {
				t.Fatalf("answer %+v, want %+v", got, want)
			}
			if n := len(r.storedIDs(t)); n != 300 {
				t.Fatalf("%d stored, want 300", n)
			}
			attempts, _ := f.stats()
			for _, c := range batch {
				if n := attempts[cdr.EventID("a.example", c.GetId())]; n != 2 {
					t.Fatalf("%s published %d times, want 2", c.GetId(), n)
				}
			}
		})
	}
}

// When some CDRs' outcome is still unknown after every attempt, the whole
// request is unavailable (gRPC Unavailable, HTTP 503 with Retry-After),
// and sending the batch again is safe: what was stored comes back as
// duplicates, what was not is stored now, nothing twice.
func TestCdrUnknownOutcomeFailsTheBatch(t *testing.T) {
	t.Parallel()
	for name, fault := range map[string]cdrFault{"ack lost after the store": lostAck, "timed out before sending": unsent} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			batch := goodCdrs("u", 200)
			failing := map[string]bool{}
			for i := 0; i < len(batch); i += 20 {
				failing[cdr.EventID("a.example", batch[i].GetId())] = true
			}
			f := newFaultCdrJS(func(id string, _ int) cdrFault {
				if failing[id] {
					return fault
				}
				return noFault
			})
			r := newCdrRig(t, rigOptions{wrap: f.wrap})
			_, err := r.unary(t, testenv.BootstrapToken, clones(batch))
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("gRPC: %v, want Unavailable", err)
			}
			code, header, body := r.post(t, testenv.BootstrapToken, "application/json", jsonArray(t, batch))
			if code != http.StatusServiceUnavailable || header.Get("Retry-After") == "" || problem(t, body).Type != "urn:callvault:problem:unavailable" {
				t.Fatalf("HTTP: %d %v %s, want 503 with Retry-After", code, header, body)
			}
			attempts, _ := f.stats()
			for id := range failing {
				if attempts[id] != 2*fastRetries.Attempts {
					t.Fatalf("%s published %d times over two requests, want %d", id, attempts[id], 2*fastRetries.Attempts)
				}
			}
			stored := len(r.storedIDs(t))
			want := len(batch)
			if fault == unsent {
				want -= len(failing)
			}
			if stored != want {
				t.Fatalf("%d stored after the failed requests, want %d", stored, want)
			}

			f.setDecide(nil)
			got, err := r.unary(t, testenv.BootstrapToken, clones(batch))
			if err != nil {
				t.Fatal(err)
			}
			if want := (answer{Accepted: len(batch) - stored, Duplicates: stored, Rejected: []ingest.CdrRejection{}}); !reflect.DeepEqual(got, want) {
				t.Fatalf("retry: %+v, want %+v", got, want)
			}
			if n := len(r.storedIDs(t)); n != len(batch) {
				t.Fatalf("%d stored after the retry, want %d", n, len(batch))
			}
			if n := r.counter(t, "error"); n != float64(2*len(failing)) {
				t.Fatalf("callvault_ingest_cdrs_total{status=\"error\"} = %v, want %d (the unconfirmed CDRs of both failed requests)", n, 2*len(failing))
			}
		})
	}
}

// No more publishes await their PubAck than the window, across
// concurrent requests, and the window is used.
func TestCdrWindowBoundsInFlight(t *testing.T) {
	t.Parallel()
	const window = 8
	f := newFaultCdrJS(nil)
	r := newCdrRig(t, rigOptions{limits: ingest.Limits{CdrWindow: window}, wrap: f.wrap})
	var answers [2]answer
	var errs [2]error
	concurrently(
		func() { answers[0], errs[0] = r.unary(t, testenv.BootstrapToken, goodCdrs("w0", 400)) },
		func() { answers[1], errs[1] = r.unary(t, testenv.BootstrapToken, goodCdrs("w1", 400)) },
	)
	for i := range answers {
		if errs[i] != nil || answers[i].Accepted != 400 {
			t.Fatalf("request %d: %+v %v", i, answers[i], errs[i])
		}
	}
	if _, most := f.stats(); most > window || most < 2 {
		t.Fatalf("at most %d publishes awaited their PubAck at once, want 2..%d", most, window)
	}
	if n := len(r.storedIDs(t)); n != 800 {
		t.Fatalf("%d stored, want 800", n)
	}
}

// A full CDR stream (DiscardNew) refuses new CDRs: the request answers
// 503 without retrying them, and once the writer has made room the same
// batch stores the rest.
func TestCdrStreamFullIs503(t *testing.T) {
	t.Parallel()
	r := newCdrRig(t, rigOptions{})
	setMaxMsgs := func(n int64) {
		t.Helper()
		ctx := context.Background()
		st, err := r.d.JS.Stream(ctx, r.d.Names.CdrStream())
		if err != nil {
			t.Fatal(err)
		}
		cfg := st.CachedInfo().Config
		cfg.MaxMsgs = n
		if _, err := r.d.JS.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	setMaxMsgs(10)
	batch := goodCdrs("full", 30)
	code, header, body := r.post(t, testenv.BootstrapToken, "application/x-ndjson", ndjson(t, batch))
	if code != http.StatusServiceUnavailable || header.Get("Retry-After") == "" {
		t.Fatalf("into a full stream: %d %v %s, want 503 with Retry-After", code, header, body)
	}
	if n := len(r.storedIDs(t)); n != 10 {
		t.Fatalf("%d stored, want the 10 the stream had room for", n)
	}
	if n := r.metric(t, "callvault_ingest_publish_failures_total", ""); n != 0 {
		t.Fatalf("%v publish attempts retried; a refusal is final", n)
	}
	setMaxMsgs(-1)
	got, _, body := r.postCdrs(t, testenv.BootstrapToken, "application/x-ndjson", batch)
	if want := (answer{Accepted: 20, Duplicates: 10, Rejected: []ingest.CdrRejection{}}); !reflect.DeepEqual(got, want) {
		t.Fatalf("after room was made: %+v %s, want %+v", got, body, want)
	}
	if n := len(r.storedIDs(t)); n != 30 {
		t.Fatalf("%d stored, want 30", n)
	}
}
