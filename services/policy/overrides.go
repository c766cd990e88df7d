package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/retention"
	"github.com/callvault/callvault/pkg/tenant"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
	"github.com/callvault/callvault/services/policy/internal/hold"
	"github.com/callvault/callvault/services/policy/internal/override"
)

// entityOverride names retention overrides in config events.
const entityOverride = "policy_override"

// kindOf maps DATA_KIND_RECORDING_AUTOMATIC to "recording_automatic".
func kindOf(k eventv1.DataKind, field string) (retention.Kind, error) {
	if k == eventv1.DataKind_DATA_KIND_UNSPECIFIED {
		return "", apierr.Invalid(field, "is required")
	}
	kind, err := retention.ParseKind(strings.ToLower(strings.TrimPrefix(k.String(), "DATA_KIND_")))
	if err != nil {
		return "", apierr.Invalid(field, "%v", err)
	}
	return kind, nil
}

func kindProto(k retention.Kind) eventv1.DataKind {
	return eventv1.DataKind(eventv1.DataKind_value["DATA_KIND_"+strings.ToUpper(string(k))])
}

// nodeOf validates a scope, naming bad fields under prefix.
func nodeOf(sc *policyv1.Scope, prefix string) (override.Node, error) {
	v := &apierr.ValidationError{}
	n := override.Node{Reseller: sc.GetReseller(), Domain: sc.GetDomain(), User: sc.GetUser()}
	need := func(field, val string, check func(string) error) {
		if err := check(val); err != nil {
			v.Add(prefix+field, "%v", err)
		}
	}
	none := func(field, val string) {
		if val != "" {
			v.Add(prefix+field, "must be empty at %s level", strings.ToLower(strings.TrimPrefix(sc.GetLevel().String(), "LEVEL_")))
		}
	}
	switch sc.GetLevel() {
	case policyv1.Level_LEVEL_SYSTEM:
		n.Level = retention.LevelSystem
		none("reseller", n.Reseller)
		none("domain", n.Domain)
		none("user", n.User)
	case policyv1.Level_LEVEL_RESELLER:
		n.Level = retention.LevelReseller
		need("reseller", n.Reseller, tenant.CheckName)
		none("domain", n.Domain)
		none("user", n.User)
	case policyv1.Level_LEVEL_DOMAIN:
		n.Level, n.Reseller = retention.LevelDomain, ""
		need("domain", n.Domain, tenant.CheckDomain)
		none("user", n.User)
	case policyv1.Level_LEVEL_USER:
		n.Level, n.Reseller = retention.LevelUser, ""
		if n.Domain == "" {
			v.Add(prefix+"domain", "is required: a user-level override names the user's domain")
		} else {
			need("domain", n.Domain, tenant.CheckDomain)
		}
		need("user", n.User, tenant.CheckName)
	default:
		v.Add(prefix+"level", "must be system, reseller, domain or user")
	}
	return n, v.Err()
}

func fieldsOf(f *policyv1.PolicyFields) retention.Fields {
	var out retention.Fields
	if f.MinStorageDays != nil {
		d := int(f.GetMinStorageDays())
		out.MinStorageDays = &d
	}
	if f.RetentionUnlimited != nil && f.GetRetentionUnlimited() {
		out.Retention = &retention.Retention{Unlimited: true}
	} else if f.RetentionDays != nil {
		out.Retention = &retention.Retention{Days: int(f.GetRetentionDays())}
	}
	if c := f.GetCap(); c != nil {
		out.Cap = &retention.Cap{
			Limit:  c.GetLimit(),
			Action: retention.CapAction(strings.ToLower(strings.TrimPrefix(c.GetAction().String(), "CAP_ACTION_"))),
			Scope:  retention.CapScope(strings.ToLower(strings.TrimPrefix(c.GetScope().String(), "CAP_SCOPE_"))),
		}
	}
	out.NoCap = f.GetNoCap()
	if f.PurchasedDays != nil {
		d := int(f.GetPurchasedDays())
		out.PurchasedDays = &d
	}
	return out
}

func capProto(c *retention.Cap) *policyv1.Cap {
	if c == nil {
		return nil
	}
	return &policyv1.Cap{
		Limit:  c.Limit,
		Action: policyv1.CapAction(policyv1.CapAction_value["CAP_ACTION_"+strings.ToUpper(string(c.Action))]),
		Scope:  policyv1.CapScope(policyv1.CapScope_value["CAP_SCOPE_"+strings.ToUpper(string(c.Scope))]),
	}
}

