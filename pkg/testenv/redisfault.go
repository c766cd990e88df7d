package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
)

// ErrInjected is the error a RedisFault answers with.
var ErrInjected = errors.New("injected redis fault")

// RedisFault makes the commands of a Redis client that touch a key
// containing a chosen substring fail while it is on, to show that a path
// refuses (fails closed) when Redis cannot answer.
type RedisFault struct {
	match atomic.Pointer[string]
}

// InjectRedisFaults installs a fault hook on rdb, off until Fail is
// called and off again when the test ends (so its keys are cleaned up).
func InjectRedisFaults(t testing.TB, rdb redis.UniversalClient) *RedisFault {
	f := &RedisFault{}
	rdb.AddHook(f)
	t.Cleanup(f.Heal)
	return f
}

// Fail makes every command naming a key that contains substr fail.
func (f *RedisFault) Fail(substr string) { f.match.Store(&substr) }

// Heal turns the faults off.
func (f *RedisFault) Heal() { f.match.Store(nil) }

func (f *RedisFault) hit(cmd redis.Cmder) bool {
	m := f.match.Load()
	if m == nil {
		return false
	}
	for _, a := range cmd.Args()[1:] {
		if s, ok := a.(string); ok && strings.Contains(s, *m) {
			return true
		}
	}
	return false
}

// DialHook is part of redis.Hook.
func (f *RedisFault) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

// ProcessHook is part of redis.Hook.
func (f *RedisFault) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if f.hit(cmd) {
			err := fmt.Errorf("%s: %w", cmd.Name(), ErrInjected)
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook is part of redis.Hook.
func (f *RedisFault) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if f.hit(c) {
				err := fmt.Errorf("%s: %w", c.Name(), ErrInjected)
				for _, c := range cmds {
					c.SetErr(err)
				}
				return err
			}
		}
		return next(ctx, cmds)
	}
}
