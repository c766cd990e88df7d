package policy_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
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

// batchWorkload is an ingest stream that exercises every cap in one
// burst: recordings past a monthly cap (calls with several recordings),
// voicemails past a box cap, SMS past an evicting folder cap (each
// eviction's victim admitted earlier in the same burst), an id another
// domain owns, an event delivered twice under two message ids, and one
// event that can never be admitted.
func batchWorkload() []*eventv1.Envelope {
	accepted := timestamppb.New(time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC))
	old := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	var out []*eventv1.Envelope
	for i := range 40 {
		env := recordingEvent(fmt.Sprintf("a-rec-%02d", i), 100, time.Date(2026, 11, 10, 9, 0, 0, 0, time.UTC).Add(time.Duration(i)*time.Minute))
		env.GetRecording().CallId = fmt.Sprintf("call-%d", i/3)
		env.AcceptedAt = accepted
		out = append(out, env)
	}
	for i := range 8 {
		env := messageEvent(fmt.Sprintf("b-vm-%d", i), "b.example", "101", vmKind, 0, old.Add(time.Duration(i)*time.Hour))
		env.AcceptedAt = accepted
		out = append(out, env)
	}
	for i := range 7 {
		env := messageEvent(fmt.Sprintf("c-sms-%d", i), "c.example", "200", eventv1.DataKind_DATA_KIND_SMS, eventv1.MessageFolder_MESSAGE_FOLDER_INBOX, old.Add(time.Duration(i)*time.Hour))
		env.AcceptedAt = accepted
		out = append(out, env)
	}
	conflict := recordingEvent("a-rec-05", 100, time.Date(2026, 11, 10, 9, 0, 0, 0, time.UTC))
	conflict.Tenant.Domain, conflict.AcceptedAt = "d.example", accepted
	conflict.GetRecording().GetMedia().Key = "recordings/d.example/a-rec-05"
	out = append(out, conflict)
	out = append(out, out[3]) // a-rec-03 again, under another message id
	bad := messageEvent("b-vm-bad", "b.example", "101", vmKind, 0, old)
	bad.GetMessage().ReceivedAt = nil
	return append(out, bad)
}

// runBatchWorkload admits the workload through the admission consumer
// deciding batch events at a time and returns the deps it ran on.
func runBatchWorkload(t *testing.T, batch int) *platform.Deps {
	t.Helper()
	store, err := cds.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := testenv.Deps(t, store)
	svc, err := policy.New(d, policy.Settings{AdmitBatch: batch})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, dom := range []string{"a.example", "b.example", "c.example", "d.example"} {
		if _, _, err := svc.ProvisionDomain(ctx, system, dom, "r1"); err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range []*policyv1.Override{
		ov(auto, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", &policyv1.PolicyFields{
			Cap: &policyv1.Cap{Limit: 25, Action: policyv1.CapAction_CAP_ACTION_REFUSE, Scope: policyv1.CapScope_CAP_SCOPE_ACCOUNT_MONTH}}),
		ov(vmKind, policyv1.Level_LEVEL_DOMAIN, "", "b.example", "", boxCap(5)),
		ov(eventv1.DataKind_DATA_KIND_SMS, policyv1.Level_LEVEL_DOMAIN, "", "c.example", "", &policyv1.PolicyFields{
			Cap: &policyv1.Cap{Limit: 3, Action: policyv1.CapAction_CAP_ACTION_EVICT_OLDEST, Scope: policyv1.CapScope_CAP_SCOPE_USER_FOLDER}}),
	} {
		if _, err := svc.SetOverride(ctx, system, o); err != nil {
			t.Fatal(err)
		}
	}
	// The whole burst is in the stream before the consumer starts, so
	// batches fill.
	for i, env := range batchWorkload() {
		stored(t, d, env)
		subject := d.Names.RecordingSubject()
		if env.GetMessage() != nil {
			subject = d.Names.MessageSubject()
		}
		if _, err := bus.PublishEnvelope(ctx, d.JS, subject, fmt.Sprintf("msg-%d", i), env); err != nil {
			t.Fatal(err)
		}
	}
	stop := runPolicy(t, svc)
	defer stop()
	waitDecided(t, d)
	return d
}

