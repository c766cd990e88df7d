package ledger

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/cdr"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/testenv"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
)

func b10Partition(domain, day string, cdrs []*cdrv1.Cdr, firstSeq uint64) (*partition, []uint64) {
	p := &partition{domain: domain, day: day, cdrs: map[uint64]*cdrv1.Cdr{}}
	var seqs []uint64
	for i, c := range cdrs {
		s := firstSeq + uint64(i)
		p.cdrs[s] = c
		seqs = append(seqs, s)
	}
	return p, seqs
}

func b10OneDay(domain string, n int, seed uint64) []*cdrv1.Cdr {
	var out []*cdrv1.Cdr
	for _, c := range genCDRs(domain, n*3, 2, seed) {
		if cdr.Day(c.GetStartedAt().AsTime()) == cdr.Day(base) {
			out = append(out, c)
		}
		if len(out) == n {
			break
		}
	}
	return out
}

// A writer stalled between storing a segment and indexing it, while a
// compaction of the partition runs ten minutes on (or a compactor whose
// clock is ahead of the store's): the orphan sweep deletes the unindexed
// segment, then the writer indexes it and acks its messages.
func TestBreak10StalledWriterSegmentDeletedThenIndexed(t *testing.T) {
	set := testSettings()
	set.AckWait = time.Minute // no redelivery during the stall
	r := newRig(t, set)
	put := make(chan string, 1)
	release := make(chan struct{})
	first := true
	r.l.hooks.afterPut = func(key string) {
		if first {
			first = false
			put <- key
			<-release
		}
	}
	r.run(r.l)
	in := b10OneDay("a.example", 20, 101)
	r.publish(in)
	var key string
	select {
	case key = <-put:
	case <-time.After(30 * time.Second):
		t.Fatal("writer never stored a segment")
	}
	// Another policy process compacting the (closed) day, later on.
	c := New(r.d.JS, r.d.Names, r.d.Redis, r.d.CDS, testDomains, testSettings(), testenv.Logger(), nil)
	c.setClock(func() time.Time { return time.Now().Add(11 * time.Minute) })
	if _, err := c.CompactPartition(context.Background(), "a.example", cdr.Day(base)); err != nil {
		t.Fatal(err)
	}
	close(release)
	r.drained()
	if _, err := r.store.Stat(context.Background(), key); err != nil {
		t.Errorf("segment %s, now indexed and its messages acked, is gone: %v", key, err)
	}
	got, err := r.export(system, query("a.example", base, base.AddDate(0, 0, 1)))
	if err != nil {
		t.Fatalf("export of the day fails after the writer acked: %v", err)
	}
	sameCDRs(t, got, sorted(in))
}

