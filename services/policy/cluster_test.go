package policy_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/pkg/testenv"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
	"github.com/callvault/callvault/services/policy"
)

// clusterEvents are built once, so both runs admit identical events.
type clusterEvents struct {
	envs []*eventv1.Envelope
}

func newClusterEvents() clusterEvents {
	accepted := timestamppb.New(time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC))
	recent := time.Date(2026, 11, 10, 9, 0, 0, 0, time.UTC)
	old := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	rec := func(id, domain, user string, at time.Time) *eventv1.Envelope {
		return &eventv1.Envelope{
			Id: id, AcceptedAt: accepted, Source: "test",
			Tenant: &eventv1.Tenant{Reseller: "r1", Domain: domain, User: user},
			Body: &eventv1.Envelope_Recording{Recording: &eventv1.RecordingStored{
				CallId: "call-" + id, Mode: eventv1.RecordingMode_RECORDING_MODE_AUTOMATIC, StartedAt: timestamppb.New(at), DurationS: 10,
				Media: &eventv1.MediaObject{Key: "recordings/" + domain + "/" + id, SizeBytes: 1000, Sha256: "ab12", ContentType: "audio/wav"},
			}},
		}
	}
	msg := func(id, domain, user string, kind eventv1.DataKind, folder eventv1.MessageFolder, at time.Time) *eventv1.Envelope {
		env := messageEvent(id, domain, user, kind, folder, at)
		env.AcceptedAt = accepted
		return env
	}
	var e clusterEvents
	add := func(env *eventv1.Envelope) { e.envs = append(e.envs, env) }
	for i, u := range []string{"101", "102", "101", "103"} {
		at := recent
		if i%2 == 0 {
			at = old
		}
		add(rec(fmt.Sprintf("a-rec-%d", i), "a.example", u, at.Add(time.Duration(i)*time.Minute)))
	}
	for i := range 3 {
		add(msg(fmt.Sprintf("b-vm-%d", i), "b.example", "101", vmKind, eventv1.MessageFolder_MESSAGE_FOLDER_UNSPECIFIED, old.Add(time.Duration(i)*time.Hour)))
	}
	for _, u := range []string{"200", "201"} {
		for i := range 3 {
			add(msg(fmt.Sprintf("c-sms-%s-%d", u, i), "c.example", u, eventv1.DataKind_DATA_KIND_SMS, eventv1.MessageFolder_MESSAGE_FOLDER_INBOX, old.Add(time.Duration(i)*time.Hour)))
		}
	}
	for i := range 3 {
		add(rec(fmt.Sprintf("d-rec-%d", i), "d.example", "300", recent.Add(time.Duration(i)*time.Minute)))
	}
	add(rec("a-rec-0", "d.example", "300", recent)) // an id a.example owns
	return e
}

// clusterRun is what one backend made of the scenario: every decision and
// deletion outcome, and the catalog's keys before and after a rebuild.
type clusterRun struct {
	outcomes      []string
	live, rebuilt map[string]string
}

