package policy

import (
	"context"
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
	"github.com/callvault/callvault/services/policy/internal/override"
)

// entityOverride names retention overrides in config events.
const entityOverride = "policy_override"

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

// authorizeNode checks p may change the overrides of node n and returns
// the reseller of record of n's domain. System defaults are the
// operator's; a reseller's are its own or the system's; a domain's and its
// users' belong to whoever covers the domain, and a user's own node also
// to that user (within what tenantChange allows).
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
		if p.Level == auth.LevelUser && n.Level == retention.LevelUser {
			return s.catalog.AuthorizeUser(ctx, p, n.Domain, n.User)
		}
		return s.catalog.AuthorizeDomain(ctx, p, n.Domain)
	}
}

// isProvider reports whether p speaks for the provider: only system and
// reseller tokens change what is sold or guaranteed.
func isProvider(p auth.Principal) bool {
	return p.Level == auth.LevelSystem || p.Level == auth.LevelReseller
}

// SetOverride validates and stores an override. Besides each field's own
// bounds, the policy it resolves to at its node and at every node below
// it that has overrides must keep retention at or above the minimum.
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
	if err := retention.ValidateFields(kind, fields, "override.fields.", s.ceiling()); err != nil {
		return override.Stored{}, err
	}
	reseller, err := s.authorizeNode(ctx, p, n)
	if err != nil {
		return override.Stored{}, err
	}
	if n.Level >= retention.LevelDomain {
		n.Reseller = reseller
	}
	var before *override.Stored
	if old, err := s.overrides.Get(ctx, n, kind); err == nil {
		before = &old
	} else if !errors.Is(err, override.ErrNotFound) {
		return override.Stored{}, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	if !isProvider(p) && before != nil {
		fields = keepCommercial(fields, before.Fields)
	}
	if err := s.tenantChange(ctx, p, kind, n, before, &fields); err != nil {
		return override.Stored{}, err
	}
	if err := s.checkNodes(ctx, kind, n, &fields); err != nil {
		return override.Stored{}, err
	}
	o := override.Stored{Kind: kind, Node: n, Fields: fields, UpdatedBy: p.Name, UpdatedAt: time.Now().UTC().Truncate(time.Millisecond)}
	if err := s.recordOverride(ctx, n, kind, before, &o, p.Name); err != nil {
		return override.Stored{}, err
	}
	return o, nil
}

// keepCommercial carries the provider's fields of the stored override
// into a tenant's change that leaves them out: a domain admin changing its
// retention on a node where the reseller sold purchased days or set a
// minimum keeps what was sold, instead of being refused for not repeating
// it. A field the tenant does send is checked by tenantChange.
func keepCommercial(f, stored retention.Fields) retention.Fields {
	if f.MinStorage == nil {
		f.MinStorage = stored.MinStorage
	}
	if f.Cap == nil && !f.NoCap {
		f.Cap, f.NoCap = stored.Cap, stored.NoCap
	}
	if f.PurchasedDays == nil {
		f.PurchasedDays = stored.PurchasedDays
	}
	return f
}