func int32p(p *int) *int32 {
	if p == nil {
		return nil
	}
	v := int32(*p)
	return &v
}

func overrideProto(o override.Stored) *policyv1.Override {
	f := &policyv1.PolicyFields{MinStorageDays: int32p(o.Fields.MinStorageDays), Cap: capProto(o.Fields.Cap), PurchasedDays: int32p(o.Fields.PurchasedDays)}
	if r := o.Fields.Retention; r != nil {
		unlimited, days := r.Unlimited, int32(r.Days)
		f.RetentionUnlimited, f.RetentionDays = &unlimited, &days
	}
	if o.Fields.NoCap {
		t := true
		f.NoCap = &t
	}
	return &policyv1.Override{
		Kind:      kindProto(o.Kind),
		Scope:     &policyv1.Scope{Level: levelProto(o.Node.Level), Reseller: o.Node.Reseller, Domain: o.Node.Domain, User: o.Node.User},
		Fields:    f,
		UpdatedBy: o.UpdatedBy,
		UpdatedAt: timestamppb.New(o.UpdatedAt),
	}
}

// authorizeNode checks p may change the overrides of node n. System
// defaults are the operator's; a reseller's are its own or the system's;
// a domain's and its users' belong to whoever covers the domain.
func (s *Service) authorizeNode(ctx context.Context, p auth.Principal, n override.Node) (string, error) {
	switch n.Level {
	case retention.LevelSystem:
		if p.Level != auth.LevelSystem {
			return "", fmt.Errorf("%w: only system tokens change system defaults", apierr.ErrForbidden)
		}
		return "", nil
	case retention.LevelReseller:
		if !(p.Level == auth.LevelSystem || (p.Level == auth.LevelReseller && p.Reseller == n.Reseller)) {
			return "", fmt.Errorf("%w: token %s does not cover reseller %s", apierr.ErrForbidden, p.Name, n.Reseller)
		}
		return n.Reseller, nil
	default:
		return s.catalog.AuthorizeDomain(ctx, p, n.Domain)
	}
}

