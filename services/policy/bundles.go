package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/tenant"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
	"github.com/callvault/callvault/services/policy/internal/bundle"
)

// entityBundle names bundle assignments in config events.
const entityBundle = "bundle_assignment"

// Data rotation bounds, in months: how long the CDS keeps stored data.
const (
	defaultRotationMonths   = 12
	maxRotationNoBundle     = 12
	maxRotationWithBundle   = 240
	minRotationMonths       = 1
	defaultBundleAssignment = "default"
)

// Assignment is a domain's bundle and data rotation.
type Assignment struct {
	Domain         string    `json:"domain"`
	Bundle         string    `json:"bundle"`
	RotationMonths int       `json:"data_rotation_months"`
	AssignedBy     string    `json:"assigned_by"`
	AssignedAt     time.Time `json:"assigned_at"`
}

func (s *Service) bundleKey(domain string) string {
	return s.d.Names.Namespace() + ":{" + domain + "}:bundle"
}

// Assignment reads a domain's assignment; a domain never assigned has the
// default bundle and the default rotation.
func (s *Service) Assignment(ctx context.Context, domain string) (Assignment, error) {
	return s.parseAssignment(domain, s.d.Redis.Get(ctx, s.bundleKey(domain)))
}

// parseAssignment reads the answer to a GET of a domain's bundle key, so a
// caller may fetch it inside a pipeline.
func (s *Service) parseAssignment(domain string, cmd *redis.StringCmd) (Assignment, error) {
	raw, err := cmd.Result()
	if errors.Is(err, redis.Nil) {
		return Assignment{Domain: domain, Bundle: s.bundles.Default.Name, RotationMonths: defaultRotationMonths}, nil
	}
	if err != nil {
		return Assignment{}, fmt.Errorf("bundle of %s: %w", domain, err)
	}
	var a Assignment
	if err := json.Unmarshal([]byte(raw), &a); err != nil {
		return Assignment{}, fmt.Errorf("bundle of %s: %w", domain, err)
	}
	return a, nil
}

// AssignBundle puts a domain on a bundle of the catalogue. Only system
// tokens and the domain's reseller may: a bundle is bought from the
// provider, not set by the tenant.
func (s *Service) AssignBundle(ctx context.Context, p auth.Principal, domain, name string, rotation int) (Assignment, bundle.Bundle, error) {
	v := &apierr.ValidationError{}
	if err := tenant.CheckDomain(domain); err != nil {
		v.Add("domain", "%v", err)
	}
	if name == "" {
		name = s.bundles.Default.Name
	}
	b, ok := s.bundles.Lookup(name)
	if !ok {
		v.Add("bundle", "%q is not in the catalogue", name)
	}
	if rotation == 0 {
		rotation = defaultRotationMonths
	}
	maxRot := maxRotationWithBundle
	if ok && b.Name == s.bundles.Default.Name {
		maxRot = maxRotationNoBundle
	}
	if rotation < minRotationMonths || rotation > maxRot {
		v.Add("data_rotation_months", "must be from %d to %d months with %s", minRotationMonths, maxRot, name)
	}
	if err := v.Err(); err != nil {
		return Assignment{}, bundle.Bundle{}, err
	}
	if p.Level != auth.LevelSystem && p.Level != auth.LevelReseller {
		return Assignment{}, bundle.Bundle{}, fmt.Errorf("%w: bundles are assigned by the provider or the reseller", apierr.ErrForbidden)
	}
	if _, err := s.catalog.AuthorizeDomain(ctx, p, domain); err != nil {
		return Assignment{}, bundle.Bundle{}, err
	}
	before, err := s.Assignment(ctx, domain)
	if err != nil {
		return Assignment{}, bundle.Bundle{}, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	a := Assignment{Domain: domain, Bundle: b.Name, RotationMonths: rotation, AssignedBy: p.Name, AssignedAt: time.Now().UTC().Truncate(time.Millisecond)}
	env := &eventv1.Envelope{
		Id: fmt.Sprintf("bundle-%s-%d", domain, a.AssignedAt.UnixNano()), AcceptedAt: timestamppb.Now(), Source: "policy",
		Type: typeBundleAssigned, SchemaVersion: configSchema,
		Tenant: &eventv1.Tenant{Domain: domain},
		Body: &eventv1.Envelope_Config{Config: &eventv1.ConfigChanged{Entity: entityBundle, EntityId: domain, Actor: p.Name,
			Before: bundlePayload(before), After: bundlePayload(a)}},
	}
	if _, err := bus.PublishEnvelope(ctx, s.d.JS, s.d.Names.PolicySubject(), env.GetId(), env); err != nil {
		return Assignment{}, bundle.Bundle{}, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	if err := s.ApplyConfig(ctx, env, 0); err != nil {
		return Assignment{}, bundle.Bundle{}, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	return a, b, nil
}

func (s *Service) applyBundle(ctx context.Context, env *eventv1.Envelope) error {
	return applyChange(env, bundleFromPayload, func(a Assignment) error {
		if a.Domain == "" {
			return bus.Poison(fmt.Errorf("bundle event %s: no domain", env.GetId()))
		}
		raw, err := json.Marshal(a)
		if err != nil {
			return err
		}
		return s.d.Redis.Set(ctx, s.bundleKey(a.Domain), raw, 0).Err()
	}, nil)
}

func bundleProto(b bundle.Bundle) *policyv1.Bundle {
	return &policyv1.Bundle{Name: b.Name, CapacityBytes: b.CapacityBytes(), AnalyticsRetentionMonths: int32(b.AnalyticsRetentionMonths),
		StaticIps: int32(b.StaticIPs), MaxNetworkPbxs: int32(b.MaxNetworkPBXs)}
}
