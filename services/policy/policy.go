// Package policy is the policy service: the one authority on what may be
// stored and for how long. Its consumer admits accepted artifacts into the
// catalog; retention, caps, bundles and holds build on that.
package policy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/pkg/retention"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
	"github.com/callvault/callvault/services/policy/internal/bundle"
	"github.com/callvault/callvault/services/policy/internal/hold"
	"github.com/callvault/callvault/services/policy/internal/override"
	"github.com/callvault/callvault/services/policy/ledger"
)

// Config of a standalone policy process.
type Config struct {
	Platform platform.Config
	HTTPAddr string `env:"CALLVAULT_POLICY_HTTP_ADDR, default=127.0.0.1:8082"`
	GRPCAddr string `env:"CALLVAULT_POLICY_GRPC_ADDR, default=127.0.0.1:9092"`
	Settings Settings
}

// Settings are the operator's choices.
type Settings struct {
	// Preset names the system defaults (see retention.Presets).
	Preset string `env:"CALLVAULT_POLICY_PRESET, default=guarantee-6-months"`
	// BundleCatalogue is a JSON file replacing the shipped catalogue.
	BundleCatalogue string `env:"CALLVAULT_BUNDLE_CATALOGUE"`
	// RecordingCeilingMonths is the longest recording retention, purchased
	// blocks included (regulated customers keep recordings 5 to 10 years).
	RecordingCeilingMonths int `env:"CALLVAULT_RECORDING_CEILING_MONTHS, default=24"`
	// Orphans configures the sweep of media no artifact references.
	Orphans OrphanSweep
	// AdmitBatch is how many ingest events the admission consumer decides
	// at a time (1 decides them one by one).
	AdmitBatch int `env:"CALLVAULT_ADMIT_BATCH, default=256"`
	// WriterLease bounds how long a batch applying events holds a rebuild
	// back (a rebuild waits for the batches that saw the marks before it
	// cleared them); a batch that outlives it is applied again after one
	// more rebuild.
	WriterLease time.Duration `env:"CALLVAULT_WRITER_LEASE, default=2m"`
	// Ledger tunes the CDR ledger the policy service runs.
	Ledger ledger.Settings
}

// AdmitConsumer is the durable consumer that admits artifacts.
const AdmitConsumer = catalog.AdmitConsumer

// StateCheckInterval is how often the service checks, while idle, that
// Redis still holds its state.
const StateCheckInterval = 10 * time.Second

// Service is the policy service.
type Service struct {
	d           *platform.Deps
	catalog     *catalog.Catalog
	consumer    *bus.Consumer
	config      *bus.Consumer
	holds       *hold.Store
	overrides   *override.Store
	preset      retention.Preset
	set         Settings
	bundles     bundle.Catalogue
	log         *slog.Logger
	admitted    *prometheus.CounterVec
	orphanSweep OrphanSweep
	orphans     *prometheus.CounterVec
	ledger      *ledger.Ledger
	// catchMu makes concurrent catch-ups (handlers, the watcher) one.
	catchMu sync.Mutex
	// life ends when Run's context does: a handler waits for a rebuild
	// (its own process's or another's) on it rather than on its own
	// deadline, so events are not retried, nor dead-lettered, for as long
	// as a rebuild takes. In-progress acks keep them meanwhile.
	lifeMu sync.Mutex
	life   context.Context
}

// New returns the service; an unknown preset is an error.
func New(d *platform.Deps, set Settings) (*Service, error) {
	if set.Preset == "" {
		set.Preset = retention.DefaultPreset
	}
	preset, ok := retention.Presets[set.Preset]
	if !ok {
		names := make([]string, 0, len(retention.Presets))
		for n := range retention.Presets {
			names = append(names, n)
		}
		slices.Sort(names)
		return nil, fmt.Errorf("CALLVAULT_POLICY_PRESET %q: must be one of %s", set.Preset, strings.Join(names, ", "))
	}
	if set.RecordingCeilingMonths == 0 {
		set.RecordingCeilingMonths = retention.DefaultCeiling.Months
	}
	if set.RecordingCeilingMonths < 1 || set.RecordingCeilingMonths > retention.MaxMonths {
		return nil, fmt.Errorf("CALLVAULT_RECORDING_CEILING_MONTHS %d: must be from 1 to %d", set.RecordingCeilingMonths, retention.MaxMonths)
	}
	preset, err := preset.WithCeiling(retention.Months(set.RecordingCeilingMonths))
	if err != nil {
		return nil, fmt.Errorf("CALLVAULT_RECORDING_CEILING_MONTHS: %w", err)
	}
	cat := bundle.Builtin()
	if set.BundleCatalogue != "" {
		f, err := os.Open(set.BundleCatalogue)
		if err != nil {
			return nil, fmt.Errorf("CALLVAULT_BUNDLE_CATALOGUE: %w", err)
		}
		cat, err = bundle.Parse(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("CALLVAULT_BUNDLE_CATALOGUE: %w", err)
		}
	}
	s := &Service{
		bundles:   cat,
		preset:    preset,
		overrides: override.NewStore(d.Redis, d.Names.Namespace()), set: set,
		d:       d,
		catalog: catalog.New(d.Redis, d.Names.Namespace()),
		holds:   hold.NewStore(d.Redis, d.Names.Namespace()),
		log:     d.Log.With("service", "policy"),
		admitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "callvault", Subsystem: "policy", Name: "admissions_total",
			Help: "Artifacts seen by admission, by kind and outcome (admitted, duplicate).",
		}, []string{"kind", "status"}),
	}
	d.Registry.MustRegister(s.admitted)
	s.orphanSweep, s.orphans = orphanSettings(set.Orphans), newOrphanMetrics(d.Registry)
	spec := bus.DefaultSpec(d.Names.IngestStream(), AdmitConsumer, d.Names.RecordingSubject(), d.Names.MessageSubject())
	s.consumer = bus.NewBatchConsumer(d.JS, d.Names, spec, cmp.Or(set.AdmitBatch, DefaultAdmitBatch), s.handleBatch, d.Log, d.Bus)
	cspec := bus.DefaultSpec(d.Names.ConfigStream(), ConfigConsumer, d.Names.ConfigSubjects())
	cspec.MaxAckPending = 1
	s.config = bus.NewConsumer(d.JS, d.Names, cspec, s.handleConfig, d.Log, d.Bus)
	s.ledger = ledger.New(d.JS, d.Names, d.Redis, d.CDS, s.catalog, set.Ledger, d.Log, d.Registry)
	return s, nil
}

