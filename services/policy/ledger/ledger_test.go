package ledger

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/cdr"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/pkg/testenv"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
)

func TestRoundTrip100k(t *testing.T) {
	r := newRig(t, Settings{SegmentCDRs: 8192, FlushAge: 200 * time.Millisecond, AckWait: 5 * time.Second, CompactEvery: time.Hour, ExportWorkers: 1})
	r.run(r.l)
	in := genCDRs("a.example", 100000, 3, 1)
	r.publish(in)
	r.drained()
	want := sorted(in)
	got, err := r.export(system, query("a.example", base, base.AddDate(0, 0, 3)))
	if err != nil {
		t.Fatal(err)
	}
	sameCDRs(t, got, want)
	q := query("a.example", base, base.AddDate(0, 0, 3))
	q.NewestFirst = true
	got, err = r.export(system, q)
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(want)
	sameCDRs(t, got, want)
	n, bytes, segs, err := r.l.Stat(context.Background(), "a.example")
	if err != nil || n != 100000 {
		t.Fatalf("stat = %d CDRs, %v; want 100000", n, err)
	}
	t.Logf("100000 CDRs in %d segments, %d bytes (%.1f bytes per CDR)", segs, bytes, float64(bytes)/100000)
}

func TestQueryFiltersAndTenancy(t *testing.T) {
	r := newRig(t, testSettings())
	r.run(r.l)
	a := genCDRs("a.example", 3000, 2, 2)
	c := genCDRs("c.example", 500, 2, 3)
	r.publish(append(slices.Clone(a), c...))
	r.drained()
	all := query("a.example", base, base.AddDate(0, 0, 2))
	t.Run("window", func(t *testing.T) {
		from, to := base.Add(10*time.Hour), base.Add(30*time.Hour)
		var want []*cdrv1.Cdr
		for _, x := range sorted(a) {
			if at := x.GetStartedAt().AsTime(); !at.Before(from) && at.Before(to) {
				want = append(want, x)
			}
		}
		got, err := r.export(system, query("a.example", from, to))
		if err != nil {
			t.Fatal(err)
		}
		sameCDRs(t, got, want)
	})
	t.Run("number matches either party", func(t *testing.T) {
		num := a[5].GetFrom()
		q := query("a.example", base, base.AddDate(0, 0, 2))
		q.Number = strings.TrimPrefix(num, "+")
		got, err := r.export(system, q)
		if err != nil {
			t.Fatal(err)
		}
		var want []*cdrv1.Cdr
		for _, x := range sorted(a) {
			if x.GetFrom() == num || x.GetTo() == num {
				want = append(want, x)
			}
		}
		if len(want) == 0 {
			t.Fatal("no CDR has the number")
		}
		sameCDRs(t, got, want)
	})
	t.Run("user and call id", func(t *testing.T) {
		q := query("a.example", base, base.AddDate(0, 0, 2))
		q.User, q.CallId = a[7].GetUser(), a[7].GetCallId()
		got, err := r.export(system, q)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].GetId() != a[7].GetId() {
			t.Fatalf("got %d CDRs, want only %s", len(got), a[7].GetId())
		}
	})
	t.Run("tenancy", func(t *testing.T) {
		cases := []struct {
			name string
			p    auth.Principal
			ok   bool
		}{
			{"system", system, true},
			{"reseller of the domain", auth.Principal{Level: auth.LevelReseller, Reseller: "r1"}, true},
			{"domain", auth.Principal{Level: auth.LevelDomain, Reseller: "r1", Domain: "a.example"}, true},
			{"other reseller", auth.Principal{Level: auth.LevelReseller, Reseller: "r2"}, false},
			{"other domain", auth.Principal{Level: auth.LevelDomain, Reseller: "r1", Domain: "b.example"}, false},
			{"same name under another reseller", auth.Principal{Level: auth.LevelDomain, Reseller: "r2", Domain: "a.example"}, false},
		}
		for _, tc := range cases {
			got, err := r.export(tc.p, all)
			if tc.ok && (err != nil || len(got) != len(a)) {
				t.Errorf("%s: %d CDRs, %v; want all %d", tc.name, len(got), err, len(a))
			}
			if !tc.ok && (!errors.Is(err, apierr.ErrNotFound) || len(got) != 0) {
				t.Errorf("%s: %d CDRs, %v; want not found", tc.name, len(got), err)
			}
			if _, err := r.l.CreateExport(context.Background(), tc.p, all, cdrv1.ExportFormat_EXPORT_FORMAT_CSV); tc.ok != (err == nil) {
				t.Errorf("%s: create export: %v", tc.name, err)
			}
			if _, err := r.l.ListPartitions(context.Background(), tc.p, "a.example", ""); tc.ok != (err == nil) {
				t.Errorf("%s: list partitions: %v", tc.name, err)
			}
		}
		user := auth.Principal{Level: auth.LevelUser, Reseller: "r1", Domain: "a.example", User: "101"}
		got, err := r.export(user, all)
		if err != nil || len(got) == 0 {
			t.Fatalf("user token: %d, %v", len(got), err)
		}
		for _, x := range got {
			if x.GetUser() != "101" {
				t.Fatalf("user token saw user %s's call", x.GetUser())
			}
		}
		q := query("a.example", base, base.AddDate(0, 0, 2))
		q.User = "100"
		if _, err := r.export(user, q); !errors.Is(err, apierr.ErrNotFound) {
			t.Errorf("user token asking for another user: %v, want not found", err)
		}
		// Another tenant's export is not found, not forbidden.
		e, err := r.l.CreateExport(context.Background(), system, all, cdrv1.ExportFormat_EXPORT_FORMAT_CSV)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.l.GetExport(context.Background(), auth.Principal{Level: auth.LevelReseller, Reseller: "r2"}, e.GetId()); !errors.Is(err, apierr.ErrNotFound) {
			t.Errorf("other reseller reading an export: %v", err)
		}
		if _, _, err := r.l.OpenExport(context.Background(), user, e.GetId()); !errors.Is(err, apierr.ErrNotFound) {
			t.Errorf("user token opening a domain export: %v", err)
		}
	})
	t.Run("bad queries name the field", func(t *testing.T) {
		for field, q := range map[string]*cdrv1.Query{
			"domain": query("A B", base, base.Add(time.Hour)),
			"to":     query("a.example", base, base),
			"number": {Domain: "a.example", From: timestamppb.New(base), To: timestamppb.New(base.Add(time.Hour)), Number: "12 34; x"},
			"from":   {Domain: "a.example", To: timestamppb.New(base)},
		} {
			_, err := r.export(system, q)
			var v *apierr.ValidationError
			if !errors.As(err, &v) || v.Violations[0].Field != field {
				t.Errorf("%s: %v", field, err)
			}
		}
	})
}

