// Package ingest is call-ingest: it accepts recordings and CDRs from PBXs
// over gRPC and HTTP. A recording's media is streamed into the CDS while
// it is hashed and its event published to JetStream; CDRs are validated one
// by one and the good ones published to the CDR stream. A PBX is answered
// only after the PubAcks, so nothing it was told is accepted is lost.
package ingest

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/platform"
)

// Config of a standalone ingest process.
type Config struct {
	Platform platform.Config
	HTTPAddr string `env:"CALLVAULT_INGEST_HTTP_ADDR, default=127.0.0.1:8081"`
	GRPCAddr string `env:"CALLVAULT_INGEST_GRPC_ADDR, default=127.0.0.1:9091"`
	// PolicyAddr is the policy service's gRPC address, where a standalone
	// ingest provisions the domains its system or reseller tokens may
	// (empty: uploads to unprovisioned domains are refused).
	PolicyAddr string `env:"CALLVAULT_POLICY_ADDR"`
	Limits     Limits
}

// Limits bound what one upload may carry and how long its publish may
// be retried.
type Limits struct {
	// MaxMediaBytes is the largest recording accepted.
	MaxMediaBytes int64 `env:"CALLVAULT_MAX_MEDIA_BYTES, default=1073741824"`
	// MaxCdrBodyBytes bounds the body of one HTTP CDR request: room for
	// cdr.MaxBatch CDRs of a few kilobytes each.
	MaxCdrBodyBytes int64 `env:"CALLVAULT_INGEST_MAX_CDR_BODY_BYTES, default=33554432"`
	// CdrWindow bounds the CDR publishes awaiting their PubAck, across
	// all requests of the process.
	CdrWindow int `env:"CALLVAULT_INGEST_CDR_WINDOW, default=2048"`
	Publish   Publish
}

// Defaults of the CDR limits.
const (
	defaultMaxCdrBodyBytes = 32 << 20
	defaultCdrWindow       = 2048
)

// Provisioner provisions a domain an upload names for the first time. The
// policy service owns the registry; nil means uploads never provision.
type Provisioner interface {
	ProvisionDomain(ctx context.Context, p auth.Principal, domain, reseller string) (catalog.Domain, bool, error)
}

// Service is call-ingest.
type Service struct {
	domains Provisioner
	js      jetstream.JetStream
	// cdrJS publishes CDRs asynchronously (see newCdrJetStream); cdrSlots
	// holds one token per CDR publish awaiting its PubAck.
	cdrJS    jetstream.JetStream
	cdrSlots chan struct{}
	names    bus.Names
	store    cds.Store
	catalog  catalog.Reader
	state    *catalog.LagCheck
	limits   Limits
	publish  Publish
	log      *slog.Logger
	metrics  *metrics
	now      func() time.Time
}

// New returns the service; domains may be nil (see Provisioner).
func New(d *platform.Deps, limits Limits, domains Provisioner) *Service {
	if limits.MaxMediaBytes <= 0 {
		limits.MaxMediaBytes = 1 << 30
	}
	if limits.MaxCdrBodyBytes <= 0 {
		limits.MaxCdrBodyBytes = defaultMaxCdrBodyBytes
	}
	if limits.CdrWindow <= 0 {
		limits.CdrWindow = defaultCdrWindow
	}
	publish := limits.Publish.withDefaults()
	s := &Service{
		domains:  domains,
		js:       d.JS,
		cdrJS:    newCdrJetStream(d, publish, limits.CdrWindow),
		cdrSlots: make(chan struct{}, limits.CdrWindow),
		names:    d.Names,
		store:    d.CDS,
		catalog:  catalog.NewReader(d.Redis, d.Names.Namespace()),
		limits:   limits,
		publish:  publish,
		log:      d.Log.With("service", "ingest"),
		metrics:  newMetrics(d.Registry),
		now:      time.Now,
	}
	s.state = d.RequireCurrentRedis(s.log)
	return s
}

// Run has no background work yet: ingest is request driven. It checks
// at start that Redis (tokens, idempotency keys) has caught up with the
// streams, logging why not, and returns when ctx ends.
func (s *Service) Run(ctx context.Context) error {
	_ = s.state.Check(ctx)
	<-ctx.Done()
	return nil
}

type metrics struct {
	uploads        *prometheus.CounterVec
	bytes          prometheus.Counter
	seconds        prometheus.Histogram
	publishRetries prometheus.Counter
	cdrs           *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		uploads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "callvault", Subsystem: "ingest", Name: "uploads_total",
			Help: "Recording uploads by outcome (accepted, duplicate, invalid, refused, error).",
		}, []string{"status"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "callvault", Subsystem: "ingest", Name: "media_bytes_total",
			Help: "Media bytes stored in the CDS by accepted uploads.",
		}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "callvault", Subsystem: "ingest", Name: "upload_seconds",
			Help: "Time from the first byte of an upload to its PubAck.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		publishRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "callvault", Subsystem: "ingest", Name: "publish_failures_total",
			Help: "Publish attempts that failed or timed out (each is retried with the same Nats-Msg-Id).",
		}),
		cdrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "callvault", Subsystem: "ingest", Name: "cdrs_total",
			Help: "CDRs received by outcome: accepted (stored now), duplicate (stored before), rejected (answered by index), error (not confirmed stored: the request was answered 503).",
		}, []string{"status"}),
	}
	reg.MustRegister(m.uploads, m.bytes, m.seconds, m.publishRetries, m.cdrs)
	for _, status := range []string{"accepted", "duplicate", "invalid", "refused", "error"} {
		m.uploads.WithLabelValues(status) // export zeros from the start
	}
	for _, status := range []string{cdrAccepted, cdrDuplicate, cdrRejected, cdrError} {
		m.cdrs.WithLabelValues(status)
	}
	return m
}
