package policy_test

import (
	"context"
	"maps"
	"strconv"
	"sync"
	"testing"
	"time"

	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/services/policy"
)

// TestBreak2DomainNumbersAreStreamSequences: racing provisionings of one
// domain by two resellers, a retried request (duplicate PubAck), and a
// provisioning the config consumer would re-apply: every domain's number
// is its provisioning event's stream sequence, and a rebuild from an
// empty Redis gives the same numbers.
func TestBreak2DomainNumbersAreStreamSequences(t *testing.T) {
	t.Parallel()
	d, svc := newService(t, policy.Settings{})
	ctx := context.Background()
	ns := d.Names.Namespace()
	var wg sync.WaitGroup
	for _, r := range []string{"r1", "r2", "r1"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, _ = svc.ProvisionDomain(ctx, system, "race.example", r)
		}()
	}
	wg.Wait()
	for _, dom := range []string{"a.example", "b.example", "a.example"} { // a retried
		if _, _, err := svc.ProvisionDomain(ctx, system, dom, "r1"); err != nil {
			t.Fatal(err)
		}
	}
	st, err := d.JS.Stream(ctx, d.Names.ConfigStream())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, dom := range []string{"race.example", "a.example", "b.example"} {
		m, err := st.GetLastMsgForSubject(ctx, d.Names.DomainSubject(dom))
		if err != nil {
			t.Fatal(err)
		}
		want[dom] = strconv.FormatUint(m.Sequence, 10)
	}
	live, err := d.Redis.HGetAll(ctx, ns+":{domains}:num").Result()
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(live, want) {
		t.Errorf("live numbers %v, stream sequences %v", live, want)
	}
	flush(t, d)
	if _, _, err := svc.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	rebuilt, err := d.Redis.HGetAll(ctx, ns+":{domains}:num").Result()
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(rebuilt, want) {
		t.Errorf("rebuilt numbers %v, stream sequences %v", rebuilt, want)
	}
}

// TestBreak2HugeMessageSize: a message event declaring a size the decide
// script cannot add (>= ~1e17: Lua formats it as a float for HINCRBY)
// passes artifactOf's CheckArtifact. Expected: dead-lettered at once
// (poison) or admitted whole, and a rebuild that replays it. Observed:
// the first Admit fails retryably after writing the record; the
// redelivery finds the half-written record, answers Repeat and publishes
// the admission, whose replay then fails the whole rebuild.
func TestBreak2HugeMessageSize(t *testing.T) {
	t.Parallel()
	d, svc := setup(t)
	ctx := context.Background()
	env := messageEvent("vm-huge", "a.example", "101", eventv1.DataKind_DATA_KIND_VOICEMAIL, eventv1.MessageFolder_MESSAGE_FOLDER_UNSPECIFIED, time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC))
	env.GetMessage().GetMedia().SizeBytes = 1 << 62
	err := svc.Admit(ctx, env, 7)
	t.Logf("first Admit = %v (poison %v)", err, bus.IsPoison(err))
	if err == nil || bus.IsPoison(err) {
		return
	}
	err = svc.Admit(ctx, env, 7)
	t.Logf("redelivery Admit = %v", err)
	cat := catalog.New(d.Redis, d.Names.Namespace())
	if r, rerr := cat.Record(ctx, "a.example", "vm-huge"); rerr == nil {
		u, _ := cat.Usage(ctx, "a.example")
		t.Errorf("after a failed decision the record is %q (pending %q) and usage is %v: half admitted", r.State, r.Pending, u["voicemail"])
	}
	flush(t, d)
	if _, _, err := svc.CatchUp(ctx); err != nil {
		t.Errorf("rebuild after one such event: %v", err)
	}
}
