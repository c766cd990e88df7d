package router_test

import (
	"context"
	"testing"
	"time"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/testenv"
)

// TestPoisonDecisionIsDeadLetteredOnceAcrossRedisLoss: an admission that
// can never be archived (a bad domain, no media) is dead-lettered by the
// consumer. When Redis later loses the router's state, the restore parks
// every decision the consumer was handed that has no archive record,
// poison ones included; the drainer then dead-letters them again under a
// Nats-Msg-Id of its own, so the dead-letter stream holds the same
// admission twice (and once more after every further loss).
func TestPoisonDecisionIsDeadLetteredOnceAcrossRedisLoss(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	rg.createPair(aDomain)(s3Config(t, "D", "domain", "a.example", "s3", rg.bucket(false)))
	ctx := context.Background()
	rg.publishAdmitted(recording{id: "rec-nomedia", domain: "a.example", reseller: "r1", body: []byte("x")}, "", "no-media")
	rg.admit(recording{id: "rec-ok", domain: "a.example", reseller: "r1", body: randomBytes(100)})
	rg.waitState("a.example", "rec-ok", "archived")
	testenv.WaitFor(t, "the poison decision dead-lettered", func() bool {
		dls, _ := bus.ListDeadLetters(ctx, rg.d.JS, rg.d.Names, 1, 10)
		return len(dls) == 1
	})

	rg.loseRouterState()
	rg.stop()
	rg.start()
	rg.waitState("a.example", "rec-ok", "archived")
	// Several drain rounds.
	time.Sleep(3 * time.Second)
	dls, err := bus.ListDeadLetters(ctx, rg.d.JS, rg.d.Names, 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 {
		for _, d := range dls {
			t.Logf("dead letter: seq %d reason %q", d.Sequence, d.Reason)
		}
		t.Errorf("one poison admission has %d dead letters after a Redis loss, want 1", len(dls))
	}
}
