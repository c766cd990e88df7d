package policy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/tenant"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
)

// entityDomain names domain provisioning in config events.
const (
	entityDomain          = "domain"
	typeDomainProvisioned = "config.domain.provisioned"
)

// ProvisionDomain records that domain belongs to reseller. Only a system
// token, or a reseller token for its own reseller, may provision; a
// reseller token may leave reseller empty. A domain provisioned to another
// reseller is ErrConflict; to the same one, the record as it stands
// (created is false). Each domain has its own subject and the event is
// published expecting that subject to be empty, so the stream admits only
// the first provisioning of a domain: two racing requests end with one
// owner, and a replay restores that same owner.
func (s *Service) ProvisionDomain(ctx context.Context, p auth.Principal, domain, reseller string) (catalog.Domain, bool, error) {
	if reseller == "" && p.Level == auth.LevelReseller {
		reseller = p.Reseller
	}
	v := &apierr.ValidationError{}
	if err := tenant.CheckDomain(domain); err != nil {
		v.Add("domain", "%v", err)
	}
	if err := tenant.CheckName(reseller); err != nil {
		v.Add("reseller", "%v", err)
	}
	if err := v.Err(); err != nil {
		return catalog.Domain{}, false, err
	}
	if !(p.Level == auth.LevelSystem || (p.Level == auth.LevelReseller && p.Reseller == reseller)) {
		return catalog.Domain{}, false, fmt.Errorf("%w: token %s may not provision domains for reseller %s", apierr.ErrForbidden, p.Name, reseller)
	}
	existing, err := s.catalog.GetDomain(ctx, domain)
	switch {
	case err == nil && existing.Reseller == reseller:
		return existing, false, nil
	case err == nil:
		return catalog.Domain{}, false, fmt.Errorf("%w: domain %s is already provisioned to another reseller", apierr.ErrConflict, domain)
	case !errors.Is(err, catalog.ErrNotFound):
		return catalog.Domain{}, false, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	d := catalog.Domain{Domain: domain, Reseller: reseller, ProvisionedBy: p.Name, ProvisionedAt: time.Now().UTC().Truncate(time.Millisecond)}
	// "/" occurs in no domain or reseller name, so the id names exactly
	// one (domain, reseller) pair: a retry of this request is deduplicated,
	// never another pair's provisioning.
	msgID := "domain:" + domain + "/" + reseller
	env := &eventv1.Envelope{
		Id: msgID, AcceptedAt: timestamppb.Now(), Source: "policy", Type: typeDomainProvisioned, SchemaVersion: configSchema,
		Tenant: &eventv1.Tenant{Reseller: reseller, Domain: domain},
		Body: &eventv1.Envelope_Config{Config: &eventv1.ConfigChanged{Entity: entityDomain, EntityId: domain, Actor: p.Name,
			After: domainPayload(d)}},
	}
	ack, err := bus.PublishEnvelope(ctx, s.d.JS, s.d.Names.DomainSubject(domain), msgID, env, jetstream.WithExpectLastSequencePerSubject(0))
	if bus.IsWrongLastSequence(err) {
		// Another provisioning of this domain reached the stream first; it
		// decides, whether or not Redis has applied it yet.
		return s.provisionedFirst(ctx, domain, reseller)
	}
	if err != nil {
		return catalog.Domain{}, false, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	// A duplicate's PubAck names the first publish's sequence.
	owner, err := s.catalog.ApplyDomain(ctx, d, ack.Sequence)
	if err != nil {
		return catalog.Domain{}, false, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	if owner != reseller {
		return catalog.Domain{}, false, fmt.Errorf("%w: domain %s is already provisioned to another reseller", apierr.ErrConflict, domain)
	}
	if ack.Duplicate {
		// The same request, retried: the first one created the domain.
		got, err := s.catalog.GetDomain(ctx, domain)
		if err != nil {
			return catalog.Domain{}, false, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
		}
		return got, false, nil
	}
	s.log.Info("domain provisioned", "domain", domain, "reseller", reseller, "by", p.Name)
	return d, true, nil
}

// provisionedFirst applies the provisioning event the stream holds for
// domain and answers as ProvisionDomain does for a domain already there.
func (s *Service) provisionedFirst(ctx context.Context, domain, reseller string) (catalog.Domain, bool, error) {
	st, err := s.d.JS.Stream(ctx, s.d.Names.ConfigStream())
	if err != nil {
		return catalog.Domain{}, false, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	raw, err := st.GetLastMsgForSubject(ctx, s.d.Names.DomainSubject(domain))
	if err != nil {
		return catalog.Domain{}, false, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	env, err := bus.DecodeEnvelope(raw.Data)
	if err != nil {
		return catalog.Domain{}, false, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	if err := s.applyDomain(ctx, env, raw.Sequence); err != nil {
		return catalog.Domain{}, false, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	d, err := s.catalog.GetDomain(ctx, domain)
	if err != nil {
		return catalog.Domain{}, false, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	if d.Reseller != reseller {
		return catalog.Domain{}, false, fmt.Errorf("%w: domain %s is already provisioned to another reseller", apierr.ErrConflict, domain)
	}
	return d, false, nil
}

// GetDomain reads a provisioned domain the caller covers; any other is
// not found, so nobody learns of another reseller's domains.
func (s *Service) GetDomain(ctx context.Context, p auth.Principal, domain string) (catalog.Domain, error) {
	if err := tenant.CheckDomain(domain); err != nil {
		return catalog.Domain{}, apierr.Invalid("domain", "%v", err)
	}
	d, err := s.catalog.GetDomain(ctx, domain)
	if errors.Is(err, catalog.ErrNotFound) || (err == nil && !p.CoversDomain(d.Domain, d.Reseller)) {
		return catalog.Domain{}, fmt.Errorf("%w: domain %s", apierr.ErrNotFound, domain)
	}
	if err != nil {
		return catalog.Domain{}, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	return d, nil
}

// ListDomains lists the provisioned domains p covers: every one (or one
// reseller's) for a system token, its own for a reseller, its one domain
// for a domain token. User tokens list nothing.
func (s *Service) ListDomains(ctx context.Context, p auth.Principal, reseller string) ([]catalog.Domain, error) {
	if reseller != "" {
		if err := tenant.CheckName(reseller); err != nil {
			return nil, apierr.Invalid("reseller", "%v", err)
		}
	}
	switch p.Level {
	case auth.LevelSystem:
	case auth.LevelReseller, auth.LevelDomain:
		if reseller != "" && reseller != p.Reseller {
			return nil, fmt.Errorf("%w: token %s does not cover reseller %s", apierr.ErrForbidden, p.Name, reseller)
		}
		reseller = p.Reseller
	default:
		return nil, fmt.Errorf("%w: user tokens do not list domains", apierr.ErrForbidden)
	}
	all, err := s.catalog.Domains(ctx, reseller)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	out := all[:0]
	for _, d := range all {
		if p.CoversDomain(d.Domain, d.Reseller) {
			out = append(out, d)
		}
	}
	return out, nil
}

func (s *Service) applyDomain(ctx context.Context, env *eventv1.Envelope, seq uint64) error {
	return applyChange(env, domainFromPayload, func(d catalog.Domain) error {
		if d.Domain == "" || d.Reseller == "" {
			return bus.Poison(fmt.Errorf("domain event %s: no domain or reseller", env.GetId()))
		}
		// A later provisioning of a domain already owned changes nothing:
		// the live request that published it was answered with a conflict.
		_, err := s.catalog.ApplyDomain(ctx, d, seq)
		return err
	}, nil)
}

func domainPayload(d catalog.Domain) *eventv1.ConfigPayload {
	return &eventv1.ConfigPayload{Value: &eventv1.ConfigPayload_Domain{Domain: &eventv1.DomainRecord{
		Domain: d.Domain, Reseller: d.Reseller, ProvisionedBy: d.ProvisionedBy, ProvisionedAt: timestamppb.New(d.ProvisionedAt),
	}}}
}

func domainFromPayload(p *eventv1.ConfigPayload) (catalog.Domain, bool) {
	d := p.GetDomain()
	if d == nil {
		return catalog.Domain{}, false
	}
	out := catalog.Domain{Domain: d.GetDomain(), Reseller: d.GetReseller(), ProvisionedBy: d.GetProvisionedBy()}
	if d.GetProvisionedAt() != nil {
		out.ProvisionedAt = d.GetProvisionedAt().AsTime()
	}
	return out, true
}

// DomainProto is the API form of a provisioned domain.
func DomainProto(d catalog.Domain) *policyv1.Domain {
	out := &policyv1.Domain{Domain: d.Domain, Reseller: d.Reseller, ProvisionedBy: d.ProvisionedBy}
	if !d.ProvisionedAt.IsZero() {
		out.ProvisionedAt = timestamppb.New(d.ProvisionedAt)
	}
	return out
}

func (g *grpcServer) ProvisionDomain(ctx context.Context, req *policyv1.ProvisionDomainRequest) (*policyv1.ProvisionDomainResponse, error) {
	p, _ := auth.FromContext(ctx)
	d, created, err := g.s.ProvisionDomain(ctx, p, req.GetDomain(), req.GetReseller())
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	return &policyv1.ProvisionDomainResponse{Domain: DomainProto(d), Created: created}, nil
}

func (g *grpcServer) GetDomain(ctx context.Context, req *policyv1.GetDomainRequest) (*policyv1.GetDomainResponse, error) {
	p, _ := auth.FromContext(ctx)
	d, err := g.s.GetDomain(ctx, p, req.GetDomain())
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	return &policyv1.GetDomainResponse{Domain: DomainProto(d)}, nil
}

func (g *grpcServer) ListDomains(ctx context.Context, req *policyv1.ListDomainsRequest) (*policyv1.ListDomainsResponse, error) {
	p, _ := auth.FromContext(ctx)
	ds, err := g.s.ListDomains(ctx, p, req.GetReseller())
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	out := &policyv1.ListDomainsResponse{}
	for _, d := range ds {
		out.Domains = append(out.Domains, DomainProto(d))
	}
	return out, nil
}
