package policy

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/callvault/callvault/pkg/bus"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
)

// ApplyConfig applies one policy config event (a domain provisioning, a
// hold, an override or a bundle assignment), at stream sequence seq, to
// Redis; replaying the config stream through it restores them all. Only a
// provisioning uses seq: it is the domain's number.
func (s *Service) ApplyConfig(ctx context.Context, env *eventv1.Envelope, seq uint64) error {
	switch env.GetConfig().GetEntity() {
	case entityHold:
		return s.applyHold(ctx, env)
	case entityOverride:
		return s.applyOverride(ctx, env)
	case entityBundle:
		return s.applyBundle(ctx, env)
	case entityDomain:
		return s.applyDomain(ctx, env, seq)
	default:
		return nil
	}
}

// applyChange decodes a config change into T and applies it: put the state
// after it, or, for a removal (no after), remove the state before it. It
// reads the typed payload (schema version 2) and, for older events that
// have none, the JSON of the entity.
func applyChange[T any](env *eventv1.Envelope, typed func(*eventv1.ConfigPayload) (T, bool), put, remove func(T) error) error {
	c := env.GetConfig()
	if c.GetBefore() != nil || c.GetAfter() != nil {
		p, apply := c.GetAfter(), put
		if p == nil {
			p, apply = c.GetBefore(), remove
		}
		v, ok := typed(p)
		if !ok || apply == nil {
			return bus.Poison(fmt.Errorf("%s event %s: no payload of the entity's type", c.GetEntity(), env.GetId()))
		}
		return apply(v)
	}
	raw, apply := c.GetAfterJson(), put
	if raw == "" {
		raw, apply = c.GetBeforeJson(), remove
	}
	if raw == "" || apply == nil {
		return bus.Poison(fmt.Errorf("%s event %s: nothing to apply", c.GetEntity(), env.GetId()))
	}
	var v T
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		return bus.Poison(fmt.Errorf("%s event %s: %w", c.GetEntity(), env.GetId(), err))
	}
	return apply(v)
}

// RebuildConfig replays every config event (tokens, domains, holds,
// overrides, bundle assignments) in the order they were made.
func (s *Service) RebuildConfig(ctx context.Context) (int, error) {
	n, _, err := bus.Replay(ctx, s.d.JS, s.d.Names.ConfigStream(), nil, func(ctx context.Context, env *eventv1.Envelope, seq uint64) error {
		return s.applyConfigEvent(ctx, env, seq)
	})
	return n, err
}