// tenantChange checks what a domain or user token changes: never the
// provider's fields (minimum, cap, purchased retention), and retention
// only up to what the levels above the token grant. after is nil for a
// deletion.
func (s *Service) tenantChange(ctx context.Context, p auth.Principal, kind retention.Kind, n override.Node, before *override.Stored, after *retention.Fields) error {
	if isProvider(p) {
		return nil
	}
	var old, next retention.Fields
	if before != nil {
		old = before.Fields
	}
	if after != nil {
		next = *after
	}
	if changed := next.CommercialChanges(old); len(changed) > 0 {
		f := changed[0] // the first is named; one refusal is enough
		field := "override.fields." + f
		if f == "min_storage" {
			d := next.MinStorage
			if d == nil {
				d = old.MinStorage
			}
			field = retention.FieldName("override.fields.min_storage", *d)
		}
		return fmt.Errorf("%w: %s is the provider's: only system and reseller tokens change minimums, caps and purchased retention",
			apierr.ErrForbidden, field)
	}
	if after == nil || after.Retention == nil {
		return nil
	}
	chains, err := s.overrides.Chains(ctx, kind, []override.Node{n})
	if err != nil {
		return fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	// What the provider grants: the chain without the retention set at the
	// token's level or below.
	own := retention.LevelDomain
	if p.Level == auth.LevelUser {
		own = retention.LevelUser
	}
	var granted []retention.Override
	for _, o := range chains[0] {
		if o.Level >= own {
			o.Fields.Retention = nil
		}
		granted = append(granted, o)
	}
	limit, err := retention.Resolve(s.preset, kind, granted)
	if err != nil {
		return err
	}
	want, err := retention.Resolve(s.preset, kind, withLevel(chains[0], n.Level, after))
	if err != nil {
		return err
	}
	if limit.Retention.Unlimited || (!want.Retention.Unlimited && limit.Retention.AtLeast(want.Retention.Duration)) {
		return nil
	}
	field := "override.fields.retention_unlimited"
	if !after.Retention.Unlimited {
		field = retention.FieldName("override.fields.retention", after.Retention.Duration)
	}
	return fmt.Errorf("%w: %s resolves beyond the %s the provider grants (set at %s level); a longer retention is bought from the provider",
		apierr.ErrForbidden, field, limit.Retention.Duration, limit.RetentionFrom)
}

// withLevel returns chain with the override at level replaced by fields,
// or removed when fields is nil.
func withLevel(chain []retention.Override, level retention.Level, fields *retention.Fields) []retention.Override {
	var out []retention.Override
	if fields != nil {
		out = append(out, retention.Override{Level: level, Fields: *fields})
	}
	for _, c := range chain {
		if c.Level != level {
			out = append(out, c)
		}
	}
	return out
}

func describe(n override.Node) string {
	switch n.Level {
	case retention.LevelSystem:
		return "the system defaults"
	case retention.LevelReseller:
		return "reseller " + n.Reseller
	case retention.LevelDomain:
		return "domain " + n.Domain
	default:
		return "user " + n.User + " of domain " + n.Domain
	}
}

// checkNodes refuses a change (fields; nil for a deletion) of n's
// override of kind if it would leave n, or any node below n that has
// overrides, with a retention shorter than its minimum. A node below that
// was already in conflict (stored before this check) does not block an
// unrelated change.
func (s *Service) checkNodes(ctx context.Context, kind retention.Kind, n override.Node, fields *retention.Fields) error {
	below, err := s.overrides.Below(ctx, n)
	if err != nil {
		return fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	nodes := []override.Node{n}
	known := map[string]string{}
	for _, b := range below {
		if b.Reseller == "" && b.Level >= retention.LevelDomain {
			r, ok := known[b.Domain]
			if !ok {
				var err error
				r, err = s.catalog.ResellerOf(ctx, b.Domain)
				if err != nil && !errors.Is(err, catalog.ErrNotFound) {
					return fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
				}
				known[b.Domain] = r
			}
			b.Reseller = r
		}
		if n.Level == retention.LevelReseller && b.Reseller != n.Reseller {
			continue
		}
		nodes = append(nodes, b)
	}
	chains, err := s.overrides.Chains(ctx, kind, nodes)
	if err != nil {
		return fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	for i, node := range nodes {
		after, err := retention.Resolve(s.preset, kind, withLevel(chains[i], n.Level, fields))
		if err != nil {
			return err
		}
		why := retention.Conflict(after)
		if why == "" {
			continue
		}
		if i > 0 {
			now, err := retention.Resolve(s.preset, kind, chains[i])
			if err != nil {
				return err
			}
			if now.RetentionClamped {
				continue
			}
		}
		field := "scope"
		if fields != nil {
			field = "override.fields"
			switch {
			case fields.Retention != nil && (i == 0 || fields.MinStorage == nil):
				field = retention.FieldName("override.fields.retention", fields.Retention.Duration)
			case fields.MinStorage != nil:
				field = retention.FieldName("override.fields.min_storage", *fields.MinStorage)
			}
		} else {
			field = "scope"
		}
		if i == 0 {
			return apierr.Invalid(field, "%s", why)
		}
		return apierr.Invalid(field, "conflicts with %s: %s", describe(node), why)
	}
	return nil
}

// DeleteOverride removes an override; removing one that is not there is
// not an error. It is refused when the policy that remains would leave the
// node, or a node below it, with a retention under its minimum.
func (s *Service) DeleteOverride(ctx context.Context, p auth.Principal, k eventv1.DataKind, sc *policyv1.Scope) error {
	kind, err := kindOf(k, "kind")
	if err != nil {
		return err
	}
	n, err := nodeOf(sc, "scope.")
	if err != nil {
		return err
	}
	reseller, err := s.authorizeNode(ctx, p, n)
	if err != nil {
		return err
	}
	if n.Level >= retention.LevelDomain {
		n.Reseller = reseller
	}
	old, err := s.overrides.Get(ctx, n, kind)
	if errors.Is(err, override.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	if err := s.tenantChange(ctx, p, kind, n, &old, nil); err != nil {
		return err
	}
	if err := s.checkNodes(ctx, kind, n, nil); err != nil {
		return err
	}
	return s.recordOverride(ctx, n, kind, &old, nil, p.Name)
}

// recordOverride publishes the change with the override before and after,
// then applies it.
func (s *Service) recordOverride(ctx context.Context, n override.Node, kind retention.Kind, before, after *override.Stored, actor string) error {
	change := &eventv1.ConfigChanged{Entity: entityOverride, EntityId: n.ID(kind), Actor: actor,
		Before: overridePayload(before), After: overridePayload(after)}
	typ := typeOverrideSet
	if after == nil {
		typ = typeOverrideDeleted
	}
	tn := &eventv1.Tenant{Reseller: n.Reseller, Domain: n.Domain, User: n.User}
	env := &eventv1.Envelope{
		Id: fmt.Sprintf("override-%s-%d", n.ID(kind), time.Now().UnixNano()), AcceptedAt: timestamppb.Now(), Source: "policy",
		Type: typ, SchemaVersion: configSchema, Tenant: tn,
		Body: &eventv1.Envelope_Config{Config: change},
	}
	if _, err := bus.PublishEnvelope(ctx, s.d.JS, s.d.Names.PolicySubject(), env.GetId(), env); err != nil {
		return fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	if err := s.ApplyConfig(ctx, env, 0); err != nil {
		return fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	return nil
}

func (s *Service) applyOverride(ctx context.Context, env *eventv1.Envelope) error {
	return applyChange(env, overrideFromPayload,
		func(o override.Stored) error { return s.overrides.Put(ctx, o) },
		func(o override.Stored) error { return s.overrides.Delete(ctx, o.Node, o.Kind) })
}
