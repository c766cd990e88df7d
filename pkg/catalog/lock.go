package catalog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
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

// Writers that apply events register while they work, so that a rebuild
// empties the catalog only once none is deciding against it: a writer
// registers, then checks that the applied marks exist (a rebuild removes
// them first), so one that saw them registered before the rebuild began
// and the rebuild waits for it (WaitWriters). A registration lapses after
// its lease, so a writer that died does not hold rebuilds back.

func (k keys) writers() string { return k.ns + ":rebuild:writers" }

// EnterWriter registers a writer for at most lease and returns the
// function that ends the registration.
func (c *Catalog) EnterWriter(ctx context.Context, lease time.Duration) (func(), error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	token := hex.EncodeToString(b)
	until := time.Now().Add(lease).UnixMilli()
	if err := c.rdb.ZAdd(ctx, c.k.writers(), redis.Z{Score: float64(until), Member: token}).Err(); err != nil {
		return nil, fmt.Errorf("catalog writer: %w", err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			ctx, stop := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer stop()
			_ = c.rdb.ZRem(ctx, c.k.writers(), token).Err()
		})
	}, nil
}

// WaitWriters waits until no registered writer's lease is live.
func (c *Catalog) WaitWriters(ctx context.Context) error {
	for {
		now := strconv.FormatInt(time.Now().UnixMilli(), 10)
		if err := c.rdb.ZRemRangeByScore(ctx, c.k.writers(), "-inf", "("+now).Err(); err != nil {
			return fmt.Errorf("catalog writers: %w", err)
		}
		n, err := c.rdb.ZCard(ctx, c.k.writers()).Result()
		if err != nil {
			return fmt.Errorf("catalog writers: %w", err)
		}
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("catalog writers: %d still applying events: %w", n, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
