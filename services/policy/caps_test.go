package policy_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/pkg/testenv"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
	"github.com/callvault/callvault/services/policy"
)

func messageEvent(id, domain, user string, kind eventv1.DataKind, folder eventv1.MessageFolder, received time.Time) *eventv1.Envelope {
	return &eventv1.Envelope{
		Id: id, AcceptedAt: timestamppb.Now(), Source: "test",
		Tenant: &eventv1.Tenant{Reseller: "r1", Domain: domain, User: user},
		Body: &eventv1.Envelope_Message{Message: &eventv1.MessageStored{
			Kind: kind, Folder: folder, ReceivedAt: timestamppb.New(received), From: "+15550100", To: "+15550199",
			Media: &eventv1.MediaObject{Key: "messages/" + domain + "/" + id, SizeBytes: 10, Sha256: "ab", ContentType: "audio/wav"},
		}},
	}
}

// setup gives a test its own streams, keys and CDS directory, and a policy
// service on them with the default preset.
func setup(t *testing.T) (*platform.Deps, *policy.Service) {
	t.Helper()
	store, err := cds.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := testenv.Deps(t, store)
	svc, err := policy.New(d, policy.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	for _, domain := range []string{"a.example", "held.example", "m.example", "young.example"} {
		if _, _, err := svc.ProvisionDomain(context.Background(), system, domain, "r1"); err != nil {
			t.Fatal(err)
		}
	}
	return d, svc
}

// writers runs n events through Admit from 32 goroutines at once.
func writers(t *testing.T, svc *policy.Service, events []*eventv1.Envelope) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(events))
	next := make(chan *eventv1.Envelope)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for env := range next {
				if err := svc.Admit(context.Background(), env, 1); err != nil {
					errs <- err
				}
			}
		}()
	}
	for _, e := range events {
		next <- e
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// subjectCount counts the events on one ingest subject.
func subjectCount(t *testing.T, d *platform.Deps, subject string) int {
	t.Helper()
	n, _, err := bus.Replay(context.Background(), d.JS, d.Names.IngestStream(), []string{subject}, func(context.Context, *eventv1.Envelope, uint64) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestVoicemailBoxRefusesThe501st(t *testing.T) {
	t.Parallel()
	d, svc := setup(t)
	now := time.Now()
	var events []*eventv1.Envelope
	for i := range 640 {
		events = append(events, messageEvent(fmt.Sprintf("vm-%03d", i), "a.example", "101", eventv1.DataKind_DATA_KIND_VOICEMAIL, 0, now.Add(-time.Duration(i)*time.Second)))
	}
	writers(t, svc, events)
	cat := catalog.New(d.Redis, d.Names.Namespace())
	if n, err := cat.Count(context.Background(), false, cat.BoxKey("a.example", "101")); err != nil || n != 500 {
		t.Fatalf("box holds %d (%v), want exactly 500", n, err)
	}
	if n := subjectCount(t, d, d.Names.RefusalSubject()); n != 140 {
		t.Fatalf("%d refusal events, want 140", n)
	}
	// A received fax shares the full box; another user's box is empty.
	writers(t, svc, []*eventv1.Envelope{
		messageEvent("fax-1", "a.example", "101", eventv1.DataKind_DATA_KIND_FAX_RECEIVED, 0, now),
		messageEvent("vm-other", "a.example", "102", eventv1.DataKind_DATA_KIND_VOICEMAIL, 0, now),
	})
	if n := subjectCount(t, d, d.Names.RefusalSubject()); n != 141 {
		t.Fatalf("%d refusal events after the fax, want 141", n)
	}
	q, err := svc.CheckQuota(context.Background(), system, eventv1.DataKind_DATA_KIND_VOICEMAIL, &eventv1.Tenant{Domain: "a.example", User: "101"}, 0)
	if err != nil || q.GetAllowed() || q.GetReason() != "box_full" || q.GetUsed() != 500 || q.GetLimit() != 500 || q.GetAction() != policyv1.CapAction_CAP_ACTION_REFUSE {
		t.Fatalf("CheckQuota of a full box: %v, %v", q, err)
	}
	q, err = svc.CheckQuota(context.Background(), system, eventv1.DataKind_DATA_KIND_VOICEMAIL, &eventv1.Tenant{Domain: "a.example", User: "102"}, 0)
	if err != nil || !q.GetAllowed() || q.GetUsed() != 1 {
		t.Fatalf("CheckQuota of another box: %v, %v", q, err)
	}
}

func TestSMSFolderEvictsTheOldest(t *testing.T) {
	t.Parallel()
	d, svc := setup(t)
	old := time.Now().AddDate(0, 0, -40) // past the 30-day minimum
	var events []*eventv1.Envelope
	for i := range 5064 {
		events = append(events, messageEvent(fmt.Sprintf("sms-%04d", i), "a.example", "101", eventv1.DataKind_DATA_KIND_SMS,
			eventv1.MessageFolder_MESSAGE_FOLDER_INBOX, old.Add(time.Duration(i)*time.Second)))
	}
	sent := messageEvent("sms-sent", "a.example", "101", eventv1.DataKind_DATA_KIND_SMS, eventv1.MessageFolder_MESSAGE_FOLDER_SENT, old.Add(-time.Hour))
	writers(t, svc, append([]*eventv1.Envelope{sent}, events...))
	cat := catalog.New(d.Redis, d.Names.Namespace())
	ctx := context.Background()
	if n, _ := cat.Count(ctx, false, cat.FolderKey("a.example", "101", "inbox")); n != 5000 {
		t.Fatalf("inbox holds %d, want 5000", n)
	}
	if n, _ := cat.Count(ctx, false, cat.FolderKey("a.example", "101", "sent")); n != 1 {
		t.Fatalf("sent folder holds %d, want its 1 message untouched", n)
	}
	if n := subjectCount(t, d, d.Names.DeletionSubject()); n != 64 {
		t.Fatalf("%d eviction tombstones, want 64", n)
	}
	u, err := cat.Usage(ctx, "a.example")
	if err != nil || u["messages"].Count != 5001 {
		t.Fatalf("message usage %+v, %v; want 5001 (5000 inbox + 1 sent)", u["messages"], err)
	}
}

func TestSMSEvictionRespectsMinimumAndHolds(t *testing.T) {
	t.Parallel()
	d, svc := setup(t)
	ctx := context.Background()
	limit := &policyv1.PolicyFields{Cap: &policyv1.Cap{Limit: 3, Action: policyv1.CapAction_CAP_ACTION_EVICT_OLDEST, Scope: policyv1.CapScope_CAP_SCOPE_USER_FOLDER}}
	for _, dom := range []string{"young.example", "held.example"} {
		if _, err := svc.SetOverride(ctx, system, ov(eventv1.DataKind_DATA_KIND_SMS, policyv1.Level_LEVEL_DOMAIN, "", dom, "", limit)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svc.PlaceHold(ctx, system, holdOn("held.example", "", "", "regulator")); err != nil {
		t.Fatal(err)
	}
	young, old := time.Now().Add(-time.Hour), time.Now().AddDate(0, 0, -60)
	for i := range 4 {
		for _, tc := range []struct {
			dom string
			at  time.Time
		}{{"young.example", young}, {"held.example", old}} {
			env := messageEvent(fmt.Sprintf("%s-%d", tc.dom, i), tc.dom, "101", eventv1.DataKind_DATA_KIND_SMS, eventv1.MessageFolder_MESSAGE_FOLDER_INBOX, tc.at.Add(time.Duration(i)*time.Minute))
			if err := svc.Admit(ctx, env, 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := subjectCount(t, d, d.Names.DeletionSubject()); n != 0 {
		t.Fatalf("%d evictions: nothing inside its minimum or under a hold may go", n)
	}
	reasons := map[string]string{}
	if _, _, err := bus.Replay(ctx, d.JS, d.Names.IngestStream(), []string{d.Names.RefusalSubject()}, func(_ context.Context, env *eventv1.Envelope, _ uint64) error {
		reasons[env.GetTenant().GetDomain()] = env.GetRefusal().GetReason()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if reasons["young.example"] != "folder_full_within_minimum" || reasons["held.example"] != "folder_full_under_hold" {
		t.Fatalf("refusal reasons %v", reasons)
	}
}

func TestMonthlyRecordingCap(t *testing.T) {
	t.Parallel()
	d, svc := setup(t)
	ctx := context.Background()
	if _, err := svc.SetOverride(ctx, system, ov(eventv1.DataKind_DATA_KIND_RECORDING_AUTOMATIC, policyv1.Level_LEVEL_DOMAIN, "", "m.example", "",
		&policyv1.PolicyFields{Cap: &policyv1.Cap{Limit: 200, Action: policyv1.CapAction_CAP_ACTION_REFUSE, Scope: policyv1.CapScope_CAP_SCOPE_ACCOUNT_MONTH}})); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(-time.Hour)
	var events []*eventv1.Envelope
	for i := range 320 {
		e := recordingEvent(fmt.Sprintf("m-%03d", i), 100, at)
		e.Tenant.Domain = "m.example"
		events = append(events, e)
	}
	writers(t, svc, events)
	cat := catalog.New(d.Redis, d.Names.Namespace())
	if n, _ := cat.Count(ctx, true, cat.MonthKey("m.example", "recording_automatic", time.Now())); n != 200 {
		t.Fatalf("month counter %d, want exactly 200", n)
	}
	if n := subjectCount(t, d, d.Names.RefusalSubject()); n != 120 {
		t.Fatalf("%d refusals, want 120", n)
	}

	// The shipped default: the 100,001st automatic recording of the month
	// is refused; an on-demand one is not capped.
	if err := d.Redis.Set(ctx, cat.MonthKey("a.example", "recording_automatic", time.Now()), 99_999, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	last, over := recordingEvent("n-100000", 100, at), recordingEvent("n-100001", 100, at)
	onDemand := recordingEvent("n-od", 100, at)
	onDemand.GetRecording().Mode = eventv1.RecordingMode_RECORDING_MODE_ON_DEMAND
	for _, e := range []*eventv1.Envelope{last, over, onDemand} {
		if err := svc.Admit(ctx, e, 1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cat.GetRecording(ctx, "a.example", "n-100000"); err != nil {
		t.Fatalf("the 100,000th was not admitted: %v", err)
	}
	if _, err := cat.GetRecording(ctx, "a.example", "n-100001"); err == nil {
		t.Fatal("the 100,001st was admitted")
	}
	if _, err := cat.GetRecording(ctx, "a.example", "n-od"); err != nil {
		t.Fatalf("an on-demand recording was capped: %v", err)
	}
	q, err := svc.CheckQuota(ctx, system, eventv1.DataKind_DATA_KIND_RECORDING_AUTOMATIC, &eventv1.Tenant{Domain: "a.example"}, 0)
	if err != nil || q.GetAllowed() || q.GetReason() != "monthly_cap" || q.GetUsed() != 100_000 || q.GetLimit() != 100_000 {
		t.Fatalf("CheckQuota at the monthly cap: %v, %v", q, err)
	}
}

// wipeRedis drops every key of the test's namespace: a Redis loss.
func wipeRedis(t *testing.T, d *platform.Deps) {
	t.Helper()
	ctx := context.Background()
	keys, err := testenv.Keys(ctx, d.Redis, d.Names.Namespace()+":*")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := d.Redis.Del(ctx, k).Err(); err != nil {
			t.Fatal(err)
		}
	}
}