// SetOverride validates and stores an override. Besides each field's own
// bounds, the policy it resolves to at its node must keep retention at or
// above the minimum.
func (s *Service) SetOverride(ctx context.Context, p auth.Principal, in *policyv1.Override) (override.Stored, error) {
	kind, kerr := kindOf(in.GetKind(), "override.kind")
	n, nerr := nodeOf(in.GetScope(), "override.scope.")
	v := &apierr.ValidationError{}
	for _, err := range []error{kerr, nerr} {
		var ve *apierr.ValidationError
		if errors.As(err, &ve) {
			v.Violations = append(v.Violations, ve.Violations...)
		}
	}
	if in.GetFields() == nil {
		v.Add("override.fields", "is required")
	}
	if err := v.Err(); err != nil {
		return override.Stored{}, err
	}
	fields := fieldsOf(in.GetFields())
	if err := retention.ValidateFields(kind, fields, "override.fields."); err != nil {
		return override.Stored{}, err
	}
	reseller, err := s.authorizeNode(ctx, p, n)
	if err != nil {
		return override.Stored{}, err
	}
	chain, err := s.overrides.Chain(ctx, kind, reseller, n.Domain, n.User)
	if err != nil {
		return override.Stored{}, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	chain = replaceLevel(chain, retention.Override{Level: n.Level, Fields: fields})
	eff, err := retention.Resolve(s.preset, kind, chain)
	if err != nil {
		return override.Stored{}, err
	}
	if err := retention.ValidateEffective(eff, "override.fields."); err != nil {
		return override.Stored{}, err
	}
	var before *override.Stored
	if old, err := s.overrides.Get(ctx, n, kind); err == nil {
		before = &old
	} else if !errors.Is(err, override.ErrNotFound) {
		return override.Stored{}, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	o := override.Stored{Kind: kind, Node: n, Fields: fields, UpdatedBy: p.Name, UpdatedAt: time.Now().UTC().Truncate(time.Millisecond)}
	if err := s.recordOverride(ctx, n, kind, before, &o, p.Name); err != nil {
		return override.Stored{}, err
	}
	return o, nil
}

func replaceLevel(chain []retention.Override, o retention.Override) []retention.Override {
	out := []retention.Override{o}
	for _, c := range chain {
		if c.Level != o.Level {
			out = append(out, c)
		}
	}
	return out
}

// DeleteOverride removes an override; removing one that is not there is
// not an error.
func (s *Service) DeleteOverride(ctx context.Context, p auth.Principal, k eventv1.DataKind, sc *policyv1.Scope) error {
	kind, err := kindOf(k, "kind")
	if err != nil {
		return err
	}
	n, err := nodeOf(sc, "scope.")
	if err != nil {
		return err
	}
	if _, err := s.authorizeNode(ctx, p, n); err != nil {
		return err
	}
	old, err := s.overrides.Get(ctx, n, kind)
	if errors.Is(err, override.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	return s.recordOverride(ctx, n, kind, &old, nil, p.Name)
}

// recordOverride publishes the change with the override before and after,
// then applies it.
func (s *Service) recordOverride(ctx context.Context, n override.Node, kind retention.Kind, before, after *override.Stored, actor string) error {
	change := &eventv1.ConfigChanged{Entity: entityOverride, EntityId: n.ID(kind), Actor: actor}
	if before != nil {
		raw, _ := json.Marshal(before)
		change.BeforeJson = string(raw)
	}
	if after != nil {
		raw, _ := json.Marshal(after)
		change.AfterJson = string(raw)
	}
	env := &eventv1.Envelope{
		Id: fmt.Sprintf("override-%s-%d", n.ID(kind), time.Now().UnixNano()), AcceptedAt: timestamppb.Now(), Source: "policy",
		Tenant: &eventv1.Tenant{Reseller: n.Reseller, Domain: n.Domain, User: n.User},
		Body:   &eventv1.Envelope_Config{Config: change},
	}
	if _, err := bus.PublishEnvelope(ctx, s.d.JS, s.d.Names.PolicySubject(), env.GetId(), env); err != nil {
		return fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	if err := s.ApplyConfig(ctx, env); err != nil {
		return fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	return nil
}

func (s *Service) applyOverride(ctx context.Context, env *eventv1.Envelope) error {
	return applyChange(env,
		func(o override.Stored) error { return s.overrides.Put(ctx, o) },
		func(o override.Stored) error { return s.overrides.Delete(ctx, o.Node, o.Kind) })
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
	DeleteBy time.Time // zero: never
	Holds    []hold.Hold
}

// Explain resolves an artifact's policy by the current overrides: a
// change to a policy re-dates artifacts already stored. Dates count from
// the call's start.
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
	rec, err := s.catalog.GetRecording(ctx, domain, id)
	if errors.Is(err, catalog.ErrNotFound) {
		return Explanation{}, fmt.Errorf("%w: artifact %s in %s", apierr.ErrNotFound, id, domain)
	}
	if err != nil {
		return Explanation{}, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	kind := eventv1.DataKind_DATA_KIND_RECORDING_AUTOMATIC
	if rec.Mode == "on_demand" {
		kind = eventv1.DataKind_DATA_KIND_RECORDING_ON_DEMAND
	}
	pol, err := s.Resolve(ctx, p, kind, &eventv1.Tenant{Reseller: rec.Reseller, Domain: rec.Domain, User: rec.User})
	if err != nil {
		return Explanation{}, err
	}
	holds, err := s.holds.Covering(ctx, domain, rec.User, rec.CallID)
	if err != nil {
		return Explanation{}, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	cull, del := pol.Dates(rec.StartedAt)
	return Explanation{Policy: pol, Cullable: cull, DeleteBy: del, Holds: holds}, nil
}

func policyProto(p retention.Policy) *policyv1.EffectivePolicy {
	return &policyv1.EffectivePolicy{
		Kind: kindProto(p.Kind), MinStorageDays: int32(p.MinStorageDays), RetentionDays: int32(p.Retention.Days),
		RetentionUnlimited: p.Retention.Unlimited, Cap: capProto(p.Cap), PurchasedDays: int32(p.PurchasedDays),
		MinStorageFrom: levelProto(p.MinStorageFrom), RetentionFrom: levelProto(p.RetentionFrom), CapFrom: levelProto(p.CapFrom),
		Preset: p.Preset,
	}
}

func levelProto(l retention.Level) policyv1.Level {
	if l == retention.LevelPreset {
		return policyv1.Level_LEVEL_PRESET
	}
	return policyv1.Level(l) // system..user share their numbers
}