// A rewrite of the same messages (a lost ack, redelivered and grouped
// the same) that stores its object between a compaction's swap and its
// removal of the replaced objects, and indexes it after.
func TestBreak10RewriteDuringCompactionLeavesDanglingIndex(t *testing.T) {
	r := newRig(t, testSettings())
	ctx := context.Background()
	day := cdr.Day(base)
	a := b10OneDay("a.example", 30, 102)
	p1, s1 := b10Partition("a.example", day, a[:15], 1)
	p2, s2 := b10Partition("a.example", day, a[15:], 100)
	for _, x := range []struct {
		p *partition
		s []uint64
	}{{p1, s1}, {p2, s2}} {
		if err := r.l.writeSegment(ctx, x.p, x.s); err != nil {
			t.Fatal(err)
		}
	}
	rewrite := SegmentKey("a.example", day, writerName(p1, s1))
	obj, _, err := cdr.Encode("a.example", day, slices.Clone(a[:15]), r.l.set.BlockCDRs, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	r.l.hooks.afterSwap = func(string) {
		// the rewriting writer's Put lands here ...
		if _, err := r.store.Put(ctx, rewrite, bytes.NewReader(obj), SegmentContentType); err != nil {
			t.Error(err)
		}
	}
	if _, err := r.l.CompactPartition(ctx, "a.example", day); err != nil {
		t.Fatal(err)
	}
	r.l.hooks.afterSwap = nil
	// ... and its index script here.
	meta := SegmentMeta{Name: writerName(p1, s1), Count: 15, Bytes: int64(len(obj))}
	h, _, _, _ := cdr.ParseHeader(obj)
	meta.MinStart, meta.MaxStart = h.MinStart, h.MaxStart
	if err := r.l.idx.record(ctx, "a.example", day, meta, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := r.export(system, query("a.example", base, base.AddDate(0, 0, 1))); err != nil {
		t.Fatalf("the day is unreadable: the index names a segment the compaction removed: %v", err)
	}
}

// Rebuild after a crash between storing a segment and indexing it (before
// any compaction swept the leftover): the rebuilt index names the orphan.
func TestBreak10RebuildDiffersFromLiveWithOrphan(t *testing.T) {
	r := newRig(t, testSettings())
	ctx := context.Background()
	day := cdr.Day(base)
	a := b10OneDay("a.example", 40, 103)
	p, s := b10Partition("a.example", day, a, 1)
	if err := r.l.writeSegment(ctx, p, s); err != nil {
		t.Fatal(err)
	}
	// The crashed writer's object: the same CDRs, grouped differently.
	obj, _, err := cdr.Encode("a.example", day, slices.Clone(a[:25]), r.l.set.BlockCDRs, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.store.Put(ctx, SegmentKey("a.example", day, writerName(p, s[:25])), bytes.NewReader(obj), SegmentContentType); err != nil {
		t.Fatal(err)
	}
	// A rebuild before the day's compaction counts the leftover (its
	// CDRs are copies), yet reads return each CDR once.
	if _, err := r.l.RebuildIndex(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := r.export(system, query("a.example", base, base.AddDate(0, 0, 1)))
	if err != nil {
		t.Fatal(err)
	}
	sameCDRs(t, got, sorted(a))
	// The compaction removes the leftover; from then on a rebuild equals
	// the live index.
	r.l.setClock(func() time.Time { return time.Now().AddDate(0, 0, 400) })
	if _, err := r.l.CompactPartition(ctx, "a.example", day); err != nil {
		t.Fatal(err)
	}
	live := indexDump(t, r.d.Redis, r.ns)
	if _, err := r.l.RebuildIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if rebuilt := indexDump(t, r.d.Redis, r.ns); !mapsEqual(live, rebuilt) {
		t.Fatalf("rebuilt index differs from the live one:\nlive    %v\nrebuilt %v", live, rebuilt)
	}
	if n, _, _, _ := r.l.Stat(ctx, "a.example"); n != int64(len(a)) {
		t.Errorf("after compaction %d CDRs counted, want %d", n, len(a))
	}
}

// Two compactions in a row, each stopped between its swap and removing
// what it replaced: rebuild drops the chain only if it happens to visit
// the older compaction before the newer one.
func TestBreak10RebuildCompactionChain(t *testing.T) {
	r := newRig(t, testSettings())
	bg := context.Background()
	day := cdr.Day(base)
	a := b10OneDay("a.example", 30, 104)
	write := func(cs []*cdrv1.Cdr, seq uint64) {
		p, s := b10Partition("a.example", day, cs, seq)
		if err := r.l.writeSegment(bg, p, s); err != nil {
			t.Fatal(err)
		}
	}
	compactStopped := func() {
		ctx, cancel := context.WithCancel(bg)
		defer cancel()
		r.l.hooks.afterSwap = func(string) { cancel() }
		_, _ = r.l.CompactPartition(ctx, "a.example", day)
		r.l.hooks.afterSwap = nil
	}
	write(a[:10], 1)
	write(a[10:20], 100)
	compactStopped()
	write(a[20:], 200)
	compactStopped()
	live := indexDump(t, r.d.Redis, r.ns)
	for i := range 12 {
		if _, err := r.l.RebuildIndex(bg); err != nil {
			t.Fatal(err)
		}
		if rebuilt := indexDump(t, r.d.Redis, r.ns); !mapsEqual(live, rebuilt) {
			t.Fatalf("rebuild %d differs from the live index:\nlive    %v\nrebuilt %v", i, live, rebuilt)
		}
	}
}

// Segment names hash stream sequences only: the same sequences carrying
// other CDRs (a CDR stream recreated, sequences starting again at 1)
// overwrite an existing segment of the partition.
func TestBreak10SameSequencesOverwriteSegment(t *testing.T) {
	r := newRig(t, testSettings())
	ctx := context.Background()
	day := cdr.Day(base)
	a := b10OneDay("a.example", 20, 105)
	p1, s1 := b10Partition("a.example", day, a[:10], 1)
	if err := r.l.writeSegment(ctx, p1, s1); err != nil {
		t.Fatal(err)
	}
	p2, s2 := b10Partition("a.example", day, a[10:], 1)
	if err := r.l.writeSegment(ctx, p2, s2); err != nil {
		t.Fatal(err)
	}
	got, err := r.export(system, query("a.example", base, base.AddDate(0, 0, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(a) {
		t.Fatalf("%d CDRs after writing %d: a segment was overwritten", len(got), len(a))
	}
}

// Poison: garbage and an envelope whose id does not name its CDR reach
// the dead-letter stream with a reason and leave the CDR stream.
func TestBreak10PoisonToDeadLetters(t *testing.T) {
	r := newRig(t, testSettings())
	r.run(r.l)
	good := b10OneDay("a.example", 1, 106)[0]
	env := cdr.ToEvent(good, time.Now(), "test")
	env.Id = "cdr:b.example/" + good.GetId()
	forged, _ := proto.Marshal(env)
	for i, data := range [][]byte{[]byte("not protobuf \xff\xfe"), forged, {}} {
		if _, err := r.d.JS.PublishMsg(context.Background(), &nats.Msg{Subject: r.d.Names.CdrSubject(), Data: data}, jetstream.WithMsgID("poison-"+string(rune('a'+i)))); err != nil {
			t.Fatal(err)
		}
	}
	r.drained()
	s, err := r.d.JS.Stream(context.Background(), r.d.Names.DeadLetterStream())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, _ := s.Info(context.Background(), jetstream.WithSubjectFilter(r.d.Names.DeadLetterSubject(WriterConsumer)))
		if info != nil && info.State.Msgs == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead letters: %+v, want 3", info.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for seq := uint64(1); seq <= 3; seq++ {
		m, err := s.GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(m.Header.Get(bus.HeaderDeadReason), "not a valid CDR event") {
			t.Errorf("dead letter %d without a reason: %v", seq, m.Header)
		}
	}
}

// Export jobs across tenants and users; download before done.
func TestBreak10ExportJobTenancy(t *testing.T) {
	r := newRig(t, testSettings())
	ctx := context.Background()
	q := query("a.example", base, base.AddDate(0, 0, 1))
	admin := auth.Principal{Name: "adm", Level: auth.LevelDomain, Reseller: "r1", Domain: "a.example"}
	u100 := auth.Principal{Name: "u100", Level: auth.LevelUser, Reseller: "r1", Domain: "a.example", User: "100"}
	u101 := auth.Principal{Name: "u101", Level: auth.LevelUser, Reseller: "r1", Domain: "a.example", User: "101"}
	r2 := auth.Principal{Name: "r2", Level: auth.LevelReseller, Reseller: "r2"}
	otherB := auth.Principal{Name: "b", Level: auth.LevelDomain, Reseller: "r1", Domain: "b.example"}
	// a.example under another reseller: same name, other tenant.
	spoof := auth.Principal{Name: "s", Level: auth.LevelDomain, Reseller: "r2", Domain: "a.example"}
	ea, err := r.l.CreateExport(ctx, admin, q, cdrv1.ExportFormat_EXPORT_FORMAT_CSV)
	if err != nil {
		t.Fatal(err)
	}
	eu, err := r.l.CreateExport(ctx, u100, q, cdrv1.ExportFormat_EXPORT_FORMAT_CSV)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		p  auth.Principal
		id string
	}{{u100, ea.GetId()}, {u101, eu.GetId()}, {r2, ea.GetId()}, {otherB, ea.GetId()}, {spoof, ea.GetId()}, {spoof, eu.GetId()}} {
		if _, err := r.l.GetExport(ctx, c.p, c.id); !errors.Is(err, apierr.ErrNotFound) {
			t.Errorf("%v reads export %s: %v", c.p, c.id, err)
		}
		if rc, _, err := r.l.OpenExport(ctx, c.p, c.id); !errors.Is(err, apierr.ErrNotFound) {
			if rc != nil {
				rc.Close()
			}
			t.Errorf("%v opens export %s: %v", c.p, c.id, err)
		}
	}
	if _, _, err := r.l.OpenExport(ctx, admin, ea.GetId()); !errors.Is(err, apierr.ErrConflict) {
		t.Errorf("download before done: %v, want conflict", err)
	}
	for _, p := range []auth.Principal{spoof, r2} {
		if _, err := r.export(p, q); !errors.Is(err, apierr.ErrNotFound) {
			t.Errorf("%v exports a.example: %v", p, err)
		}
	}
	if _, err := r.l.ListPartitions(ctx, spoof, "a.example", ""); !errors.Is(err, apierr.ErrNotFound) {
		t.Errorf("spoof lists partitions: %v", err)
	}
	_ = cds.ErrNotFound
	_ = timestamppb.Now
}

// Dedupe and order across overlapping segments holding copies, both
// directions, with a filter, and bounds at midnight.
func TestBreak10OverlappingCopiesBothOrders(t *testing.T) {
	r := newRig(t, testSettings())
	ctx := context.Background()
	day := cdr.Day(base)
	a := b10OneDay("a.example", 600, 107)
	slices.SortFunc(a, cdr.Less)
	groups := [][]*cdrv1.Cdr{a[:400], a[200:600], a[100:500], a[0:600:600][590:]}
	for i, g := range groups {
		p, s := b10Partition("a.example", day, g, uint64(1+i*1000))
		if err := r.l.writeSegment(ctx, p, s); err != nil {
			t.Fatal(err)
		}
	}
	for _, desc := range []bool{false, true} {
		q := query("a.example", base, base.AddDate(0, 0, 1))
		q.NewestFirst = desc
		got, err := r.export(system, q)
		if err != nil {
			t.Fatal(err)
		}
		want := sorted(a)
		if desc {
			slices.Reverse(want)
		}
		sameCDRs(t, got, want)
		q.User = "101"
		got, err = r.export(system, q)
		if err != nil {
			t.Fatal(err)
		}
		var wu []*cdrv1.Cdr
		for _, c := range want {
			if c.GetUser() == "101" {
				wu = append(wu, c)
			}
		}
		sameCDRs(t, got, wu)
	}
	// A range ending at midnight does not read the next day's CDR at 00:00.
	mk := &cdrv1.Cdr{Id: "at-mid", CallId: "cm", Reseller: "r1", Domain: "a.example", Direction: "inbound", From: "1", To: "2",
		StartedAt: timestamppb.New(base.AddDate(0, 0, 1)), EndedAt: timestamppb.New(base.AddDate(0, 0, 1).Add(time.Second)), DurationS: 1, Disposition: "busy"}
	p, s := b10Partition("a.example", cdr.Day(base.AddDate(0, 0, 1)), []*cdrv1.Cdr{mk}, 9000)
	if err := r.l.writeSegment(ctx, p, s); err != nil {
		t.Fatal(err)
	}
	got, err := r.export(system, query("a.example", base, base.AddDate(0, 0, 1)))
	if err != nil || len(got) != 600 {
		t.Fatalf("[base, midnight): %d, %v", len(got), err)
	}
	got, err = r.export(system, query("a.example", base.AddDate(0, 0, 1), base.AddDate(0, 0, 1).Add(time.Nanosecond)))
	if err != nil || len(got) != 1 {
		t.Fatalf("[midnight, +1ns): %d, %v", len(got), err)
	}
}