// Run catches Redis up with the streams if it is behind them, then runs
// the admission and config consumers until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	s.lifeMu.Lock()
	s.life = ctx
	s.lifeMu.Unlock()
	for _, w := range s.catalog.CheckEncoding(ctx) {
		s.log.Warn("Redis keeps the catalog uncompacted; set it as deploy/redis/redis.conf does", "setting", w)
	}
	if _, _, err := s.CatchUp(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.consumer.Run(gctx) })
	g.Go(func() error { return s.config.Run(gctx) })
	g.Go(func() error { return s.ledger.Run(gctx) })
	if every := s.orphanSweep.Interval; every > 0 {
		g.Go(func() error { return s.sweepOrphansEvery(gctx, every) })
	}
	g.Go(func() error { return s.watchState(gctx, StateCheckInterval) })
	return g.Wait()
}

// RegisterHTTP mounts nothing yet: policy is reached over gRPC.
func (s *Service) RegisterHTTP(*http.ServeMux, auth.Authenticator) {}

// RegisterGRPC registers PolicyService.
func (s *Service) RegisterGRPC(g *grpc.Server) {
	policyv1.RegisterPolicyServiceServer(g, &grpcServer{s: s})
	s.ledger.RegisterGRPC(g)
}

// waitContext is what a handler waits for a rebuild on: the service's
// life, or ctx outside Run.
func (s *Service) waitContext(ctx context.Context) context.Context {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	if s.life == nil {
		return ctx
	}
	return s.life
}

// Rebuild replays the config stream and the recorded decisions of the
// ingest stream into Redis, then records how far that brought it: the
// whole config stream, and every ingest event the admission consumer had
// acknowledged when the rebuild began (each has its decision in the
// stream). It returns the decision events applied.
func (s *Service) Rebuild(ctx context.Context) (int, error) {
	s.catchMu.Lock()
	defer s.catchMu.Unlock()
	held, release, err := s.catalog.LockRebuild(ctx)
	if err != nil {
		return 0, err
	}
	defer release()
	n, err := s.rebuild(held)
	if cause := context.Cause(held); err != nil && cause != nil && !errors.Is(cause, context.Canceled) {
		err = fmt.Errorf("%w: %w", err, cause)
	}
	return n, err
}

// rebuild is Rebuild with catchMu held. It first removes the applied
// marks, so nothing is answered from Redis while it is half rebuilt (a
// token whose revocation is not replayed yet would be accepted).
func (s *Service) rebuild(ctx context.Context) (int, error) {
	ingest, config, err := s.marks(ctx)
	if err != nil {
		return 0, err
	}
	if err := s.catalog.ClearApplied(ctx); err != nil {
		return 0, err
	}
	// Writers that saw the marks before they went finish first: nothing
	// is decided against a catalog being emptied or rebuilt.
	if err := s.catalog.WaitWriters(ctx); err != nil {
		return 0, err
	}
	if _, err := s.RebuildConfig(ctx); err != nil {
		return 0, fmt.Errorf("rebuild policy config: %w", err)
	}
	n, err := s.RebuildCatalog(ctx)
	if err != nil {
		return n, err
	}
	return n, s.catalog.MarkCurrent(ctx, ingest, config)
}

var errIncomplete = errors.New("incomplete recording event")

func recordingFromEvent(env *eventv1.Envelope, rec *eventv1.RecordingStored, seq uint64) (catalog.Recording, error) {
	t, media := env.GetTenant(), rec.GetMedia()
	switch {
	case t.GetDomain() == "" || t.GetReseller() == "":
		return catalog.Recording{}, fmt.Errorf("%w %s: no tenant", errIncomplete, env.GetId())
	case media.GetKey() == "" || media.GetSha256() == "":
		return catalog.Recording{}, fmt.Errorf("%w %s: no media", errIncomplete, env.GetId())
	case rec.GetStartedAt() == nil:
		return catalog.Recording{}, fmt.Errorf("%w %s: no start time", errIncomplete, env.GetId())
	}
	mode := "automatic"
	if rec.GetMode() == eventv1.RecordingMode_RECORDING_MODE_ON_DEMAND {
		mode = "on_demand"
	}
	return catalog.Recording{
		ID: bus.ArtifactID(env), CallID: rec.GetCallId(), Reseller: t.GetReseller(), Domain: t.GetDomain(), User: t.GetUser(),
		Mode: mode, StartedAt: rec.GetStartedAt().AsTime(), DurationS: rec.GetDurationS(), ContentType: media.GetContentType(),
		Size: media.GetSizeBytes(), SHA256: media.GetSha256(), ObjectKey: media.GetKey(), AcceptedAt: env.GetAcceptedAt().AsTime(),
		StreamSeq: seq,
	}, nil
}

// Ledger is the CDR ledger the service runs.
func (s *Service) Ledger() *ledger.Ledger { return s.ledger }
