package catalog_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/testenv"
)

// dumpNS reads every key of ns with its type and value, the namespace cut
// from the key names.
func dumpNS(t *testing.T, rdb redis.UniversalClient, ns string) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	all, err := testenv.Keys(ctx, rdb, ns+":*")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range all {
		typ, err := rdb.Type(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		var v any
		switch typ {
		case "hash":
			v, err = rdb.HGetAll(ctx, k).Result()
		case "zset":
			v, err = rdb.ZRangeWithScores(ctx, k, 0, -1).Result()
		case "set":
			var m []string
			m, err = rdb.SMembers(ctx, k).Result()
			slices.Sort(m)
			v = m
		case "string":
			v, err = rdb.Get(ctx, k).Result()
			if ttl, _ := rdb.TTL(ctx, k).Result(); ttl > 0 {
				v = fmt.Sprintf("%v (expires)", v)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimPrefix(k, ns)] = typ + " " + fmt.Sprint(v)
	}
	return out
}

// recordedWorkload is a stream of recorded decisions across three
// domains: recordings, voicemails with a cap eviction, a refusal, a
// deletion of an artifact decided earlier in the same batch and one of an
// artifact decided in an earlier batch, and a deletion of an unknown id.
func recordedWorkload(c *catalog.Catalog) [][]catalog.Recorded {
	adm := func(a catalog.Artifact, evicted string) catalog.Recorded {
		return catalog.Recorded{Op: catalog.OpAdmission, Admission: catalog.Admission{Artifact: a, EvictedID: evicted}}
	}
	del := func(domain, id string, at time.Time) catalog.Recorded {
		return catalog.Recorded{Op: catalog.OpDeletion, Deletion: catalog.Deletion{Domain: domain, ID: id, At: at, Reason: "expired", Rule: "12 months", Actor: "culler"}}
	}
	vm := func(domain, id string, at time.Time) catalog.Artifact {
		return c.MessageArtifact(catalog.Message{
			ID: id, Reseller: "r1", Domain: domain, User: "101", Kind: "voicemail", ReceivedAt: at, From: "+1555", To: "+1556",
			Size: 40, SHA256: "ab", ObjectKey: "messages/" + domain + "/" + id, ContentType: "audio/wav", AcceptedAt: at, StreamSeq: 9,
		})
	}
	var first, second []catalog.Recorded
	for i := 0; i < 30; i++ {
		d := fmt.Sprintf("d%d.example", i%3)
		first = append(first, adm(c.RecordingArtifact(rec(d, fmt.Sprintf("r%02d", i), "10"+fmt.Sprint(i%2), fmt.Sprintf("call-%d", i/2), base.Add(time.Duration(i)*time.Minute), int64(100+i))), ""))
	}
	first = append(first,
		adm(vm("d0.example", "vm1", base), ""),
		adm(vm("d0.example", "vm2", base.Add(time.Minute)), ""),
		adm(vm("d0.example", "vm3", base.Add(2*time.Minute)), "vm1"),
		catalog.Recorded{Op: catalog.OpRefusal, Refusal: catalog.Refusal{Domain: "d1.example", ID: "big", Kind: catalog.KindRecording, ObjectKey: "recordings/big", Reason: "monthly_cap", Size: 9, Seq: 40, AcceptedAt: base}},
		del("d2.example", "r02", base.Add(time.Hour)),
		del("d0.example", "vm2", base.Add(time.Hour)),
		catalog.Recorded{Op: catalog.OpRefusal, Refusal: catalog.Refusal{Domain: "d2.example", ID: "big2", Kind: catalog.KindRecording, ObjectKey: "recordings/d2.example/2026/01/02/big2-a1b2c3d4e5f6", Reason: "monthly_cap", Size: 9, Seq: 41, AcceptedAt: base}},
		del("d2.example", "big2", base.Add(time.Hour)),
		adm(c.RecordingArtifact(rec("d2.example", "r99", "101", "call-99", base, 7)), ""),
	)
	second = append(second,
		del("d1.example", "r04", base.Add(2*time.Hour)),
		del("d1.example", "never", base.Add(2*time.Hour)),
		del("d1.example", "big", base.Add(2*time.Hour)),
		adm(c.RecordingArtifact(rec("d1.example", "r40", "101", "call-40", base, 5)), ""),
	)
	return [][]catalog.Recorded{first, second}
}

// TestApplyRecordedEqualsOneByOne applies the same recorded decisions in
// batches and one at a time through ApplyAdmissions, ApplyRefusals and
// ApplyDeleted: Redis holds the same keys and values. Applying the
// batches again changes nothing.
func TestApplyRecordedEqualsOneByOne(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	nsA, nsB := testenv.Namespace(t), testenv.Namespace(t)
	rdbA, rdbB := testenv.Redis(t, nsA), testenv.Redis(t, nsB)
	batched, single := catalog.New(rdbA, nsA), catalog.New(rdbB, nsB)

	for _, b := range recordedWorkload(batched) {
		if err := batched.ApplyRecorded(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range recordedWorkload(single) {
		for _, r := range b {
			var err error
			switch r.Op {
			case catalog.OpAdmission:
				err = single.ApplyAdmissions(ctx, []catalog.Admission{r.Admission})
			case catalog.OpRefusal:
				err = single.ApplyRefusals(ctx, []catalog.Refusal{r.Refusal})
			case catalog.OpDeletion:
				d := r.Deletion
				err = single.ApplyDeleted(ctx, d.Domain, d.ID, d.At, d.Reason, d.Rule, d.Actor)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	want := dumpNS(t, rdbB, nsB)
	check := func(when string) {
		t.Helper()
		got := dumpNS(t, rdbA, nsA)
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s = %q, one by one %q", when, k, got[k], v)
			}
		}
		for k, v := range got {
			if _, ok := want[k]; !ok {
				t.Errorf("%s: %s = %q only in the batched catalog", when, k, v)
			}
		}
	}
	check("batched")
	for _, state := range []struct {
		domain, id string
		want       catalog.State
	}{{"d0.example", "vm1", catalog.StateDeleted}, {"d2.example", "r02", catalog.StateDeleted}, {"d1.example", "r04", catalog.StateDeleted}, {"d1.example", "big", catalog.StateRefused}, {"d0.example", "vm3", catalog.StateAdmitted},
		{"d0.example", "vm2", catalog.StateDeleted}, {"d2.example", "big2", catalog.StateRefused}} {
		r, err := batched.Record(ctx, state.domain, state.id)
		if err != nil || r.State != state.want {
			t.Errorf("%s/%s: state %q (%v), want %q", state.domain, state.id, r.State, err, state.want)
		}
	}

	for _, b := range recordedWorkload(batched) {
		if err := batched.ApplyRecorded(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	check("applied twice")
}
