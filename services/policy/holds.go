package policy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/tenant"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
	"github.com/callvault/callvault/services/policy/internal/hold"
)

// entityHold names legal holds in config events.
const entityHold = "legal_hold"

// maxReasonLen bounds a hold's or a release's reason.
const maxReasonLen = 500

// PlaceHold validates and places a hold, recording it on the config stream
// first so a replay restores it.
func (s *Service) PlaceHold(ctx context.Context, p auth.Principal, in *policyv1.Hold) (hold.Hold, error) {
	v := &apierr.ValidationError{}
	sc := in.GetScope()
	switch sc.GetLevel() {
	case policyv1.Level_LEVEL_UNSPECIFIED, policyv1.Level_LEVEL_DOMAIN, policyv1.Level_LEVEL_USER:
	default:
		v.Add("hold.scope.level", "must be domain or user: a hold covers a domain, a user or a call")
	}
	if err := tenant.CheckDomain(sc.GetDomain()); err != nil {
		v.Add("hold.scope.domain", "%v", err)
	}
	if sc.GetUser() != "" {
		if err := tenant.CheckName(sc.GetUser()); err != nil {
			v.Add("hold.scope.user", "%v", err)
		}
	} else if sc.GetLevel() == policyv1.Level_LEVEL_USER {
		v.Add("hold.scope.user", "is required for a user-level hold")
	}
	if in.GetCallId() != "" {
		if err := tenant.CheckCallID(in.GetCallId()); err != nil {
			v.Add("hold.call_id", "%v", err)
		}
	}
	switch r := in.GetReason(); {
	case r == "":
		v.Add("hold.reason", "is required: say why deletions are frozen")
	case len(r) > maxReasonLen:
		v.Add("hold.reason", "must be at most %d characters", maxReasonLen)
	}
	if err := v.Err(); err != nil {
		return hold.Hold{}, err
	}
	reseller, err := s.catalog.AuthorizeDomain(ctx, p, sc.GetDomain())
	if err != nil {
		return hold.Hold{}, err
	}
	id := make([]byte, 8)
	if _, err := rand.Read(id); err != nil {
		return hold.Hold{}, fmt.Errorf("hold id: %w", err)
	}
	h := hold.Hold{
		ID: "hold-" + hex.EncodeToString(id), Reseller: reseller, Domain: sc.GetDomain(), User: sc.GetUser(),
		CallID: in.GetCallId(), Reason: in.GetReason(), PlacedBy: p.Name, PlacedAt: time.Now().UTC().Truncate(time.Millisecond),
		PlacedLevel: string(p.Level),
	}
	if err := s.recordHold(ctx, h, nil, p.Name, ""); err != nil {
		return hold.Hold{}, err
	}
	return h, nil
}

// ReleaseHold removes a hold, recording who released it and why.
func (s *Service) ReleaseHold(ctx context.Context, p auth.Principal, id, reason string) error {
	v := &apierr.ValidationError{}
	if id == "" {
		v.Add("id", "is required")
	}
	switch {
	case reason == "":
		v.Add("reason", "is required: say why the hold is released")
	case len(reason) > maxReasonLen:
		v.Add("reason", "must be at most %d characters", maxReasonLen)
	}
	if err := v.Err(); err != nil {
		return err
	}
	h, err := s.holds.Get(ctx, id)
	if errors.Is(err, hold.ErrNotFound) {
		return fmt.Errorf("%w: hold %s", apierr.ErrNotFound, id)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	if _, err := s.catalog.AuthorizeDomain(ctx, p, h.Domain); err != nil {
		return fmt.Errorf("%w: hold %s", apierr.ErrNotFound, id) // another tenant's hold does not exist for p
	}
	if !h.ReleasableBy(string(p.Level)) {
		level := h.PlacedLevel
		if level == "" {
			level = "system"
		}
		return fmt.Errorf("%w: hold %s was placed at %s level; a %s token cannot release it", apierr.ErrForbidden, id, level, p.Level)
	}
	return s.recordHold(ctx, h, &h, p.Name, reason)
}

// recordHold publishes the change, then applies it. before is nil for a
// placement; a release has before = the hold and no after.
func (s *Service) recordHold(ctx context.Context, h hold.Hold, before *hold.Hold, actor, reason string) error {
	change := &eventv1.ConfigChanged{Entity: entityHold, EntityId: h.ID, Actor: actor, Reason: reason}
	msgID, typ := "hold-place-"+h.ID, typeHoldPlaced
	if before == nil {
		change.After = holdPayload(&h)
	} else {
		change.Before, msgID, typ = holdPayload(before), "hold-release-"+h.ID, typeHoldReleased
	}
	env := &eventv1.Envelope{
		Id: msgID, AcceptedAt: timestamppb.Now(), Source: "policy", Type: typ, SchemaVersion: configSchema,
		Tenant: &eventv1.Tenant{Reseller: h.Reseller, Domain: h.Domain, User: h.User},
		Body:   &eventv1.Envelope_Config{Config: change},
	}
	if _, err := bus.PublishEnvelope(ctx, s.d.JS, s.d.Names.HoldSubject(), msgID, env); err != nil {
		return fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	if err := s.ApplyConfig(ctx, env, 0); err != nil {
		return fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	return nil
}

func (s *Service) applyHold(ctx context.Context, env *eventv1.Envelope) error {
	return applyChange(env, holdFromPayload,
		func(h hold.Hold) error { return s.holds.Put(ctx, h) },
		func(h hold.Hold) error { return s.holds.Delete(ctx, h) })
}

// ListHolds lists a domain's holds, optionally one user's.
func (s *Service) ListHolds(ctx context.Context, p auth.Principal, domain, user string) ([]hold.Hold, error) {
	if err := tenant.CheckDomain(domain); err != nil {
		return nil, apierr.Invalid("scope.domain", "%v", err)
	}
	if _, err := s.catalog.AuthorizeDomain(ctx, p, domain); err != nil {
		return nil, err
	}
	all, err := s.holds.List(ctx, domain)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	if user == "" {
		return all, nil
	}
	var out []hold.Hold
	for _, h := range all {
		if h.User == "" || h.User == user {
			out = append(out, h)
		}
	}
	return out, nil
}

// MayDelete answers whether any hold forbids deleting an artifact now.
// Every deleting path asks before it deletes.
func (s *Service) MayDelete(ctx context.Context, p auth.Principal, domain, id string) (bool, []hold.Hold, error) {
	v := &apierr.ValidationError{}
	if err := tenant.CheckDomain(domain); err != nil {
		v.Add("domain", "%v", err)
	}
	if err := tenant.CheckID(id); err != nil {
		v.Add("artifact_id", "%v", err)
	}
	if err := v.Err(); err != nil {
		return false, nil, err
	}
	if _, err := s.catalog.AuthorizeDomain(ctx, p, domain); err != nil {
		return false, nil, err
	}
	rec, err := s.catalog.GetRecording(ctx, domain, id)
	if errors.Is(err, catalog.ErrNotFound) {
		return false, nil, fmt.Errorf("%w: artifact %s in %s", apierr.ErrNotFound, id, domain)
	}
	if err != nil {
		return false, nil, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	blocking, err := s.holds.Covering(ctx, domain, rec.User, rec.CallID)
	if err != nil {
		return false, nil, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	return len(blocking) == 0, blocking, nil
}
