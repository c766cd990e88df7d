package policy_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/cdr"
	"github.com/callvault/callvault/pkg/testenv"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
	"github.com/callvault/callvault/services/policy"
)

// A Redis that lost everything is caught up from the streams, and the CDR
// index, which the streams do not hold, from the segment objects.
func TestCatchUpRebuildsTheCdrIndex(t *testing.T) {
	d, svc := newService(t, policy.Settings{})
	runService(t, svc)
	ctx := context.Background()
	if _, _, err := svc.ProvisionDomain(ctx, system, "a.example", "r1"); err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 3, 9, 0, 0, 0, time.UTC)
	for i := range 50 {
		at := start.Add(time.Duration(i) * 47 * time.Minute)
		c := &cdrv1.Cdr{Id: fmt.Sprintf("c%d", i), CallId: fmt.Sprintf("call-%d", i), Reseller: "r1", Domain: "a.example",
			Direction: "inbound", From: "+15550100", To: "100", StartedAt: timestamppb.New(at),
			EndedAt: timestamppb.New(at.Add(time.Minute)), DurationS: 60, Disposition: "no_answer"}
		msg, err := bus.EnvelopeMsg(d.Names.CdrSubject(), cdr.ToEvent(c, time.Now(), "test"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.JS.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	q := &cdrv1.Query{Domain: "a.example", From: timestamppb.New(start), To: timestamppb.New(start.AddDate(0, 0, 3))}
	count := func() int {
		n := 0
		err := svc.Ledger().Export(ctx, system, q, func(cs []*cdrv1.Cdr) error { n += len(cs); return nil })
		if err != nil {
			return -1
		}
		return n
	}
	testenv.WaitFor(t, "the CDRs in segments", func() bool { return count() == 50 })
	parts, err := svc.Ledger().ListPartitions(ctx, system, "a.example", "")
	if err != nil {
		t.Fatal(err)
	}
	wipeRedis(t, d)
	why, _, err := svc.CatchUp(ctx)
	if err != nil || why == "" {
		t.Fatalf("CatchUp after losing Redis: %q, %v", why, err)
	}
	if n := count(); n != 50 {
		t.Fatalf("after the catch-up an export returns %d CDRs, want 50", n)
	}
	again, err := svc.Ledger().ListPartitions(ctx, system, "a.example", "")
	if err != nil || len(again) != len(parts) {
		t.Fatalf("partitions after the catch-up: %v, %v; before %v", again, err, parts)
	}
	for i := range parts {
		if again[i].GetDay() != parts[i].GetDay() || again[i].GetCdrs() != parts[i].GetCdrs() || again[i].GetBytes() != parts[i].GetBytes() {
			t.Errorf("partition %d: %v after, %v before", i, again[i], parts[i])
		}
	}
}