func TestLateAndOutOfOrderLandInTheirDay(t *testing.T) {
	r := newRig(t, testSettings())
	r.run(r.l)
	mk := func(id string, start time.Time) *cdrv1.Cdr {
		return &cdrv1.Cdr{Id: id, CallId: "c-" + id, Reseller: "r1", Domain: "b.example", Direction: "inbound", From: "+15550001", To: "200",
			StartedAt: timestamppb.New(start), EndedAt: timestamppb.New(start.Add(time.Minute)), DurationS: 60, Disposition: "busy"}
	}
	midnight := base.AddDate(0, 0, 1)
	batch := []*cdrv1.Cdr{
		mk("late-40d", base.AddDate(0, 0, -40)),
		mk("before-midnight", midnight.Add(-time.Millisecond)),
		mk("at-midnight", midnight),
		mk("next", midnight.Add(5*time.Hour)),
		mk("first", base.Add(time.Hour)),
	}
	r.publish(batch)
	r.drained()
	// A day already compacted takes a late CDR as a new segment.
	r.l.setClock(func() time.Time { return time.Now().AddDate(0, 0, 400) })
	if _, err := r.l.CompactPartition(context.Background(), "b.example", cdr.Day(base)); err != nil {
		t.Fatal(err)
	}
	r.publish([]*cdrv1.Cdr{mk("very-late", base.Add(2*time.Hour))})
	r.drained()
	wantDays := map[string][]string{
		cdr.Day(base.AddDate(0, 0, -40)): {"late-40d"},
		cdr.Day(base):                    {"first", "very-late", "before-midnight"},
		cdr.Day(midnight):                {"at-midnight", "next"},
	}
	parts, err := r.l.ListPartitions(context.Background(), system, "b.example", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != len(wantDays) {
		t.Fatalf("partitions %v, want the days %v", parts, wantDays)
	}
	for i, p := range parts {
		if i > 0 && parts[i-1].GetDay() >= p.GetDay() {
			t.Errorf("partitions not oldest first: %v", parts)
		}
		start, _ := cdr.ParseDay(p.GetDay())
		got, err := r.export(system, query("b.example", start, start.Add(24*time.Hour)))
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, c := range got {
			ids = append(ids, c.GetId())
		}
		if !slices.Equal(ids, wantDays[p.GetDay()]) {
			t.Errorf("day %s holds %v, want %v", p.GetDay(), ids, wantDays[p.GetDay()])
		}
	}
	before, err := r.l.ListPartitions(context.Background(), system, "b.example", cdr.Day(base))
	if err != nil || len(before) != 1 || before[0].GetDay() != cdr.Day(base.AddDate(0, 0, -40)) {
		t.Errorf("partitions before %s: %v, %v", cdr.Day(base), before, err)
	}
}

// indexDump is every index key of the namespace with its content.
func indexDump(t *testing.T, rdb redis.UniversalClient, ns string) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	keys, err := testenv.Keys(ctx, rdb, ns+":{*}:cdr*")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if strings.Contains(k, "cdrexport") {
			continue
		}
		switch rdb.Type(ctx, k).Val() {
		case "hash":
			m := rdb.HGetAll(ctx, k).Val()
			var f []string
			for kk, v := range m {
				f = append(f, kk+"="+v)
			}
			slices.Sort(f)
			out[k] = strings.Join(f, ",")
		case "zset":
			out[k] = strings.Join(rdb.ZRange(ctx, k, 0, -1).Val(), ",")
		}
	}
	return out
}