// decisionLog lists the decision events in stream order as
// "subject id reason evicted".
func decisionLog(t *testing.T, d *platform.Deps) []string {
	t.Helper()
	var out []string
	_, _, err := bus.Replay(context.Background(), d.JS, d.Names.IngestStream(), d.Names.DecisionSubjects(), func(_ context.Context, env *eventv1.Envelope, _ uint64) error {
		switch b := env.GetBody().(type) {
		case *eventv1.Envelope_Admitted:
			out = append(out, fmt.Sprintf("admitted %s/%s evicted=%s", env.GetTenant().GetDomain(), bus.ArtifactID(env), b.Admitted.GetEvictedArtifactId()))
		case *eventv1.Envelope_Refusal:
			out = append(out, fmt.Sprintf("refused %s/%s %s", env.GetTenant().GetDomain(), b.Refusal.GetArtifactId(), b.Refusal.GetReason()))
		case *eventv1.Envelope_Deletion:
			out = append(out, fmt.Sprintf("deleted %s/%s %s", env.GetTenant().GetDomain(), b.Deletion.GetArtifactId(), b.Deletion.GetReason()))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBatchedAdmissionDecidesAsOneByOne admits the same burst through the
// consumer one event at a time and 256 at a time: the catalogs are equal
// key for key, the decision events are the same in the same order, and
// the outcomes are the ones the caps call for.
func TestBatchedAdmissionDecidesAsOneByOne(t *testing.T) {
	t.Parallel()
	var single, batched *platform.Deps
	done := make(chan struct{})
	go func() {
		defer close(done)
		single = runBatchWorkload(t, 1)
	}()
	batched = runBatchWorkload(t, 256)
	<-done
	if t.Failed() {
		return
	}
	diffDumps(t, "batched vs one by one", withoutDeletionTimes(catalogDump(t, single)), withoutDeletionTimes(catalogDump(t, batched)))
	// The same decision events; a batch publishes its decisions
	// concurrently, so only what a rebuild depends on keeps its order: an
	// artifact's admission comes before its eviction or deletion.
	one, many := decisionLog(t, single), decisionLog(t, batched)
	if a, b := slices.Sorted(slices.Values(one)), slices.Sorted(slices.Values(many)); !slices.Equal(a, b) {
		t.Fatalf("decision events differ:\none by one:\n%s\nbatched:\n%s", strings.Join(a, "\n"), strings.Join(b, "\n"))
	}
	for _, log := range [][]string{one, many} {
		admittedAt := map[string]int{}
		for i, l := range log {
			f := strings.Fields(l)
			switch f[0] {
			case "admitted":
				admittedAt[f[1]] = i
				if v := strings.TrimPrefix(f[2], "evicted="); v != "" {
					if _, ok := admittedAt[strings.Split(f[1], "/")[0]+"/"+v]; !ok {
						t.Errorf("%q comes before its victim's admission", l)
					}
				}
			case "deleted":
				if _, ok := admittedAt[f[1]]; !ok {
					t.Errorf("%q comes before the artifact's admission", l)
				}
			}
		}
	}
	count := func(prefix string) int {
		n := 0
		for _, l := range many {
			if strings.HasPrefix(l, prefix) {
				n++
			}
		}
		return n
	}
	for _, want := range []struct {
		prefix string
		n      int
	}{
		{"admitted a.example/", 25}, {"refused a.example/", 15},
		{"admitted b.example/", 5}, {"refused b.example/b-vm-", 3},
		{"admitted c.example/", 7}, {"deleted c.example/", 4},
		{"refused d.example/a-rec-05 id_conflict", 1},
	} {
		if got := count(want.prefix); got != want.n {
			t.Errorf("%d events %q, want %d:\n%s", got, want.prefix, want.n, strings.Join(many, "\n"))
		}
	}
	for _, d := range []*platform.Deps{single, batched} {
		dls, err := bus.ListDeadLetters(context.Background(), d.JS, d.Names, 1, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(dls) != 1 || !strings.Contains(dls[0].Reason, "received_at") {
			t.Errorf("dead letters %+v: want the event with no received_at", dls)
		}
		u, err := catalog.New(d.Redis, d.Names.Namespace()).Usage(context.Background(), "a.example")
		if err != nil {
			t.Fatal(err)
		}
		if got := u[catalog.KindRecording]; got.Count != 25 || got.Bytes != 2500 {
			t.Errorf("a.example usage %+v, want 25 recordings of 2,500 bytes", got)
		}
	}
}

// TestBatchedAdmissionSurvivesLostPubAcks: in a burst decided in
// batches, five decision events are stored but their PubAcks lost. Those
// five events are retried alone; the redelivery repeats the recorded
// decision and publishes it again under the same message id. Every
// recording is admitted once, its decision event is in the stream once,
// nothing is owed, and usage counts each once.
func TestBatchedAdmissionSurvivesLostPubAcks(t *testing.T) {
	t.Parallel()
	d, svc, f := faultySetup(t)
	ctx := context.Background()
	at := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	const n = 300
	for i := range n {
		id := fmt.Sprintf("rec-%03d", i)
		env := stored(t, d, recordingEvent(id, 10, at.Add(time.Duration(i)*time.Second)))
		if _, err := bus.PublishEnvelope(ctx, d.JS, d.Names.RecordingSubject(), id, env); err != nil {
			t.Fatal(err)
		}
	}
	f.mu.Lock()
	f.afterStore = true
	f.failPublish[d.Names.AdmittedSubject()] = 5
	f.mu.Unlock()
	stop := runPolicy(t, svc)
	defer stop()
	waitDecided(t, d)
	if got := subjectCount(t, d, d.Names.AdmittedSubject()); got != n {
		t.Fatalf("%d admitted events, want %d", got, n)
	}
	cat := catalog.New(d.Redis, d.Names.Namespace())
	for i := range n {
		rec, err := cat.Record(ctx, "a.example", fmt.Sprintf("rec-%03d", i))
		if err != nil || rec.State != catalog.StateAdmitted || rec.Pending != "" {
			t.Fatalf("rec-%03d: %+v, %v; want admitted with nothing owed", i, rec, err)
		}
	}
	u, err := cat.Usage(ctx, "a.example")
	if err != nil {
		t.Fatal(err)
	}
	if got := u[catalog.KindRecording]; got.Count != n || got.Bytes != 10*n {
		t.Fatalf("usage %+v, want %d recordings of %d bytes", got, n, 10*n)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if left := f.failPublish[d.Names.AdmittedSubject()]; left != 0 {
		t.Fatalf("%d injected failures were never hit", left)
	}
}
