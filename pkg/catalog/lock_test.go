package catalog_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/testenv"
)

// TestRebuildLockIsExclusive: a second holder waits until the first
// releases; a holder whose lease another took over (it paused past the
// lease) sees its context cancelled with ErrRebuildLockLost; a waiter
// whose context ends gets an error and no lock.
func TestRebuildLockIsExclusive(t *testing.T) {
	t.Parallel()
	ns := testenv.Namespace(t)
	rdb := testenv.Redis(t, ns)
	c := catalog.New(rdb, ns)
	ctx := ctxT(t)

	held, release, err := catalog.LockRebuildFor(c, ctx, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan time.Time, 1)
	go func() {
		_, release2, err := catalog.LockRebuildFor(c, ctx, 3*time.Second)
		if err != nil {
			t.Error(err)
			got <- time.Time{}
			return
		}
		got <- time.Now()
		release2()
	}()
	time.Sleep(400 * time.Millisecond)
	released := time.Now()
	if held.Err() != nil {
		t.Fatalf("the holder's context ended while it held the lock: %v", context.Cause(held))
	}
	release()
	if at := <-got; at.Before(released) {
		t.Fatalf("the second holder got the lock at %v, before the first released it at %v", at, released)
	}

	// Waiting ends with the caller's context.
	_, release3, err := catalog.LockRebuildFor(c, ctx, 600*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, _, err := catalog.LockRebuildFor(c, short, time.Second); err == nil {
		t.Fatal("a second holder got the lock while the first held it")
	}
	release3()

	// A lease that lapsed and was taken by another is lost.
	lost, releaseLost, err := catalog.LockRebuildFor(c, ctx, 600*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseLost()
	if err := rdb.Set(ctx, ns+":rebuild:lock", "another holder", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost.Done():
		if !errors.Is(context.Cause(lost), catalog.ErrRebuildLockLost) {
			t.Fatalf("cause = %v, want ErrRebuildLockLost", context.Cause(lost))
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the holder whose lock was taken over kept going")
	}
	releaseLost()
	if v, _ := rdb.Get(ctx, ns+":rebuild:lock").Result(); v != "another holder" {
		t.Fatalf("releasing a lost lock removed the new holder's: %q", v)
	}
}
