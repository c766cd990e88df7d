// Package gateway serves tenants and internal clients: the REST API
// (recordings list, metadata, media with Range, tokens, CDRs and their
// exports) and the gRPC CatalogService. Every read is scoped by the
// caller's token.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/cdr"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/pkg/tenant"
)

// Config of a standalone gateway process.
type Config struct {
	Platform platform.Config
	HTTPAddr string `env:"CALLVAULT_HTTP_ADDR, default=127.0.0.1:8080"`
	GRPCAddr string `env:"CALLVAULT_GRPC_ADDR, default=127.0.0.1:9090"`
	// PolicyAddr is the policy service's gRPC address, which serves the
	// domain and CDR routes of a standalone gateway (empty: they answer
	// 503).
	PolicyAddr string `env:"CALLVAULT_POLICY_ADDR"`
	// RouterAddr is the archive router's gRPC address, which gives a
	// standalone gateway the archive state of recordings and playback from
	// the archive (empty: neither).
	RouterAddr string `env:"CALLVAULT_ROUTER_ADDR"`
}

// Domains is the domain registry the gateway serves over REST. The policy
// service owns it; nil (a gateway running without the policy service in
// its process) answers the domain routes as unavailable.
type Domains interface {
	ProvisionDomain(ctx context.Context, p auth.Principal, domain, reseller string) (catalog.Domain, bool, error)
	GetDomain(ctx context.Context, p auth.Principal, domain string) (catalog.Domain, error)
	ListDomains(ctx context.Context, p auth.Principal, reseller string) ([]catalog.Domain, error)
}

// Service is the gateway.
type Service struct {
	catalog catalog.Reader
	domains Domains
	archive Archive
	cdrs    cdr.Ledger
	store   cds.Store
	tokens  *auth.Store
	log     *slog.Logger
	served  *prometheus.CounterVec
	state   *catalog.LagCheck
	// cdrStreams counts GET /api/v1/cdrs answers by status (complete,
	// error, truncated, client_gone); cdrRows the rows sent, by format.
	cdrStreams *prometheus.CounterVec
	cdrRows    *prometheus.CounterVec
}

// New returns the service; domains may be nil (see Domains).
func New(d *platform.Deps, domains Domains) *Service {
	s := &Service{
		domains: domains,
		catalog: catalog.NewReader(d.Redis, d.Names.Namespace()),
		store:   d.CDS,
		tokens:  d.Tokens,
		log:     d.Log.With("service", "gateway"),
		served: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "callvault", Subsystem: "gateway", Name: "media_bytes_total",
			Help: "Media bytes served, by status (full, partial).",
		}, []string{"status"}),
		cdrStreams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "callvault", Subsystem: "gateway", Name: "cdr_streams_total",
			Help: "CDR streams answered, by status (complete, error, truncated, client_gone).",
		}, []string{"status"}),
		cdrRows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "callvault", Subsystem: "gateway", Name: "cdr_rows_total",
			Help: "CDR rows streamed, by format (json, ndjson, csv).",
		}, []string{"format"}),
	}
	d.Registry.MustRegister(s.served, s.cdrStreams, s.cdrRows)
	s.state = d.RequireCurrentRedis(s.log)
	return s
}

// Run has no background work. It checks at start that Redis has caught
// up with the streams, logging why not; readiness keeps checking.
func (s *Service) Run(ctx context.Context) error {
	_ = s.state.Check(ctx)
	<-ctx.Done()
	return nil
}

// listDomain decides which domain a list covers: the caller's own for
// domain and user tokens, the requested one (which the caller must cover)
// otherwise. It also pins user tokens to their own recordings.
func (s *Service) listDomain(ctx context.Context, p auth.Principal, domain, user string) (string, string, error) {
	if domain == "" {
		if p.Level == auth.LevelDomain || p.Level == auth.LevelUser {
			domain = p.Domain
		} else {
			return "", "", apierr.Invalid("domain", "is required for a %s-scoped token", p.Level)
		}
	} else if err := tenant.CheckDomain(domain); err != nil {
		return "", "", apierr.Invalid("domain", "%v", err)
	}
	if user != "" {
		if err := tenant.CheckName(user); err != nil {
			return "", "", apierr.Invalid("user", "%v", err)
		}
	}
	if p.Level == auth.LevelUser {
		if user != "" && user != p.User {
			return "", "", fmt.Errorf("%w: token %s covers only user %s", apierr.ErrForbidden, p.Name, p.User)
		}
		user = p.User
	}
	// Every level, user tokens included, is judged against the domain's
	// reseller of record.
	if _, err := s.catalog.AuthorizeUser(ctx, p, domain, user); err != nil {
		return "", "", err
	}
	return domain, user, nil
}

// recording loads one recording the caller may see. A recording outside
// the caller's tenant is reported as not found, so ids leak nothing.
func (s *Service) recording(ctx context.Context, p auth.Principal, id string) (catalog.Recording, error) {
	if err := tenant.CheckID(id); err != nil {
		return catalog.Recording{}, apierr.Invalid("id", "%v", err)
	}
	notFound := fmt.Errorf("%w: recording %s", apierr.ErrNotFound, id)
	domain, err := s.catalog.DomainOf(ctx, id)
	if errors.Is(err, catalog.ErrNotFound) {
		return catalog.Recording{}, notFound
	}
	if err != nil {
		return catalog.Recording{}, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	r, err := s.catalog.GetRecording(ctx, domain, id)
	if errors.Is(err, catalog.ErrNotFound) {
		return catalog.Recording{}, notFound
	}
	if err != nil {
		return catalog.Recording{}, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	// The domain's reseller of record decides, not the reseller the
	// upload named; a registry that cannot be read refuses.
	owner, ok, err := s.catalog.DomainOwner(ctx, r.Domain)
	if err != nil {
		return catalog.Recording{}, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	if !ok || owner != r.Reseller || !p.Covers(owner, r.Domain, r.User) {
		return catalog.Recording{}, notFound
	}
	return r, nil
}
