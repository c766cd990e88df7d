package callvault_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/pkg/testenv"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
	"github.com/callvault/callvault/services/callvault"
	"github.com/callvault/callvault/services/policy"
)

// allowedToDiffer names the keys a rebuild may write differently from the
// live state, each with its reason (ARCHITECTURE.md lists them too).
var allowedToDiffer = map[string]string{
	":usage:alert": "the 95% alert flag is an edge trigger of the live consumer, not a recorded decision",
}

// dump reads every key of the namespace with its type and value.
func dump(t *testing.T, d *platform.Deps) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	iter := d.Redis.Scan(ctx, 0, d.Names.Namespace()+":*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		skip := false
		for suffix := range allowedToDiffer {
			skip = skip || strings.HasSuffix(k, suffix)
		}
		if skip {
			continue
		}
		typ, err := d.Redis.Type(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		var v any
		switch typ {
		case "hash":
			var m map[string]string
			m, err = d.Redis.HGetAll(ctx, k).Result()
			for f, raw := range m {
				if rec, ok := catalog.Describe(raw); ok && (strings.Contains(k, "}:h:") || strings.HasSuffix(k, "}:refused")) {
					m[f] = "{" + rec + "}"
				}
			}
			if strings.HasSuffix(k, ":applied") {
				delete(m, "gen") // names the rebuild that wrote the marks: new each time
			}
			v = m
		case "zset":
			v, err = d.Redis.ZRangeWithScores(ctx, k, 0, -1).Result()
		case "set":
			var m []string
			m, err = d.Redis.SMembers(ctx, k).Result()
			slices.Sort(m)
			v = m
		case "string":
			v, err = d.Redis.Get(ctx, k).Result()
			if ttl, _ := d.Redis.TTL(ctx, k).Result(); ttl > 0 {
				v = fmt.Sprintf("%v (expires)", v)
			}
		default:
			v = "type " + typ
		}
		if err != nil {
			t.Fatal(err)
		}
		out[k] = typ + " " + fmt.Sprint(v)
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func wipe(t *testing.T, d *platform.Deps) {
	t.Helper()
	ctx := context.Background()
	iter := d.Redis.Scan(ctx, 0, d.Names.Namespace()+":*", 1000).Iterator()
	for iter.Next(ctx) {
		if err := d.Redis.Del(ctx, iter.Val()).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
}

func message(id, domain, user string, kind eventv1.DataKind, folder eventv1.MessageFolder, received time.Time) *eventv1.Envelope {
	return &eventv1.Envelope{
		Id: id, ArtifactId: id, Type: "message.stored", SchemaVersion: bus.SchemaVersion, AcceptedAt: timestamppb.Now(), Source: "test",
		Tenant: &eventv1.Tenant{Reseller: "r1", Domain: domain, User: user},
		Body: &eventv1.Envelope_Message{Message: &eventv1.MessageStored{
			Kind: kind, Folder: folder, ReceivedAt: timestamppb.New(received), From: "+15550100", To: "+15550199",
			Media: &eventv1.MediaObject{Key: "messages/" + domain + "/" + id, SizeBytes: 10, Sha256: "ab", ContentType: "audio/wav"},
		}},
	}
}

func recording(id, domain, user string, started time.Time) *eventv1.Envelope {
	return &eventv1.Envelope{
		Id: id, ArtifactId: id, Type: "recording.stored", SchemaVersion: bus.SchemaVersion, AcceptedAt: timestamppb.Now(), Source: "test",
		Tenant: &eventv1.Tenant{Reseller: "r1", Domain: domain, User: user},
		Body: &eventv1.Envelope_Recording{Recording: &eventv1.RecordingStored{
			CallId: "call-" + id, Mode: eventv1.RecordingMode_RECORDING_MODE_AUTOMATIC, StartedAt: timestamppb.New(started), DurationS: 60,
			Media: &eventv1.MediaObject{Key: "recordings/" + domain + "/" + id, SizeBytes: 1000, Sha256: "cd", ContentType: "audio/wav"},
		}},
	}
}

// A rebuild from the streams into an empty Redis equals the live state,
// key for key, after a mixed workload decided by two policy consumers:
// caps hit, a cap lowered and an override changed midway, evictions,
// refusals under a hold, a hold released, a gate deletion, tokens.
func TestRebuildEqualsLive(t *testing.T) {
	t.Parallel()
	store, err := cds.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := testenv.Deps(t, store)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	svc, err := policy.New(d, policy.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	second := *d
	second.Registry = prometheus.NewRegistry()
	svc2, err := policy.New(&second, policy.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 2)
	go func() { done <- svc.Run(runCtx) }()
	go func() { done <- svc2.Run(runCtx) }()

	system := auth.Principal{Name: "ops", Level: auth.LevelSystem}
	for _, dom := range []string{"a.example", "b.example"} {
		if _, _, err := svc.ProvisionDomain(ctx, system, dom, "r1"); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"pbx-a", "pbx-b"} {
		if _, _, err := d.Tokens.Issue(ctx, system, auth.Principal{Name: name, Level: auth.LevelReseller, Reseller: "r1"}, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	// A revoked token stays revoked, and an expiring one keeps its expiry.
	_, gone, err := d.Tokens.Issue(ctx, system, auth.Principal{Name: "gone", Level: auth.LevelDomain, Reseller: "r1", Domain: "a.example"}, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Tokens.Revoke(ctx, system, gone.ID); err != nil {
		t.Fatal(err)
	}
	override := func(kind eventv1.DataKind, domain string, f *policyv1.PolicyFields) {
		t.Helper()
		if _, err := svc.SetOverride(ctx, system, &policyv1.Override{Kind: kind, Scope: &policyv1.Scope{Level: policyv1.Level_LEVEL_DOMAIN, Domain: domain}, Fields: f}); err != nil {
			t.Fatal(err)
		}
	}
	capOf := func(limit int64, action policyv1.CapAction, scope policyv1.CapScope) *policyv1.PolicyFields {
		return &policyv1.PolicyFields{Cap: &policyv1.Cap{Limit: limit, Action: action, Scope: scope}}
	}
	vm, sms, auto := eventv1.DataKind_DATA_KIND_VOICEMAIL, eventv1.DataKind_DATA_KIND_SMS, eventv1.DataKind_DATA_KIND_RECORDING_AUTOMATIC
	override(vm, "a.example", capOf(5, policyv1.CapAction_CAP_ACTION_REFUSE, policyv1.CapScope_CAP_SCOPE_BOX))
	override(sms, "a.example", capOf(3, policyv1.CapAction_CAP_ACTION_EVICT_OLDEST, policyv1.CapScope_CAP_SCOPE_USER_FOLDER))
	override(sms, "b.example", capOf(2, policyv1.CapAction_CAP_ACTION_EVICT_OLDEST, policyv1.CapScope_CAP_SCOPE_USER_FOLDER))
	override(auto, "a.example", capOf(12, policyv1.CapAction_CAP_ACTION_REFUSE, policyv1.CapScope_CAP_SCOPE_ACCOUNT_MONTH))
	h, err := svc.PlaceHold(ctx, system, &policyv1.Hold{Scope: &policyv1.Scope{Level: policyv1.Level_LEVEL_DOMAIN, Domain: "b.example"}, Reason: "audit"})
	if err != nil {
		t.Fatal(err)
	}

	publish := func(env *eventv1.Envelope) {
		t.Helper()
		subject := d.Names.MessageSubject()
		if env.GetRecording() != nil {
			subject = d.Names.RecordingSubject()
		}
		if _, err := bus.PublishEnvelope(ctx, d.JS, subject, env.GetId(), env); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().AddDate(0, -3, 0)
	for i := range 8 {
		publish(message(fmt.Sprintf("vm-a-%d", i), "a.example", "101", vm, 0, time.Now().Add(time.Duration(-i)*time.Minute)))
		publish(message(fmt.Sprintf("sms-a-%d", i), "a.example", "101", sms, eventv1.MessageFolder_MESSAGE_FOLDER_INBOX, old.Add(time.Duration(i)*time.Minute)))
		publish(message(fmt.Sprintf("sms-b-%d", i), "b.example", "201", sms, eventv1.MessageFolder_MESSAGE_FOLDER_INBOX, old.Add(time.Duration(i)*time.Minute)))
		publish(recording(fmt.Sprintf("rec-a-%d", i), "a.example", "101", old.Add(time.Duration(i)*time.Hour)))
	}
	waitDrained(t, d)
	// Midway: the box cap is lowered, the monthly cap raised, the hold released.
	override(vm, "a.example", capOf(3, policyv1.CapAction_CAP_ACTION_REFUSE, policyv1.CapScope_CAP_SCOPE_BOX))
	override(auto, "a.example", capOf(14, policyv1.CapAction_CAP_ACTION_REFUSE, policyv1.CapScope_CAP_SCOPE_ACCOUNT_MONTH))
	if err := svc.ReleaseHold(ctx, system, h.ID, "audit closed"); err != nil {
		t.Fatal(err)
	}
	for i := 8; i < 16; i++ {
		publish(message(fmt.Sprintf("vm-a2-%d", i), "a.example", "102", vm, 0, time.Now()))
		publish(message(fmt.Sprintf("sms-b-%d", i), "b.example", "201", sms, eventv1.MessageFolder_MESSAGE_FOLDER_INBOX, old.Add(time.Duration(i)*time.Minute)))
		publish(recording(fmt.Sprintf("rec-a-%d", i), "a.example", "102", old.Add(time.Duration(i)*time.Hour)))
	}
	// The same recording again (a PBX retry after the window) and a poison event.
	again := recording("rec-a-1", "a.example", "101", old.Add(time.Hour))
	again.Id = "rec-a-1-retry"
	publish(again)
	waitDrained(t, d)
	if res, err := svc.Delete(ctx, policy.DeleteRequest{Domain: "a.example", ID: "rec-a-0", Explicit: true, Reason: "admin", Actor: "ops"}); err != nil || res.Outcome != catalog.Deleted {
		t.Fatalf("gate delete: %+v, %v", res, err)
	}
	stop()
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}

	live := dump(t, d)
	states := map[string]int{}
	for k, v := range live {
		if strings.Contains(k, "}:h:") || strings.HasSuffix(k, "}:refused") {
			for _, st := range []string{"a", "r", "d"} {
				states[st] += strings.Count(v, `st="`+st)
			}
		}
	}
	if states["a"] == 0 || states["r"] == 0 || states["d"] == 0 {
		t.Fatalf("the workload should admit, refuse and delete: %v", states)
	}
	wipe(t, d)
	if _, err := callvault.Rebuild(ctx, svc); err != nil {
		t.Fatal(err)
	}
	rebuilt := dump(t, d)
	for _, k := range slices.Sorted(maps.Keys(live)) {
		if rebuilt[k] != live[k] {
			t.Errorf("key %s\n live:    %s\n rebuilt: %s", k, live[k], rebuilt[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(rebuilt)) {
		if _, ok := live[k]; !ok {
			t.Errorf("key %s only after the rebuild: %s", k, rebuilt[k])
		}
	}
	t.Logf("compared %d keys; decisions: %v", len(live), states)
}

// waitDrained waits until the admission consumer has acknowledged every
// ingest event.
func waitDrained(t *testing.T, d *platform.Deps) {
	t.Helper()
	testenv.WaitFor(t, "every ingest event decided", func() bool {
		cons, err := d.JS.Consumer(context.Background(), d.Names.IngestStream(), policy.AdmitConsumer)
		if err != nil {
			return false
		}
		info, err := cons.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
}
