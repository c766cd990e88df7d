package catalog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// One rebuild at a time, across processes: a rebuild empties the catalog
// and counts each record once, when its HSETNX finds it absent, so a
// second rebuild wiping midway would leave the first one's index entries
// and counters for records the second counts again. The rebuild lock is a
// lease in Redis that its holder renews; a holder that loses it (paused
// past the lease, Redis failing) has its context cancelled and stops.

// RebuildLease is how long the rebuild lock lasts without a renewal; its
// holder renews it every third of that.
const RebuildLease = 60 * time.Second

// ErrRebuildLockLost cancels a rebuild whose lock was taken over or could
// not be renewed.
var ErrRebuildLockLost = errors.New("catalog: the rebuild lock was lost")

var (
	renewScript   = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`)
	releaseScript = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`)
)

func (k keys) rebuildLock() string { return k.ns + ":rebuild:lock" }

// LockRebuild waits until it holds the rebuild lock (or ctx ends). The
// context it returns is cancelled, with ErrRebuildLockLost as its cause,
// if the lock is lost; release gives the lock up (calling it again does
// nothing).
func (c *Catalog) LockRebuild(ctx context.Context) (held context.Context, release func(), err error) {
	return c.lockRebuild(ctx, RebuildLease)
}

func (c *Catalog) lockRebuild(ctx context.Context, lease time.Duration) (context.Context, func(), error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, nil, err
	}
	token := hex.EncodeToString(b)
	key := c.k.rebuildLock()
	wait := 50 * time.Millisecond
	for {
		ok, err := c.rdb.SetNX(ctx, key, token, lease).Result()
		if err != nil {
			return nil, nil, fmt.Errorf("catalog rebuild lock: %w", err)
		}
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("catalog rebuild lock: another rebuild holds it: %w", ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
	held, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(lease / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-held.Done():
				return
			case <-t.C:
				n, err := renewScript.Run(held, c.rdb, []string{key}, token, lease.Milliseconds()).Int()
				if err != nil || n == 0 {
					cancel(fmt.Errorf("%w (renewal: %d, %v)", ErrRebuildLockLost, n, err))
					return
				}
			}
		}
	}()
	var once sync.Once
	release := func() {
		once.Do(func() {
			close(done)
			<-stopped
			cancel(nil)
			ctx, stop := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer stop()
			_ = releaseScript.Run(ctx, c.rdb, []string{key}, token).Err()
		})
	}
	return held, release, nil
}
