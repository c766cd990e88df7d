package policy_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/testenv"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	"github.com/callvault/callvault/services/policy"
)

// TestBreakRevokedTokenLivesDuringRebuild guards a defect an attack found (fixed): a rebuild of an
// emptied Redis brings a revoked token back to life for a while. The config
// stream is replayed in place, in order: the token's issue is applied, then
// every config event after it, and only then its revocation. Authenticate
// reads the same hash meanwhile and accepts the token. Here 1,500 other
// config events separate the issue from the revocation, and the revoked
// token is accepted while they are replayed. Requests must not be answered
// from a Redis whose applied marks are absent (or the rebuild must apply
// revocations before issues become visible).
func TestBreakRevokedTokenLivesDuringRebuild(t *testing.T) {
	t.Parallel()
	fs, err := cds.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := testenv.Deps(t, fs)
	svc, err := policy.New(d, policy.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	system := auth.Principal{Name: "ops", Level: auth.LevelSystem}
	tok, info, err := d.Tokens.Issue(ctx, system, auth.Principal{Name: "leaked", Level: auth.LevelReseller, Reseller: "r1"}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1500 {
		sum := sha256.Sum256([]byte(fmt.Sprintf("filler-%d", i)))
		env := &eventv1.Envelope{Id: fmt.Sprintf("filler-%d", i), AcceptedAt: timestamppb.Now(), Source: "auth",
			Body: &eventv1.Envelope_TokenIssued{TokenIssued: &eventv1.TokenIssued{TokenSha256: hex.EncodeToString(sum[:]),
				Name: fmt.Sprintf("f%d", i), Level: "reseller", Reseller: "r2", IssuedBy: "ops", IssuedAt: timestamppb.Now()}}}
		if _, err := bus.PublishEnvelope(ctx, d.JS, d.Names.TokenSubject(), env.GetId(), env); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.Tokens.Revoke(ctx, system, info.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Tokens.Authenticate(ctx, tok); err == nil {
		t.Fatal("the revoked token authenticates before the flush")
	}

	flush(t, d)
	var accepted atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if p, err := d.Tokens.Authenticate(ctx, tok); err == nil && p.Name == "leaked" {
				accepted.Add(1)
			}
		}
	}()
	if _, _, err := svc.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	close(stop)
	<-done
	if n := accepted.Load(); n > 0 {
		t.Errorf("the revoked token was accepted %d times while Redis was rebuilt", n)
	}
	if _, err := d.Tokens.Authenticate(ctx, tok); err == nil {
		t.Error("the revoked token authenticates after the rebuild")
	}
}
