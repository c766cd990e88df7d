package policy_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/testenv"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
	"github.com/callvault/callvault/services/policy"
)

// TestBreakSweepAfterRedisLoss guards a defect an attack found (fixed): the orphan sweep trusts an empty
// Redis. Redis is derived and may restart without its data while the
// policy service keeps running (CatchUp only runs before Run starts
// consuming). The next sweep then finds no decision record for any object
// and removes the media of every admitted recording older than the grace
// period: permanent loss of recordings that are within their guaranteed
// minimum. The sweep must not remove anything while Redis is behind the
// streams (Lag != "").
func TestBreakSweepAfterRedisLoss(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	fs, err := cds.NewFS(root)
	if err != nil {
		t.Fatal(err)
	}
	d := testenv.Deps(t, fs)
	const grace = time.Hour
	svc, err := policy.New(d, policy.Settings{Orphans: policy.OrphanSweep{Grace: grace}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := catalog.New(d.Redis, d.Names.Namespace()).ApplyDomain(ctx, catalog.Domain{Domain: "a.example", Reseller: "r1", ProvisionedBy: "test", ProvisionedAt: time.Now()}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.NewConsumer(d.JS, d.Names, bus.DefaultSpec(d.Names.IngestStream(), policy.AdmitConsumer,
		d.Names.RecordingSubject(), d.Names.MessageSubject()), nil, d.Log, d.Bus).Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	key := "recordings/a.example/2026/11/02/rec-1-0000000000a1"
	if _, err := fs.Put(ctx, key, strings.NewReader("RIFF-media"), "audio/wav"); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(root, filepath.FromSlash(key)), now.Add(-2*grace), now.Add(-2*grace)); err != nil {
		t.Fatal(err)
	}
	env := recordingEvent("rec-1", 10, now.Add(-3*grace))
	env.GetRecording().GetMedia().Key = key
	if err := svc.Admit(ctx, env, 1); err != nil {
		t.Fatal(err)
	}

	wipeRedis(t, d) // Redis restarts without its data
	if why, err := svc.Lag(ctx); err != nil || why == "" {
		t.Fatalf("Lag = %q, %v: Redis should be known to be behind", why, err)
	}
	rep, _ := svc.SweepOrphans(ctx, now)
	if _, err := fs.Stat(ctx, key); err != nil {
		t.Fatalf("the media of an admitted recording was swept while Redis was empty (%+v): %v", rep, err)
	}
}

// TestBreakRepeatPublishesTheOtherUpload guards a defect an attack found (fixed): a redelivered or later
// ingest event of an id already decided with another object finishes the
// decision's owed publish with its own body. Two events of one id and
// domain with different objects reach the stream when admission lags past
// the duplicate window (ingest found no record yet). The first is
// admitted (record -> K1) but its decision publish fails; the second is a
// Repeat: its object K2 is rightly removed, but the owed 'P' publishes
// admitted:<domain>/<id> built from the second event, naming K2. The
// first event's redelivery is then deduplicated, so the stream says K2
// forever: the archive router is told about a deleted object, and a
// rebuild writes key=K2, after which the orphan sweep removes K1 (the
// record "points at another object"): the admitted recording is lost.
// The owed effects must be built from the record (or left to the event
// that decided), never from another event.
func TestBreakRepeatPublishesTheOtherUpload(t *testing.T) {
	t.Parallel()
	d, svc, f := faultySetup(t)
	ctx := context.Background()
	at := time.Now().Add(-time.Hour)
	k1, k2 := "recordings/a.example/2026/11/02/rec-x-0000000000a1", "recordings/a.example/2026/11/02/rec-x-0000000000a2"
	first, second := recordingEvent("rec-x", 10, at), recordingEvent("rec-x", 10, at)
	first.GetRecording().GetMedia().Key, second.GetRecording().GetMedia().Key = k1, k2
	stored(t, d, first)
	stored(t, d, second)

	f.failPublish[d.Names.AdmittedSubject()] = 1
	if err := svc.Admit(ctx, first, 1); err == nil {
		t.Fatal("the first admission's publish was to fail")
	}
	if err := svc.Admit(ctx, second, 2); err != nil {
		t.Fatal(err)
	}
	if err := svc.Admit(ctx, first, 1); err != nil { // the redelivery
		t.Fatal(err)
	}
	if !exists(t, d, k1) || exists(t, d, k2) {
		t.Fatalf("K1 exists=%v (want true), K2 exists=%v (want false)", exists(t, d, k1), exists(t, d, k2))
	}
	var keys []string
	if _, _, err := bus.Replay(ctx, d.JS, d.Names.IngestStream(), []string{d.Names.AdmittedSubject()}, func(_ context.Context, env *eventv1.Envelope, _ uint64) error {
		keys = append(keys, env.GetAdmitted().GetRecording().GetMedia().GetKey())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0] != k1 {
		t.Errorf("admitted events name %v, want exactly [%s] (the object the catalog keeps)", keys, k1)
	}
	wipeRedis(t, d)
	if _, err := svc.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	rec, err := catalog.New(d.Redis, d.Names.Namespace()).Record(ctx, "a.example", "rec-x")
	if err != nil || rec.ObjectKey != k1 {
		t.Errorf("after a rebuild the record points at %q (%v), want %s: the sweep would now remove the kept media", rec.ObjectKey, err, k1)
	}
}

// TestBreakEvictionDropsTheVictimsOwedPublish: an SMS is admitted (pe=P)
// but its admitted event fails to publish; before its redelivery, the next
// SMS of a full folder would evict it. Evicting then would write pe=MT over
// the owed P, so the victim's admission would never be published (a
// tombstone for an artifact consumers never saw, and a rebuild without its
// record and id claim). The eviction must wait until the victim's publish
// is confirmed.
func TestBreakEvictionDropsTheVictimsOwedPublish(t *testing.T) {
	t.Parallel()
	d, svc, f := faultySetup(t)
	ctx := context.Background()
	sms := eventv1.DataKind_DATA_KIND_SMS
	limit := &policyv1.PolicyFields{Cap: &policyv1.Cap{Limit: 1, Action: policyv1.CapAction_CAP_ACTION_EVICT_OLDEST, Scope: policyv1.CapScope_CAP_SCOPE_USER_FOLDER}}
	if _, err := svc.SetOverride(ctx, system, ov(sms, policyv1.Level_LEVEL_DOMAIN, "", "a.example", "", limit)); err != nil {
		t.Fatal(err)
	}
	old := time.Now().AddDate(0, 0, -60)
	victim := stored(t, d, messageEvent("sms-a", "a.example", "101", sms, eventv1.MessageFolder_MESSAGE_FOLDER_INBOX, old))
	next := stored(t, d, messageEvent("sms-b", "a.example", "101", sms, eventv1.MessageFolder_MESSAGE_FOLDER_INBOX, old.Add(time.Minute)))

	f.failPublish[d.Names.AdmittedSubject()] = 1
	if err := svc.Admit(ctx, victim, 1); err == nil {
		t.Fatal("the victim's publish was to fail")
	}
	// The eviction waits for the victim's admission to be published: the
	// next SMS is retried, not decided over the victim's owed publish.
	if err := svc.Admit(ctx, next, 2); !errors.Is(err, catalog.ErrPublishPending) || bus.IsPoison(err) {
		t.Fatalf("the eviction of a victim whose admission is unpublished: %v, want a retry (ErrPublishPending)", err)
	}
	if err := svc.Admit(ctx, victim, 1); err != nil { // the redelivery
		t.Fatal(err)
	}
	if err := svc.Admit(ctx, next, 2); err != nil { // the retry evicts now
		t.Fatal(err)
	}
	if rec, err := catalog.New(d.Redis, d.Names.Namespace()).Record(ctx, "a.example", "sms-a"); err != nil || rec.State != catalog.StateDeleted {
		t.Fatalf("sms-a after the retried eviction: %+v %v, want deleted", rec, err)
	}
	admitted := map[string]bool{}
	if _, _, err := bus.Replay(ctx, d.JS, d.Names.IngestStream(), []string{d.Names.AdmittedSubject()}, func(_ context.Context, env *eventv1.Envelope, _ uint64) error {
		admitted[env.GetArtifactId()] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !admitted["sms-a"] {
		t.Errorf("no admitted event for sms-a, which was admitted and then evicted (admitted events: %v)", admitted)
	}
	live := catalogDump(t, d)
	wipeRedis(t, d)
	if _, err := svc.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	diffDumps(t, "live vs rebuilt", live, catalogDump(t, d))
}

// TestBreakDomainTokenOfAnotherReseller guards a defect an attack found (fixed): a domain token is judged
// by its domain name alone. A reseller may issue a domain token for a
// domain nobody has registered yet (the gateway only checks the reseller
// of record when there is one). When that domain later becomes another
// reseller's (first upload wins), the squatter's token still covers it:
// it can list, place and release the victim domain's holds (and read and
// upload through the gateway and ingest, which use the same checks).
func TestBreakDomainTokenOfAnotherReseller(t *testing.T) {
	t.Parallel()
	_, svc := setup(t) // a.example is r1's
	ctx := context.Background()
	squatter := auth.Principal{Name: "r2-squat", Level: auth.LevelDomain, Reseller: "r2", Domain: "a.example"}
	owner := auth.Principal{Name: "a-admin", Level: auth.LevelDomain, Reseller: "r1", Domain: "a.example"}
	h, err := svc.PlaceHold(ctx, owner, holdOn("a.example", "", "", "regulator"))
	if err != nil {
		t.Fatal(err)
	}
	if hs, err := svc.ListHolds(ctx, squatter, "a.example", ""); err == nil {
		t.Errorf("r2's domain token listed r1's holds on a.example: %d", len(hs))
	}
	if _, err := svc.PlaceHold(ctx, squatter, holdOn("a.example", "", "", "freeze a competitor")); err == nil {
		t.Error("r2's domain token placed a hold on r1's domain")
	}
	if err := svc.ReleaseHold(ctx, squatter, h.ID, "gone"); err == nil {
		t.Error("r2's domain token released r1's hold")
	}
}

// TestBreakRebuildForgetsDomainOwners: a rebuild after a Redis loss must
// restore the domain registry (cv:domains), or the first upload that names
// a domain decides again whose it is and another reseller takes it over.
// Provisioning is a config event, so the rebuild restores the owner, and
// another reseller's event for the domain is refused.
func TestBreakRebuildForgetsDomainOwners(t *testing.T) {
	t.Parallel()
	d, svc, _ := faultySetup(t)
	ctx := context.Background()
	if _, _, err := svc.ProvisionDomain(ctx, auth.Principal{Name: "ops", Level: auth.LevelSystem}, "z.example", "r1"); err != nil {
		t.Fatal(err)
	}
	first := recordingEvent("z-rec-1", 10, time.Now().Add(-time.Hour))
	first.Tenant.Domain = "z.example"
	if err := svc.Admit(ctx, stored(t, d, first), 1); err != nil {
		t.Fatal(err)
	}
	wipeRedis(t, d)
	if _, err := svc.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	cat := catalog.New(d.Redis, d.Names.Namespace())
	if owner, err := cat.ResellerOf(ctx, "z.example"); err != nil || owner != "r1" {
		t.Errorf("after a rebuild z.example belongs to %q (%v), want r1", owner, err)
	}
	hijack := recordingEvent("z-rec-2", 10, time.Now().Add(-time.Hour))
	hijack.Tenant.Domain, hijack.Tenant.Reseller = "z.example", "r2"
	err := svc.Admit(ctx, stored(t, d, hijack), 2)
	if owner, _ := cat.ResellerOf(ctx, "z.example"); owner != "r1" || err == nil {
		t.Errorf("r2's upload to r1's z.example after a rebuild: admit err=%v, owner now %q", err, owner)
	}
}

// TestBreakGateWaitsForOwedPublish: the deletion gate must not delete an
// artifact whose admission is not published yet (its tombstone would come
// first, or alone); it answers "retry" until the publish is confirmed, then
// deletes.
func TestBreakGateWaitsForOwedPublish(t *testing.T) {
	t.Parallel()
	d, svc, f := faultySetup(t)
	ctx := context.Background()
	ev := stored(t, d, recordingEvent("rec-gate", 10, time.Now().AddDate(-3, 0, 0)))
	f.failPublish[d.Names.AdmittedSubject()] = 1
	if err := svc.Admit(ctx, ev, 1); err == nil {
		t.Fatal("the admission's publish was to fail")
	}
	req := policy.DeleteRequest{Domain: "a.example", ID: "rec-gate", Explicit: true, Reason: "tenant_delete", Actor: "a-admin"}
	if res, err := svc.Delete(ctx, req); !errors.Is(err, catalog.ErrPublishPending) {
		t.Fatalf("delete before the admission is published: %+v %v, want ErrPublishPending", res, err)
	}
	if err := svc.Admit(ctx, ev, 1); err != nil { // the redelivery publishes
		t.Fatal(err)
	}
	res, err := svc.Delete(ctx, req)
	if err != nil || res.Outcome != catalog.Deleted {
		t.Fatalf("delete after the publish: %+v %v, want deleted", res, err)
	}
	var order []string
	if _, _, err := bus.Replay(ctx, d.JS, d.Names.IngestStream(), d.Names.DecisionSubjects(), func(_ context.Context, env *eventv1.Envelope, _ uint64) error {
		order = append(order, env.GetType())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(order, []string{"artifact.admitted", "artifact.deleted"}) {
		t.Fatalf("decision events %v, want the admission then the tombstone", order)
	}
}