// runClusterScenario admits, evicts, deletes and rebuilds on d.
func runClusterScenario(t *testing.T, d *platform.Deps, svc *policy.Service, ev clusterEvents) clusterRun {
	t.Helper()
	ctx := context.Background()
	cat := catalog.New(d.Redis, d.Names.Namespace())
	for _, dom := range []string{"a.example", "b.example", "c.example", "d.example"} {
		if _, _, err := svc.ProvisionDomain(ctx, auth.Principal{Name: "ops", Level: auth.LevelSystem}, dom, "r1"); err != nil {
			t.Fatal(err)
		}
	}
	setOv := func(o *policyv1.Override) {
		t.Helper()
		if _, err := svc.SetOverride(ctx, system, o); err != nil {
			t.Fatal(err)
		}
	}
	setOv(ov(vmKind, policyv1.Level_LEVEL_DOMAIN, "", "b.example", "", boxCap(2)))
	setOv(ov(eventv1.DataKind_DATA_KIND_SMS, policyv1.Level_LEVEL_DOMAIN, "", "c.example", "", &policyv1.PolicyFields{
		Cap: &policyv1.Cap{Limit: 2, Action: policyv1.CapAction_CAP_ACTION_EVICT_OLDEST, Scope: policyv1.CapScope_CAP_SCOPE_USER_FOLDER}}))
	setOv(ov(auto, policyv1.Level_LEVEL_DOMAIN, "", "d.example", "", &policyv1.PolicyFields{
		Cap: &policyv1.Cap{Limit: 2, Action: policyv1.CapAction_CAP_ACTION_REFUSE, Scope: policyv1.CapScope_CAP_SCOPE_ACCOUNT_MONTH}}))
	if _, err := svc.PlaceHold(ctx, system, holdOn("c.example", "201", "", "dispute")); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.PlaceHold(ctx, system, holdOn("a.example", "103", "", "dispute")); err != nil {
		t.Fatal(err)
	}

	var run clusterRun
	for i, env := range ev.envs {
		stored(t, d, env)
		if err := svc.Admit(ctx, env, uint64(i+1)); err != nil {
			t.Fatalf("admit %s: %v", env.GetId(), err)
		}
		rec, err := cat.Record(ctx, env.GetTenant().GetDomain(), env.GetId())
		if err != nil {
			t.Fatal(err)
		}
		run.outcomes = append(run.outcomes, fmt.Sprintf("%s/%s: %s %s evicted=%s", env.GetTenant().GetDomain(), env.GetId(), rec.State, rec.Reason, rec.EvictedID))
	}
	for _, del := range []struct {
		domain, id string
		explicit   bool
	}{
		{"a.example", "a-rec-0", false}, // old: past its minimum
		{"a.example", "a-rec-1", false}, // recent: within its minimum
		{"a.example", "a-rec-1", true},  // an admin's deletion
		{"a.example", "a-rec-3", true},  // user 103 is held
		{"a.example", "a-rec-0", false}, // again
		{"b.example", "b-vm-0", true},
		{"a.example", "nothing", false},
	} {
		res, err := svc.Delete(ctx, policy.DeleteRequest{Domain: del.domain, ID: del.id, Explicit: del.explicit, Reason: "test", Rule: "cluster", Actor: "culler"})
		if err != nil {
			t.Fatalf("delete %s: %v", del.id, err)
		}
		run.outcomes = append(run.outcomes, fmt.Sprintf("delete %s/%s explicit=%v: %s", del.domain, del.id, del.explicit, res.Outcome))
	}
	// After the deletion a voicemail fits the box again.
	late := messageEvent("b-vm-late", "b.example", "101", vmKind, eventv1.MessageFolder_MESSAGE_FOLDER_UNSPECIFIED, time.Date(2026, 11, 19, 0, 0, 0, 0, time.UTC))
	late.AcceptedAt = ev.envs[0].GetAcceptedAt()
	if err := svc.Admit(ctx, stored(t, d, late), uint64(len(ev.envs)+1)); err != nil {
		t.Fatal(err)
	}
	rec, err := cat.Record(ctx, "b.example", "b-vm-late")
	if err != nil {
		t.Fatal(err)
	}
	run.outcomes = append(run.outcomes, fmt.Sprintf("b.example/b-vm-late: %s %s", rec.State, rec.Reason))

	run.live = catalogDump(t, d)
	keys, err := testenv.Keys(ctx, d.Redis, d.Names.Namespace()+":*")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := d.Redis.Del(ctx, k).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svc.Rebuild(ctx); err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	run.rebuilt = catalogDump(t, d)
	return run
}

