package policy_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/pkg/testenv"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
	"github.com/callvault/callvault/services/policy"
)

// faults injects failures into the real JetStream and CDS clients: the
// servers stay real, only chosen calls fail.
type faults struct {
	mu sync.Mutex
	// failPublish[subject] = how many publishes to that subject fail; with
	// afterStore the message reaches the server first (a lost PubAck).
	failPublish map[string]int
	afterStore  bool
	failDelete  int
}

func (f *faults) take(m map[string]int, k string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if m[k] > 0 {
		m[k]--
		return true
	}
	return false
}

type faultJS struct {
	jetstream.JetStream
	f *faults
}

func (j faultJS) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if j.f.take(j.f.failPublish, m.Subject) {
		if j.f.afterStore {
			if _, err := j.JetStream.PublishMsg(ctx, m, opts...); err != nil {
				return nil, err
			}
		}
		return nil, fmt.Errorf("injected: %w", context.DeadlineExceeded)
	}
	return j.JetStream.PublishMsg(ctx, m, opts...)
}

type faultStore struct {
	cds.Store
	f *faults
}

func (s faultStore) Delete(ctx context.Context, key string) error {
	s.f.mu.Lock()
	fail := s.f.failDelete > 0
	if fail {
		s.f.failDelete--
	}
	s.f.mu.Unlock()
	if fail {
		return errors.New("injected: the store is unreachable")
	}
	return s.Store.Delete(ctx, key)
}

