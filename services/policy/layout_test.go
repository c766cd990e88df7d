package policy_test

import (
	"context"
	"errors"
	"testing"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/testenv"
)

// TestRedisOfAnotherLayoutIsNotUsed marks Redis as an earlier version
// left it (applied marks, no layout): the policy service refuses to catch
// up over it, saying how to proceed, and no token is accepted from it; an
// emptied Redis is rebuilt and served again.
func TestRedisOfAnotherLayoutIsNotUsed(t *testing.T) {
	t.Parallel()
	d, svc := setup(t)
	ctx := context.Background()
	key := bus.AppliedKey(d.Names.Namespace())
	if err := d.Redis.HDel(ctx, key, bus.AppliedLayoutField).Err(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.CatchUp(ctx); !errors.Is(err, catalog.ErrOtherLayout) {
		t.Fatalf("CatchUp over an earlier layout = %v, want ErrOtherLayout", err)
	}
	if _, err := d.Tokens.Authenticate(ctx, testenv.BootstrapToken); !errors.Is(err, apierr.ErrUnavailable) {
		t.Fatalf("Authenticate over an earlier layout = %v, want unavailable", err)
	}
	if err := d.Redis.HSet(ctx, key, bus.AppliedLayoutField, "packed-0").Err(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.CatchUp(ctx); !errors.Is(err, catalog.ErrOtherLayout) {
		t.Fatalf("CatchUp over layout packed-0 = %v, want ErrOtherLayout", err)
	}
	wipeRedis(t, d)
	if why, _, err := svc.CatchUp(ctx); err != nil || why == "" {
		t.Fatalf("CatchUp of an emptied Redis = %q, %v; want a rebuild", why, err)
	}
	if _, err := d.Tokens.Authenticate(ctx, testenv.BootstrapToken); err != nil {
		t.Fatalf("Authenticate after the rebuild = %v", err)
	}
}