func TestCompactionAndRebuild(t *testing.T) {
	r := newRig(t, testSettings())
	r.run(r.l)
	in := genCDRs("a.example", 6000, 2, 4)
	// Some CDRs twice: a redelivery after a lost ack writes them again.
	r.publish(in)
	r.drained()
	// The stream's duplicate window drops exact repeats, so the copies
	// are written past it, as a segment of their own.
	dup := in[:1500]
	day := cdr.Day(base)
	var copies []*cdrv1.Cdr
	for _, c := range dup {
		if cdr.Day(c.GetStartedAt().AsTime()) == day {
			copies = append(copies, c)
		}
	}
	p := &partition{domain: "a.example", day: day, cdrs: map[uint64]*cdrv1.Cdr{}}
	var seqs []uint64
	for i, c := range copies {
		p.cdrs[uint64(1e9+i)] = c
		seqs = append(seqs, uint64(1e9+i))
	}
	if err := r.l.writeSegment(context.Background(), p, seqs); err != nil {
		t.Fatal(err)
	}
	n, _, segsBefore, _ := r.l.Stat(context.Background(), "a.example")
	if n != int64(6000+len(copies)) {
		t.Fatalf("stat %d CDRs before compaction, want %d", n, 6000+len(copies))
	}
	want := sorted(in)
	got, err := r.export(system, query("a.example", base, base.AddDate(0, 0, 2)))
	if err != nil {
		t.Fatal(err)
	}
	sameCDRs(t, got, want) // copies are sent once

	live := indexDump(t, r.d.Redis, r.ns)
	if _, err := r.l.RebuildIndex(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rebuilt := indexDump(t, r.d.Redis, r.ns); !mapsEqual(live, rebuilt) {
		t.Fatalf("rebuilt index differs from the live one:\nlive    %v\nrebuilt %v", live, rebuilt)
	}

	r.l.setClock(func() time.Time { return time.Now().AddDate(0, 0, 400) })
	done, err := r.l.CompactDue(context.Background())
	if err != nil || done != 2 {
		t.Fatalf("CompactDue = %d, %v; want both days", done, err)
	}
	n, _, segs, _ := r.l.Stat(context.Background(), "a.example")
	if n != 6000 || segs != 2 {
		t.Fatalf("after compaction: %d CDRs in %d segments (from %d), want 6000 in 2", n, segs, segsBefore)
	}
	got, err = r.export(system, query("a.example", base, base.AddDate(0, 0, 2)))
	if err != nil {
		t.Fatal(err)
	}
	sameCDRs(t, got, want)
	objects := 0
	if err := r.store.(cds.Lister).List(context.Background(), "cdr/a.example/", func(cds.Object) error { objects++; return nil }); err != nil {
		t.Fatal(err)
	}
	if objects != 2 {
		t.Errorf("%d segment objects after compaction, want the 2 compacted ones", objects)
	}
	live = indexDump(t, r.d.Redis, r.ns)
	if _, err := r.l.RebuildIndex(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rebuilt := indexDump(t, r.d.Redis, r.ns); !mapsEqual(live, rebuilt) {
		t.Fatalf("rebuilt index after compaction differs:\nlive    %v\nrebuilt %v", live, rebuilt)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// runChild is a writer in its own process that stops at a point of a
// flush and waits there to be killed.
func runChild(ns, stop string) int {
	ctx := context.Background()
	log := testenv.Logger()
	nc, js, err := platform.ConnectNATS(ctx, os.Getenv("CALLVAULT_TEST_NATS_URL"), "child", log)
	if err != nil {
		return 2
	}
	defer nc.Close()
	rdb, err := platform.ConnectRedis(ctx, os.Getenv("CALLVAULT_TEST_REDIS_URL"))
	if err != nil {
		return 2
	}
	store, err := cds.NewS3(cds.S3Config{Endpoint: os.Getenv("CALLVAULT_TEST_S3_ENDPOINT"), Region: "us-east-1", Bucket: "cv-" + ns,
		AccessKey: os.Getenv("CALLVAULT_TEST_S3_ACCESS_KEY"), SecretKey: os.Getenv("CALLVAULT_TEST_S3_SECRET_KEY"), PathStyle: true})
	if err != nil {
		return 2
	}
	names, _ := bus.NewNames(ns)
	l := New(js, names, rdb, store, testDomains, testSettings(), log, nil)
	halt := func(at string) func(string) {
		return func(key string) {
			if stop == at {
				os.Stdout.WriteString("STOPPED " + key + "\n")
				select {}
			}
		}
	}
	l.hooks.afterPut, l.hooks.afterIndex = halt("put"), halt("index")
	_ = l.runWriter(ctx)
	return 0
}

func TestKilledMidFlushLosesAndDuplicatesNothing(t *testing.T) {
	for _, stop := range []string{"put", "index"} {
		t.Run("killed after "+stop, func(t *testing.T) {
			r := newRig(t, testSettings())
			in := genCDRs("a.example", 5000, 1, 5)
			r.publish(in)
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), "CV_LEDGER_CHILD_NS="+r.ns, "CV_LEDGER_CHILD_STOP="+stop)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(out).ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "STOPPED ") {
				_ = cmd.Process.Kill()
				t.Fatalf("child: %q, %v", line, err)
			}
			if err := cmd.Process.Kill(); err != nil { // SIGKILL
				t.Fatal(err)
			}
			_ = cmd.Wait()
			key := strings.TrimSpace(strings.TrimPrefix(line, "STOPPED "))
			if _, err := r.store.Stat(context.Background(), key); err != nil {
				t.Fatalf("the segment stored before the kill: %v", err)
			}
			r.run(r.l)
			r.drained()
			got, err := r.export(system, query("a.example", base, base.AddDate(0, 0, 1)))
			if err != nil {
				t.Fatal(err)
			}
			sameCDRs(t, got, sorted(in))
			r.l.setClock(func() time.Time { return time.Now().AddDate(0, 0, 400) })
			if _, err := r.l.CompactDue(context.Background()); err != nil {
				t.Fatal(err)
			}
			if n, _, _, _ := r.l.Stat(context.Background(), "a.example"); n != 5000 {
				t.Errorf("after compaction the index counts %d CDRs, want 5000", n)
			}
			objects := 0
			_ = r.store.(cds.Lister).List(context.Background(), "cdr/", func(cds.Object) error { objects++; return nil })
			if objects != 1 {
				t.Errorf("%d segment objects after compaction, want 1 (the crash's leftovers removed)", objects)
			}
		})
	}
}

func TestExportMemoryIsFlat(t *testing.T) {
	r := newRig(t, testSettings())
	const total = 1000000
	// Segments written directly: this measures reading, not ingest.
	day := base
	seq := uint64(0)
	for written := 0; written < total; {
		p := &partition{domain: "c.example", day: cdr.Day(day), cdrs: map[uint64]*cdrv1.Cdr{}}
		var seqs []uint64
		batch := genCDRs("c.example", 8192, 1, seq+100)
		for i, c := range batch {
			c.StartedAt = timestamppb.New(day.Add(time.Duration(written+i) * 80 * time.Millisecond))
			c.EndedAt = timestamppb.New(c.GetStartedAt().AsTime().Add(time.Duration(c.GetDurationS()) * time.Second))
			if c.AnsweredAt != nil {
				c.AnsweredAt = c.StartedAt
			}
			seq++
			p.cdrs[seq] = c
			seqs = append(seqs, seq)
		}
		if err := r.l.writeSegment(context.Background(), p, seqs); err != nil {
			t.Fatal(err)
		}
		written += len(batch)
	}
	measure := func(rows int) (int64, uint64) {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		floor := ms.HeapAlloc
		var peak uint64
		var n int64
		to := day.Add(time.Duration(rows) * 80 * time.Millisecond)
		err := r.l.Export(context.Background(), system, query("c.example", day, to), func(cs []*cdrv1.Cdr) error {
			n += int64(len(cs))
			if n%(64*ExportBatch) == 0 {
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapAlloc)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if peak < floor {
			return n, 0
		}
		return n, peak - floor
	}
	n1, small := measure(100000)
	n2, large := measure(total)
	if n1 != 100000 || n2 < total {
		t.Fatalf("exported %d and %d rows", n1, n2)
	}
	t.Logf("heap above the floor: %d KiB at 100k rows, %d KiB at %d rows", small>>10, large>>10, n2)
	// Ten times the rows may not take ten times the memory: flat means
	// bounded by a few blocks, whatever the row count.
	if large > 3*small+(16<<20) {
		t.Errorf("export heap grew with the rows: %d KiB at 100k, %d KiB at 1M", small>>10, large>>10)
	}
}