// catalogDump reads every catalog key of d's namespace, by type, with the
// namespace cut off. Holds, overrides, tokens and the applied marks carry
// random ids and wall-clock times, so they are left out.
func catalogDump(t *testing.T, d *platform.Deps) map[string]string {
	t.Helper()
	ctx := context.Background()
	ns := d.Names.Namespace()
	keys, err := testenv.Keys(ctx, d.Redis, ns+":*")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, k := range keys {
		name := strings.TrimPrefix(k, ns)
		if strings.Contains(name, ":holds") || strings.Contains(name, ":policy") || strings.Contains(name, ":token") || name == ":applied" {
			continue
		}
		typ, err := d.Redis.Type(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		var val string
		switch typ {
		case "hash":
			m, err := d.Redis.HGetAll(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			var fs []string
			for f, v := range m {
				if rec, ok := catalog.Describe(v); ok && (strings.Contains(name, ":h:") || strings.HasSuffix(name, ":refused")) {
					v = "{" + rec + "}"
				}
				fs = append(fs, fmt.Sprintf("%q", f)+"="+v)
			}
			slices.Sort(fs)
			val = strings.Join(fs, " ")
		case "zset":
			zs, err := d.Redis.ZRangeWithScores(ctx, k, 0, -1).Result()
			if err != nil {
				t.Fatal(err)
			}
			val = fmt.Sprint(zs)
		case "set":
			m, err := d.Redis.SMembers(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(m)
			val = strings.Join(m, " ")
		case "string":
			val, err = d.Redis.Get(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
		default:
			val = "type " + typ
		}
		out[name] = typ + ": " + val
	}
	return out
}

// withoutDeletionTimes drops what the clock wrote, so it differs between
// two runs: deletion times of artifact records (dt, the last field a
// described record shows) and provisioning times.
func withoutDeletionTimes(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		if k == ":{domains}:meta" { // when each run provisioned its domains
			continue
		}
		var kept []string
		for _, f := range strings.Split(v, " ") {
			if !strings.HasPrefix(f, "dt=") {
				kept = append(kept, f)
			}
		}
		out[k] = strings.Join(kept, " ")
	}
	return out
}

func diffDumps(t *testing.T, what string, a, b map[string]string) {
	t.Helper()
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		if a[k] != b[k] {
			t.Errorf("%s: key %s\n  %q\n  %q", what, k, a[k], b[k])
		}
	}
}

// TestClusterMatchesSingleNode runs admission decisions (a box cap, an
// SMS folder eviction, one refused under a hold, the monthly cap, an id
// another domain owns), the deletion gate and a rebuild on a Redis
// Cluster of three masters and on the single-node Redis: every outcome
// and every catalog key is the same, and on each a rebuild equals the
// live state.
func TestClusterMatchesSingleNode(t *testing.T) {
	t.Parallel()
	ev := newClusterEvents()
	newSvc := func(connect func(testing.TB, string) redis.UniversalClient) (*platform.Deps, *policy.Service) {
		store, err := cds.NewFS(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		d := testenv.DepsOn(t, store, connect)
		svc, err := policy.New(d, policy.Settings{})
		if err != nil {
			t.Fatal(err)
		}
		return d, svc
	}
	cd, csvc := newSvc(testenv.RedisCluster)
	if _, ok := cd.Redis.(*redis.ClusterClient); !ok {
		t.Fatalf("cluster run on %T", cd.Redis)
	}
	cluster := runClusterScenario(t, cd, csvc, ev)
	sd, ssvc := newSvc(testenv.Redis)
	single := runClusterScenario(t, sd, ssvc, ev)

	want := []string{
		"a.example/a-rec-0: a  evicted=", "a.example/a-rec-1: a  evicted=", "a.example/a-rec-2: a  evicted=", "a.example/a-rec-3: a  evicted=",
		"b.example/b-vm-0: a  evicted=", "b.example/b-vm-1: a  evicted=", "b.example/b-vm-2: r box_full evicted=",
		"c.example/c-sms-200-0: a  evicted=", "c.example/c-sms-200-1: a  evicted=", "c.example/c-sms-200-2: a  evicted=c-sms-200-0",
		"c.example/c-sms-201-0: a  evicted=", "c.example/c-sms-201-1: a  evicted=", "c.example/c-sms-201-2: r folder_full_under_hold evicted=",
		"d.example/d-rec-0: a  evicted=", "d.example/d-rec-1: a  evicted=", "d.example/d-rec-2: r monthly_cap evicted=",
		"d.example/a-rec-0: r id_conflict evicted=",
		"delete a.example/a-rec-0 explicit=false: deleted", "delete a.example/a-rec-1 explicit=false: within_minimum",
		"delete a.example/a-rec-1 explicit=true: deleted", "delete a.example/a-rec-3 explicit=true: held",
		"delete a.example/a-rec-0 explicit=false: already_deleted", "delete b.example/b-vm-0 explicit=true: deleted",
		"delete a.example/nothing explicit=false: absent",
		"b.example/b-vm-late: a ",
	}
	if !slices.Equal(single.outcomes, want) {
		t.Errorf("single-node outcomes:\n%s\nwant:\n%s", strings.Join(single.outcomes, "\n"), strings.Join(want, "\n"))
	}
	if !slices.Equal(cluster.outcomes, single.outcomes) {
		t.Errorf("cluster outcomes:\n%s\nsingle-node:\n%s", strings.Join(cluster.outcomes, "\n"), strings.Join(single.outcomes, "\n"))
	}
	if len(single.live) < 20 {
		t.Fatalf("the catalog holds only %d keys", len(single.live))
	}
	diffDumps(t, "cluster vs single node", withoutDeletionTimes(cluster.live), withoutDeletionTimes(single.live))
	diffDumps(t, "cluster rebuilt vs live", cluster.live, cluster.rebuilt)
	diffDumps(t, "single node rebuilt vs live", single.live, single.rebuilt)

	// The domains' keys really are spread over the masters.
	slots := map[int64]bool{}
	for _, dom := range []string{"a.example", "b.example", "c.example", "d.example"} {
		s, err := cd.Redis.ClusterKeySlot(context.Background(), cd.Names.Namespace()+":{"+dom+"}:usage").Result()
		if err != nil {
			t.Fatal(err)
		}
		slots[s/5462] = true
	}
	if len(slots) < 2 {
		t.Errorf("every domain hashed to one master's slot range: %v", slots)
	}
}
