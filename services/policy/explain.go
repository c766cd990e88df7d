package policy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/retention"
	"github.com/callvault/callvault/pkg/tenant"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	"github.com/callvault/callvault/services/policy/internal/hold"
)

// ceiling is the operator's recording ceiling.
func (s *Service) ceiling() retention.Duration {
	if s.preset.RecordingCeiling.IsZero() {
		return retention.DefaultCeiling
	}
	return s.preset.RecordingCeiling
}

// Resolve returns the effective policy of kind for a tenant. Callers below
// system level may only resolve tenants they cover.
func (s *Service) Resolve(ctx context.Context, p auth.Principal, k eventv1.DataKind, t *eventv1.Tenant) (retention.Policy, error) {
	kind, err := kindOf(k, "kind")
	if err != nil {
		return retention.Policy{}, err
	}
	reseller := t.GetReseller()
	if t.GetDomain() != "" {
		if err := tenant.CheckDomain(t.GetDomain()); err != nil {
			return retention.Policy{}, apierr.Invalid("tenant.domain", "%v", err)
		}
		r, err := s.catalog.AuthorizeDomain(ctx, p, t.GetDomain())
		if err != nil {
			return retention.Policy{}, err
		}
		if r != "" {
			reseller = r // the reseller of record decides, not the request
		}
	} else if p.Level != auth.LevelSystem && !(p.Level == auth.LevelReseller && p.Reseller == reseller) {
		return retention.Policy{}, fmt.Errorf("%w: token %s may not resolve that tenant", apierr.ErrForbidden, p.Name)
	}
	chain, err := s.overrides.Chain(ctx, kind, reseller, t.GetDomain(), t.GetUser())
	if err != nil {
		return retention.Policy{}, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	return retention.Resolve(s.preset, kind, chain)
}

// Explanation says why an artifact is kept and until when.
type Explanation struct {
	Policy   retention.Policy
	Cullable time.Time
	DeleteBy time.Time // zero: never; never before Cullable
	Holds    []hold.Hold
}

// artifactKind maps an artifact hash's kind and mode to its retention
// class.
func artifactKind(kind, mode string) (retention.Kind, error) {
	switch kind {
	case catalog.KindRecording:
		if mode == "on_demand" {
			return retention.RecordingOnDemand, nil
		}
		return retention.RecordingAutomatic, nil
	default:
		return retention.ParseKind(kind)
	}
}

// storedArtifact is what Explain reads of an artifact's catalog hash.
type storedArtifact struct {
	kind           retention.Kind
	reseller, user string
	callID         string
	started        time.Time
}

func (s *Service) readArtifact(ctx context.Context, domain, id string) (storedArtifact, error) {
	rec, err := s.catalog.Record(ctx, domain, id)
	if errors.Is(err, catalog.ErrNoRecord) || (err == nil && rec.State != catalog.StateAdmitted) {
		return storedArtifact{}, fmt.Errorf("%w: artifact %s in %s", apierr.ErrNotFound, id, domain)
	}
	if err != nil {
		return storedArtifact{}, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	kind, err := artifactKind(rec.Kind, rec.Mode)
	if err != nil {
		return storedArtifact{}, fmt.Errorf("artifact %s in %s: %w", id, domain, err)
	}
	return storedArtifact{kind: kind, reseller: rec.Reseller, user: rec.User, callID: rec.CallID, started: rec.StartedAt}, nil
}

// Explain resolves an artifact's policy, by its own kind, under the
// current overrides: a change to a policy re-dates artifacts already
// stored. Dates count from the call's start (a message's receipt).
func (s *Service) Explain(ctx context.Context, p auth.Principal, domain, id string) (Explanation, error) {
	v := &apierr.ValidationError{}
	if err := tenant.CheckDomain(domain); err != nil {
		v.Add("domain", "%v", err)
	}
	if err := tenant.CheckID(id); err != nil {
		v.Add("artifact_id", "%v", err)
	}
	if err := v.Err(); err != nil {
		return Explanation{}, err
	}
	if _, err := s.catalog.AuthorizeDomain(ctx, p, domain); err != nil {
		return Explanation{}, err
	}
	a, err := s.readArtifact(ctx, domain, id)
	if err != nil {
		return Explanation{}, err
	}
	pol, err := s.Resolve(ctx, p, kindProto(a.kind), &eventv1.Tenant{Reseller: a.reseller, Domain: domain, User: a.user})
	if err != nil {
		return Explanation{}, err
	}
	holds, err := s.holds.Covering(ctx, domain, a.user, a.callID)
	if err != nil {
		return Explanation{}, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	cull, del := pol.Dates(a.started)
	return Explanation{Policy: pol, Cullable: cull, DeleteBy: del, Holds: holds}, nil
}
