package ledger

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/cdr"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/pkg/testenv"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
)

// domainsMap stands for the catalog's domain registry.
type domainsMap map[string]string

func (m domainsMap) GetDomain(_ context.Context, d string) (catalog.Domain, error) {
	r, ok := m[d]
	if !ok {
		return catalog.Domain{}, catalog.ErrNotFound
	}
	return catalog.Domain{Domain: d, Reseller: r}, nil
}

var testDomains = domainsMap{"a.example": "r1", "b.example": "r1", "c.example": "r2"}

var system = auth.Principal{Name: "test", Level: auth.LevelSystem}

type rig struct {
	t     *testing.T
	d     *platform.Deps
	store cds.Store
	l     *Ledger
	ns    string
}

func testSettings() Settings {
	return Settings{SegmentCDRs: 1000, FlushAge: 100 * time.Millisecond, BlockCDRs: 256, AckWait: 2 * time.Second, CompactEvery: time.Hour, ExportWorkers: 1}
}

func newRig(t *testing.T, set Settings) *rig {
	t.Helper()
	d := testenv.Deps(t, nil)
	r := &rig{t: t, d: d, store: d.CDS, ns: d.Names.Namespace()}
	r.l = New(d.JS, d.Names, d.Redis, d.CDS, testDomains, set, testenv.Logger(), nil)
	return r
}

// run runs l until the test ends.
func (r *rig) run(l *Ledger) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := l.Run(ctx); err != nil {
			r.t.Errorf("ledger: %v", err)
		}
	}()
	r.t.Cleanup(func() { cancel(); wg.Wait() })
}

// publish sends cdrs to the CDR stream as ingest does.
func (r *rig) publish(cdrs []*cdrv1.Cdr) {
	r.t.Helper()
	publishTo(r.t, r.d.JS, r.d.Names, cdrs)
}

func publishTo(t testing.TB, js jetstream.JetStream, names bus.Names, cdrs []*cdrv1.Cdr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	futs := make([]jetstream.PubAckFuture, 0, len(cdrs))
	for i, c := range cdrs {
		env := cdr.ToEvent(c, time.Now(), "test")
		data, err := proto.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		f, err := js.PublishMsgAsync(&nats.Msg{Subject: names.CdrSubject(), Data: data}, jetstream.WithMsgID(env.GetId()))
		if err != nil {
			t.Fatal(err)
		}
		futs = append(futs, f)
		if i%2000 == 1999 {
			select {
			case <-js.PublishAsyncComplete():
			case <-ctx.Done():
				t.Fatal("publish timed out")
			}
		}
	}
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatalf("publish: %v", err)
		case <-ctx.Done():
			t.Fatal("publish timed out")
		}
	}
}

// drained waits until every CDR left the stream (each is in an indexed
// segment: the writer acks only then).
func (r *rig) drained() {
	r.t.Helper()
	waitDrained(r.t, r.d.JS, r.d.Names)
}

func waitDrained(t testing.TB, js jetstream.JetStream, names bus.Names) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		s, err := js.Stream(context.Background(), names.CdrStream())
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d CDRs still waiting in the stream", info.State.Msgs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// export collects an export.
func (r *rig) export(p auth.Principal, q *cdrv1.Query) ([]*cdrv1.Cdr, error) {
	var out []*cdrv1.Cdr
	err := r.l.Export(context.Background(), p, q, func(cs []*cdrv1.Cdr) error {
		out = append(out, cs...)
		return nil
	})
	return out, err
}

func query(domain string, from, to time.Time) *cdrv1.Query {
	return &cdrv1.Query{Domain: domain, From: timestamppb.New(from), To: timestamppb.New(to)}
}

var base = time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC)

// genCDRs makes n valid CDRs of domain whose calls start within days
// days of base, in random order.
func genCDRs(domain string, n, days int, seed uint64) []*cdrv1.Cdr {
	rng := rand.New(rand.NewPCG(seed, 7))
	out := make([]*cdrv1.Cdr, n)
	users := []string{"100", "101", "102", "200"}
	for i := range out {
		start := base.Add(time.Duration(rng.Int64N(int64(days) * int64(24*time.Hour)))).Truncate(time.Millisecond)
		dur := time.Duration(rng.IntN(600)) * time.Second
		c := &cdrv1.Cdr{
			Id: fmt.Sprintf("cdr-%s-%d-%d", domain[:1], seed, i), CallId: fmt.Sprintf("call-%d-%d", seed, i/2),
			Reseller: testDomains[domain], Domain: domain, User: users[i%len(users)],
			Direction: []string{"inbound", "outbound", "internal"}[i%3],
			From:      fmt.Sprintf("+1555%07d", rng.IntN(1000)), To: fmt.Sprintf("+1666%07d", rng.IntN(1000)),
			StartedAt: timestamppb.New(start), EndedAt: timestamppb.New(start.Add(dur)),
			DurationS: uint32(dur / time.Second), Disposition: "no_answer",
		}
		if i%4 != 0 {
			c.AnsweredAt = timestamppb.New(start)
			c.BillableS = c.DurationS
			c.Disposition = "answered"
		}
		if i%3 == 0 {
			c.RecordingIds = []string{fmt.Sprintf("rec-%d", i)}
		}
		out[i] = c
	}
	return out
}

// sorted is cdrs as an oldest-first export answers them, accepted_at
// cleared for comparison (the publisher sets it).
func sorted(cdrs []*cdrv1.Cdr) []*cdrv1.Cdr {
	out := slices.Clone(cdrs)
	slices.SortFunc(out, cdr.Less)
	return out
}

func sameCDRs(t *testing.T, got, want []*cdrv1.Cdr) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d CDRs, want %d", len(got), len(want))
	}
	for i := range got {
		g := proto.Clone(got[i]).(*cdrv1.Cdr)
		g.AcceptedAt = nil
		if !proto.Equal(g, want[i]) {
			t.Fatalf("CDR %d: got %v, want %v", i, g, want[i])
		}
	}
}

func TestMain(m *testing.M) {
	if ns := os.Getenv("CV_LEDGER_CHILD_NS"); ns != "" {
		os.Exit(runChild(ns, os.Getenv("CV_LEDGER_CHILD_STOP")))
	}
	os.Exit(m.Run())
}