// faultySetup is setup with faults injectable into publishing and media
// deletion, and media objects that really exist in the store.
func faultySetup(t *testing.T) (*platform.Deps, *policy.Service, *faults) {
	t.Helper()
	fs, err := cds.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := &faults{failPublish: map[string]int{}}
	d := testenv.Deps(t, faultStore{Store: fs, f: f})
	d.JS = faultJS{JetStream: d.JS, f: f}
	svc, err := policy.New(d, policy.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.ProvisionDomain(context.Background(), system, "a.example", "r1"); err != nil {
		t.Fatal(err)
	}
	return d, svc, f
}

// stored puts the media an event points to into the store.
func stored(t *testing.T, d *platform.Deps, env *eventv1.Envelope) *eventv1.Envelope {
	t.Helper()
	m := env.GetMessage().GetMedia()
	if m == nil {
		m = env.GetRecording().GetMedia()
	}
	if _, err := d.CDS.Put(context.Background(), m.GetKey(), strings.NewReader("0123456789"), "audio/wav"); err != nil {
		t.Fatal(err)
	}
	return env
}

func exists(t *testing.T, d *platform.Deps, key string) bool {
	t.Helper()
	_, err := d.CDS.Stat(context.Background(), key)
	if err != nil && !errors.Is(err, cds.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

func boxCap(limit int64) *policyv1.PolicyFields {
	return &policyv1.PolicyFields{Cap: &policyv1.Cap{Limit: limit, Action: policyv1.CapAction_CAP_ACTION_REFUSE, Scope: policyv1.CapScope_CAP_SCOPE_BOX}}
}

// A refused voicemail stays refused when it is delivered again after the
// cap was raised: the redelivery repeats the recorded decision.
func TestRefusalIsRepeatedNotRedecided(t *testing.T) {
	t.Parallel()
	d, svc, _ := faultySetup(t)
	ctx := context.Background()
	vm := eventv1.DataKind_DATA_KIND_VOICEMAIL
	if _, err := svc.SetOverride(ctx, system, ov(vm, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", boxCap(1))); err != nil {
		t.Fatal(err)
	}
	first := stored(t, d, messageEvent("vm-1", "a.example", "101", vm, 0, time.Now()))
	second := stored(t, d, messageEvent("vm-2", "a.example", "101", vm, 0, time.Now()))
	for _, env := range []*eventv1.Envelope{first, second} {
		if err := svc.Admit(ctx, env, 1); err != nil {
			t.Fatal(err)
		}
	}
	if exists(t, d, second.GetMessage().GetMedia().GetKey()) {
		t.Fatal("the refused voicemail's media is still stored")
	}
	if _, err := svc.SetOverride(ctx, system, ov(vm, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", boxCap(10))); err != nil {
		t.Fatal(err)
	}
	if err := svc.Admit(ctx, second, 2); err != nil {
		t.Fatal(err)
	}
	cat := catalog.New(d.Redis, d.Names.Namespace())
	rec, err := cat.Record(ctx, "a.example", "vm-2")
	if err != nil || rec.State != catalog.StateRefused || rec.Reason != "box_full" || rec.Pending != "" {
		t.Fatalf("vm-2 after redelivery: %+v, %v; want refused box_full with nothing owed", rec, err)
	}
	if n, _ := cat.Count(ctx, false, cat.BoxKey("a.example", "101")); n != 1 {
		t.Fatalf("box holds %d, want 1: a redelivery admitted a voicemail whose media is gone", n)
	}
	if n := subjectCount(t, d, d.Names.RefusalSubject()); n != 1 {
		t.Fatalf("%d refusal events, want exactly 1", n)
	}
}

// An eviction whose media delete fails is finished by the redelivery:
// the media goes and exactly one tombstone is published.
func TestEvictionEffectsAreRetriedUntilDone(t *testing.T) {
	t.Parallel()
	d, svc, f := faultySetup(t)
	ctx := context.Background()
	sms := eventv1.DataKind_DATA_KIND_SMS
	limit := &policyv1.PolicyFields{Cap: &policyv1.Cap{Limit: 2, Action: policyv1.CapAction_CAP_ACTION_EVICT_OLDEST, Scope: policyv1.CapScope_CAP_SCOPE_USER_FOLDER}}
	if _, err := svc.SetOverride(ctx, system, ov(sms, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", limit)); err != nil {
		t.Fatal(err)
	}
	old := time.Now().AddDate(0, 0, -60)
	var events []*eventv1.Envelope
	for i := range 3 {
		events = append(events, stored(t, d, messageEvent(fmt.Sprintf("sms-%d", i), "a.example", "101", sms, eventv1.MessageFolder_MESSAGE_FOLDER_INBOX, old.Add(time.Duration(i)*time.Minute))))
	}
	for _, env := range events[:2] {
		if err := svc.Admit(ctx, env, 1); err != nil {
			t.Fatal(err)
		}
	}
	f.failDelete = 1
	if err := svc.Admit(ctx, events[2], 3); err == nil {
		t.Fatal("the eviction's media delete failed, yet admission reported success")
	}
	if !exists(t, d, events[0].GetMessage().GetMedia().GetKey()) {
		t.Fatal("precondition: the evicted media should still be there after the failed delete")
	}
	// The redelivery finishes the eviction.
	if err := svc.Admit(ctx, events[2], 3); err != nil {
		t.Fatal(err)
	}
	if exists(t, d, events[0].GetMessage().GetMedia().GetKey()) {
		t.Fatal("the evicted media was never removed")
	}
	if n := subjectCount(t, d, d.Names.DeletionSubject()); n != 1 {
		t.Fatalf("%d tombstones, want exactly 1", n)
	}
	cat := catalog.New(d.Redis, d.Names.Namespace())
	for id, want := range map[string]catalog.State{"sms-0": catalog.StateDeleted, "sms-1": catalog.StateAdmitted, "sms-2": catalog.StateAdmitted} {
		rec, err := cat.Record(ctx, "a.example", id)
		if err != nil || rec.State != want || rec.Pending != "" {
			t.Fatalf("%s: %+v, %v; want state %s with nothing owed", id, rec, err, want)
		}
	}
	// A third delivery changes nothing.
	if err := svc.Admit(ctx, events[2], 3); err != nil {
		t.Fatal(err)
	}
	if n := subjectCount(t, d, d.Names.DeletionSubject()); n != 1 {
		t.Fatalf("%d tombstones after a third delivery, want 1", n)
	}
}

// The admission decision is an event; a publish that fails after the
// server stored it is retried by the redelivery and deduplicated.
func TestAdmittedDecisionIsPublishedOnce(t *testing.T) {
	t.Parallel()
	d, svc, f := faultySetup(t)
	ctx := context.Background()
	env := stored(t, d, recordingEvent("rec-1", 10, time.Now().Add(-time.Hour)))
	f.afterStore = true
	f.failPublish[d.Names.AdmittedSubject()] = 1
	if err := svc.Admit(ctx, env, 1); err == nil {
		t.Fatal("a lost PubAck on the decision event was reported as success")
	}
	cat := catalog.New(d.Redis, d.Names.Namespace())
	if rec, _ := cat.Record(ctx, "a.example", "rec-1"); rec.State != catalog.StateAdmitted || rec.Pending != "P" {
		t.Fatalf("after the failed publish: %+v; want admitted with the publish owed", rec)
	}
	if err := svc.Admit(ctx, env, 1); err != nil {
		t.Fatal(err)
	}
	if rec, _ := cat.Record(ctx, "a.example", "rec-1"); rec.Pending != "" {
		t.Fatalf("after the redelivery: %+v; want nothing owed", rec)
	}
	if n := subjectCount(t, d, d.Names.AdmittedSubject()); n != 1 {
		t.Fatalf("%d admitted events, want exactly 1", n)
	}
	if !exists(t, d, env.GetRecording().GetMedia().GetKey()) {
		t.Fatal("admitted media was removed")
	}
}

// The deletion gate: holds and the minimum are checked with the removal;
// a repeat finishes what is owed; unknown is success.
func TestDeletionGate(t *testing.T) {
	t.Parallel()
	d, svc, f := faultySetup(t)
	ctx := context.Background()
	young := stored(t, d, recordingEvent("young", 10, time.Now().Add(-time.Hour)))
	old := stored(t, d, recordingEvent("old", 10, time.Now().AddDate(-1, 0, 0)))
	held := stored(t, d, recordingEvent("held", 10, time.Now().AddDate(-1, 0, 0)))
	held.GetRecording().CallId = "call-held"
	for i, env := range []*eventv1.Envelope{young, old, held} {
		if err := svc.Admit(ctx, env, uint64(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svc.PlaceHold(ctx, system, holdOn("a.example", "", "call-held", "litigation")); err != nil {
		t.Fatal(err)
	}
	del := func(id string, explicit bool) catalog.DeleteResult {
		t.Helper()
		res, err := svc.Delete(ctx, policy.DeleteRequest{Domain: "a.example", ID: id, Explicit: explicit, Reason: "retention", Rule: "test", Actor: "culler"})
		if err != nil {
			t.Fatalf("delete %s: %v", id, err)
		}
		return res
	}
	if res := del("young", false); res.Outcome != catalog.WithinMinimum {
		t.Fatalf("young: %s, want within_minimum", res.Outcome)
	}
	if res := del("held", true); res.Outcome != catalog.Held || res.HoldID == "" {
		t.Fatalf("held, explicitly: %+v, want held with the hold named", res)
	}
	f.failDelete = 1
	if _, err := svc.Delete(ctx, policy.DeleteRequest{Domain: "a.example", ID: "old", Reason: "retention", Actor: "culler"}); err == nil {
		t.Fatal("a failed media delete was reported as success")
	}
	if n := subjectCount(t, d, d.Names.DeletionSubject()); n != 0 {
		t.Fatalf("a tombstone was published before the media was removed")
	}
	if res := del("old", false); res.Outcome != catalog.AlreadyDeleted {
		t.Fatalf("old, again: %s, want already_deleted", res.Outcome)
	}
	if exists(t, d, old.GetRecording().GetMedia().GetKey()) {
		t.Fatal("the deleted recording's media is still stored")
	}
	if res := del("young", true); res.Outcome != catalog.Deleted {
		t.Fatalf("young, explicitly: %s, want deleted", res.Outcome)
	}
	if res := del("never-was", false); res.Outcome != catalog.Absent {
		t.Fatalf("unknown: %s, want absent", res.Outcome)
	}
	if n := subjectCount(t, d, d.Names.DeletionSubject()); n != 2 {
		t.Fatalf("%d tombstones, want 2 (old, young)", n)
	}
	cat := catalog.New(d.Redis, d.Names.Namespace())
	if _, err := cat.GetRecording(ctx, "a.example", "held"); err != nil {
		t.Fatalf("the held recording is gone: %v", err)
	}
	u, _ := cat.Usage(ctx, "a.example")
	if got := u[catalog.KindRecording]; got.Count != 1 || got.Bytes != 10 {
		t.Fatalf("usage %+v, want the held recording only", got)
	}
}
