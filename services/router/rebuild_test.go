package router_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/callvault/callvault/pkg/testenv"
)

// routerState dumps every key the router owns, leaving out what is
// operational rather than recorded: the change lock, the restore marker,
// drainer leases, a configuration's latest success and error (which of its
// attempts came last is timing), and when each parked job is due. What
// each wait says (its own last error) is kept.
func (rg *rig) routerState(ctx context.Context) map[string]string {
	rg.t.Helper()
	ns := rg.d.Names.Namespace()
	var keys []string
	for _, pattern := range []string{ns + ":{_archive}:*", ns + ":{*}:arch*"} {
		k, err := testenv.Keys(ctx, rg.d.Redis, pattern)
		if err != nil {
			rg.t.Fatal(err)
		}
		keys = append(keys, k...)
	}
	out := map[string]string{}
	for _, k := range slices.Compact(slices.Sorted(slices.Values(keys))) {
		name := strings.TrimPrefix(k, ns+":")
		switch {
		case name == "{_archive}:lock", name == "{_archive}:built", name == "{_archive}:leases":
			continue
		}
		typ, err := rg.d.Redis.Type(ctx, k).Result()
		if err != nil {
			rg.t.Fatal(err)
		}
		switch typ {
		case "hash":
			m, err := rg.d.Redis.HGetAll(ctx, k).Result()
			if err != nil {
				rg.t.Fatal(err)
			}
			for f, v := range m {
				if strings.HasPrefix(name, "{_archive}:status:") && (f == "ok_at" || f == "err_at" || f == "err") {
					continue // the latest success and error: which came last is timing
				}
				if name == "{_archive}:jobs" {
					v = "(a decision)" // the same decision, encoded once by the stream and once by the restore
				}
				out[name+" "+f] = v
			}
		case "set":
			m, err := rg.d.Redis.SMembers(ctx, k).Result()
			if err != nil {
				rg.t.Fatal(err)
			}
			sort.Strings(m)
			out[name] = strings.Join(m, ",")
		case "zset":
			m, err := rg.d.Redis.ZRange(ctx, k, 0, -1).Result()
			if err != nil {
				rg.t.Fatal(err)
			}
			sort.Strings(m)
			out[name] = strings.Join(m, ",") // members only: due times are operational
		default:
			out[name] = "type " + typ
		}
	}
	return out
}

// TestRestoreEqualsLive: a history with configurations created, changed
// and deleted, recordings archived (plain, encrypted, to SFTP), one not
// archived and two waiting for a failing configuration is recorded live;
// then the router's keys are deleted and a restart restores them from the
// streams. Every key the router keeps is the same, but for what is
// operational (leases, times, due times).
func TestRestoreEqualsLive(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	ctx := context.Background()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	plain := rg.bucket(false)
	A := rg.createPair(aDomain)(rg.s3Pair(t, "A", "domain", "a.example", plain))
	ec, es := rg.s3Pair(t, "E", "domain", "b.example", rg.bucket(false))
	ec.AgeRecipient = id.Recipient().String()
	rg.create(bDomain, ec, es)
	sc, ss, _ := sftpConfig(t, "S", "reseller", "r1")
	sc.PathTemplate = "{domain}/{recording_id}.{ext}"
	S := rg.create(r1, sc, ss)
	failing := rg.createPair(cDomain)(rg.s3Pair(t, "F", "domain", "c.example", bucketName(t)))
	gone := rg.createPair(system)(rg.s3Pair(t, "G", "system", "", plain))
	// Changes: A renamed, G deleted.
	ac, _ := rg.svc.GetConfig(ctx, system, A.GetId())
	ac.Name = "A renamed"
	if _, _, err := rg.svc.UpdateConfig(ctx, system, ac, nil); err != nil {
		t.Fatal(err)
	}
	if err := rg.svc.DeleteConfig(ctx, system, gone.GetId()); err != nil {
		t.Fatal(err)
	}
	for _, r := range []recording{
		{id: "rec-a", domain: "a.example", reseller: "r1", body: randomBytes(3000)},
		{id: "rec-b", domain: "b.example", reseller: "r1", body: randomBytes(3000)},
		{id: "rec-d", domain: "d.example", reseller: "r1", body: randomBytes(3000)},
		{id: "rec-z", domain: "d.example", reseller: "r9", body: randomBytes(10)},
		{id: "rec-c1", domain: "c.example", reseller: "r2", body: randomBytes(10)},
		{id: "rec-c2", domain: "c.example", reseller: "r2", body: randomBytes(11)},
	} {
		rg.admit(r)
	}
	for _, x := range [][3]string{{"a.example", "rec-a", "archived"}, {"b.example", "rec-b", "archived"}, {"d.example", "rec-d", "archived"}, {"d.example", "rec-z", "not_archived"}} {
		rg.waitState(x[0], x[1], x[2])
	}
	parked := rg.d.Names.Namespace() + ":{_archive}:parked"
	testenv.WaitFor(t, "both c.example recordings parked", func() bool {
		n, _ := rg.d.Redis.ZCard(ctx, parked).Result()
		return n == 2 && rg.status(failing.GetId()).GetWaiting() == 2
	})
	if st := rg.state("d.example", "rec-d"); st.GetConfigId() != S.GetId() {
		t.Fatalf("rec-d went to %s, want the reseller's SFTP", st.GetConfigId())
	}
	rg.stop()
	live := rg.routerState(ctx)

	var keys []string
	for _, pattern := range []string{rg.d.Names.Namespace() + ":{_archive}:*", rg.d.Names.Namespace() + ":{*}:arch*"} {
		k, err := testenv.Keys(ctx, rg.d.Redis, pattern)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k...)
	}
	if err := rg.d.Redis.Del(ctx, keys...).Err(); err != nil {
		t.Fatal(err)
	}
	rg.start()
	// The waiting work is parked again at once; its wait (and error) is
	// recorded again when the drainer tries the failing target.
	testenv.WaitFor(t, "the waits recorded again", func() bool {
		st, err := rg.svc.Status(ctx, system, failing.GetId())
		return err == nil && st.GetWaiting() == 2
	})
	rg.stop()
	restored := rg.routerState(ctx)
	var diffs []string
	for k, v := range live {
		if restored[k] != v {
			diffs = append(diffs, fmt.Sprintf("%s: live %.80q, restored %.80q", k, v, restored[k]))
		}
	}
	for k, v := range restored {
		if _, ok := live[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: only after the restore: %.80q", k, v))
		}
	}
	sort.Strings(diffs)
	for _, d := range diffs {
		t.Error(d)
	}
	if len(live) < 15 {
		t.Fatalf("the live state has only %d entries: the comparison proves little: %v", len(live), live)
	}
}
