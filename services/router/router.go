// Package router is the archive router: it sends each admitted recording
// to the one best-matching enabled remote storage configuration of its
// tenant (S3, S3 Glacier Instant Retrieval, Wasabi or SFTP), verifies what
// was stored, records where it went, and only then acknowledges. It owns
// the configurations (secrets sealed at rest) and the archive records, and
// serves playback from the archive when the central copy is gone.
package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/platform"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	"github.com/callvault/callvault/services/router/internal/seal"
)

// Config of a standalone router process.
type Config struct {
	Platform platform.Config
	HTTPAddr string `env:"CALLVAULT_ROUTER_HTTP_ADDR, default=127.0.0.1:8083"`
	GRPCAddr string `env:"CALLVAULT_ROUTER_GRPC_ADDR, default=127.0.0.1:9093"`
	Settings Settings
}

// Settings tune the router.
type Settings struct {
	// SecretKey seals configuration secrets: "id=base64key[,id=...]", the
	// first sealing, all opening. Without it no secret can be stored.
	SecretKey string `env:"CALLVAULT_SECRET_KEY"`
	// Workers bounds uploads in flight; PerTarget bounds them per
	// configuration, so one slow tenant cannot take every worker.
	Workers   int `env:"CALLVAULT_ARCHIVE_WORKERS, default=16"`
	PerTarget int `env:"CALLVAULT_ARCHIVE_PER_TARGET, default=4"`
	// ParkAfter is the delivery after which an artifact whose target keeps
	// failing leaves the stream for the router's own waiting list.
	ParkAfter int `env:"CALLVAULT_ARCHIVE_PARK_AFTER, default=3"`
	// RetryBackOff spaces the first retries (NakWithDelay); ParkedRetry is
	// how often a parked artifact is tried again.
	RetryBackOff []time.Duration `env:"CALLVAULT_ARCHIVE_BACKOFF, default=2s,10s,30s"`
	ParkedRetry  time.Duration   `env:"CALLVAULT_ARCHIVE_PARKED_RETRY, default=1m"`
	// UploadTimeout bounds one upload; in-progress acks keep the message
	// meanwhile.
	UploadTimeout time.Duration `env:"CALLVAULT_ARCHIVE_UPLOAD_TIMEOUT, default=10m"`
	// WORMDefault is the Object Lock retention of an artifact whose policy
	// keeps it without end (no delete-by date).
	WORMDefault time.Duration `env:"CALLVAULT_ARCHIVE_WORM_DEFAULT, default=61320h"`
}

// Retention answers an artifact's delete-by date (zero: none); the policy
// service owns it. WORM configurations lock objects until then.
type Retention interface {
	DeleteBy(ctx context.Context, domain, id string) (time.Time, error)
}

// ArchiveConsumer is the router's durable consumer of admission decisions.
const ArchiveConsumer = "router-archive"

// ConfigConsumer applies configuration events another process recorded.
const ConfigConsumer = "router-config"

// Service is the archive router.
type Service struct {
	d         *platform.Deps
	log       *slog.Logger
	set       Settings
	keys      *seal.Keyring
	st        *store
	domains   catalog.Reader
	retention Retention
	targets   *targetCache
	sem       *semaphores
	metrics   *metrics
	restoreMu sync.Mutex
}

type metrics struct {
	transfers *prometheus.CounterVec
	bytes     prometheus.Counter
}

// New returns the service. retention may be nil (WORM objects then get
// WORMDefault).
func New(d *platform.Deps, set Settings, retention Retention) (*Service, error) {
	ring, err := seal.Parse(set.SecretKey)
	if err != nil {
		return nil, fmt.Errorf("CALLVAULT_SECRET_KEY: %w", err)
	}
	if set.Workers < 1 {
		set.Workers = 16
	}
	if set.PerTarget < 1 {
		set.PerTarget = 4
	}
	if set.ParkAfter < 1 {
		set.ParkAfter = 3
	}
	if len(set.RetryBackOff) == 0 {
		set.RetryBackOff = []time.Duration{2 * time.Second, 10 * time.Second, 30 * time.Second}
	}
	if set.ParkedRetry <= 0 {
		set.ParkedRetry = time.Minute
	}
	if set.UploadTimeout <= 0 {
		set.UploadTimeout = 10 * time.Minute
	}
	if set.WORMDefault <= 0 {
		set.WORMDefault = 7 * 365 * 24 * time.Hour
	}
	log := d.Log.With("service", "router")
	if !ring.HasKey() {
		log.Warn("CALLVAULT_SECRET_KEY is not set: archive configurations that need a secret cannot be created")
	}
	s := &Service{
		d: d, log: log, set: set, keys: ring, retention: retention,
		st:      &store{rdb: d.Redis, k: keys{ns: d.Names.Namespace()}},
		domains: catalog.NewReader(d.Redis, d.Names.Namespace()),
		sem:     newSemaphores(set.PerTarget),
		metrics: &metrics{
			transfers: prometheus.NewCounterVec(prometheus.CounterOpts{
				Namespace: "callvault", Subsystem: "router", Name: "transfers_total",
				Help: "Archive transfers by outcome (archived, not_archived, failed, parked).",
			}, []string{"outcome"}),
			bytes: prometheus.NewCounter(prometheus.CounterOpts{
				Namespace: "callvault", Subsystem: "router", Name: "archived_bytes_total", Help: "Bytes stored on archive targets.",
			}),
		},
	}
	s.targets = newTargetCache(s.open)
	d.Registry.MustRegister(s.metrics.transfers, s.metrics.bytes)
	return s, nil
}

// Run restores the configurations (and, into an empty Redis, the archive
// records) from the streams, then consumes admission decisions, drains
// parked work and applies configuration events until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	if err := s.Restore(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer s.targets.closeAll()
	spec := bus.DefaultSpec(s.d.Names.IngestStream(), ArchiveConsumer, s.d.Names.AdmittedSubject())
	spec.BackOff = s.set.RetryBackOff
	spec.MaxDeliver = s.set.ParkAfter + 5
	spec.HandlerTimeout = s.set.UploadTimeout + turnWait + time.Minute
	spec.AckWait = 2 * time.Minute
	spec.MaxAckPending = 4 * s.set.Workers
	archive := bus.NewConcurrentConsumer(s.d.JS, s.d.Names, spec, s.set.Workers, s.handle, s.log, s.d.Bus)
	cspec := bus.DefaultSpec(s.d.Names.ConfigStream(), ConfigConsumer, s.d.Names.ArchiveConfigSubject())
	cspec.MaxAckPending = 1
	configs := bus.NewConsumer(s.d.JS, s.d.Names, cspec, func(ctx context.Context, m jetstream.Msg) error {
		env, err := bus.DecodeEnvelope(m.Data())
		if err != nil {
			return err
		}
		var seq uint64
		if md, err := m.Metadata(); err == nil {
			seq = md.Sequence.Stream
		}
		return s.applyConfig(ctx, env, seq)
	}, s.log, s.d.Bus)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return archive.Run(gctx) })
	g.Go(func() error { return configs.Run(gctx) })
	g.Go(func() error { return s.drain(gctx) })
	return g.Wait()
}

// ensureRestored restores the router's state when its marker is gone (a
// Redis that lost its data under a running router), before anything is
// decided on an empty state.
func (s *Service) ensureRestored(ctx context.Context) error {
	n, err := s.d.Redis.Exists(ctx, s.st.k.built()).Result()
	if err != nil || n == 1 {
		return err
	}
	s.restoreMu.Lock()
	defer s.restoreMu.Unlock()
	if n, err := s.d.Redis.Exists(ctx, s.st.k.built()).Result(); err != nil || n == 1 {
		return err
	}
	s.log.Warn("the router's state is gone from Redis; restoring it from the streams before going on")
	return s.Restore(ctx)
}

// Restore re-applies every archive configuration event in order and, when
// this Redis holds no archive records yet, every archive record: a replay
// restores what happened, configurations with their sealed secrets and
// artifacts where they were archived.
func (s *Service) Restore(ctx context.Context) error {
	n, _, err := bus.Replay(ctx, s.d.JS, s.d.Names.ConfigStream(), []string{s.d.Names.ArchiveConfigSubject()},
		func(ctx context.Context, env *eventv1.Envelope, seq uint64) error {
			return s.applyConfig(ctx, env, seq)
		})
	if err != nil {
		return fmt.Errorf("restore archive configurations: %w", err)
	}
	built, err := s.d.Redis.Exists(ctx, s.st.k.built()).Result()
	if err != nil {
		return fmt.Errorf("restore archive records: %w", err)
	}
	records := 0
	if built == 0 {
		records, _, err = bus.Replay(ctx, s.d.JS, s.d.Names.IngestStream(), []string{s.d.Names.ArchivedSubject()},
			func(ctx context.Context, env *eventv1.Envelope, _ uint64) error { return s.applyArchived(ctx, env) })
		if err != nil {
			return fmt.Errorf("restore archive records: %w", err)
		}
		parked, err := s.reparkUnarchived(ctx)
		if err != nil {
			return fmt.Errorf("restore waiting archive work: %w", err)
		}
		if parked > 0 {
			s.log.Warn("archive work that waited when Redis lost its state is waiting again", "recordings", parked)
		}
		if err := s.d.Redis.Set(ctx, s.st.k.built(), time.Now().UTC().Format(time.RFC3339), 0).Err(); err != nil {
			return fmt.Errorf("restore archive records: %w", err)
		}
	}
	s.log.Info("archive state restored", "config_events", n, "archive_records", records)
	return nil
}

// reparkUnarchived finds, after a Redis loss, the admitted recordings the
// consumer has already been handed but that have no archive record: the
// ones that waited (parked) for a failing target when the state was lost,
// or were in flight. They are parked again, due now. Everything the
// consumer has not been handed yet it will be.
func (s *Service) reparkUnarchived(ctx context.Context) (int, error) {
	cons, err := s.d.JS.Consumer(ctx, s.d.Names.IngestStream(), ArchiveConsumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, err
	}
	upTo := info.Delivered.Stream
	if upTo == 0 {
		return 0, nil
	}
	n := 0
	_, _, err = bus.Replay(ctx, s.d.JS, s.d.Names.IngestStream(), []string{s.d.Names.AdmittedSubject()},
		func(ctx context.Context, env *eventv1.Envelope, seq uint64) error {
			if seq > upTo || env.GetAdmitted().GetRecording() == nil {
				return nil
			}
			if checkDecision(env) != nil {
				return nil // dead-lettered when it was delivered
			}
			domain, id := env.GetTenant().GetDomain(), bus.ArtifactID(env)
			done, err := s.st.archived(ctx, domain, id)
			if err != nil || done != nil {
				return err
			}
			data, err := proto.Marshal(env)
			if err != nil {
				return err
			}
			n++
			// It may have waited for a configuration: keep it waiting
			// rather than record it not archived if nothing matches.
			return s.st.park(ctx, domain, id, data, time.Now(), jobInfo{seq: seq, hadTarget: true})
		})
	return n, err
}

// applyArchived applies one artifact.archived event.
func (s *Service) applyArchived(ctx context.Context, env *eventv1.Envelope) error {
	a := env.GetArchived()
	if a == nil {
		return nil
	}
	domain := env.GetTenant().GetDomain()
	if domain == "" || a.GetArtifactId() == "" {
		return bus.Poison(errors.New("archive record without a domain or an artifact id"))
	}
	_, err := s.st.recordDone(ctx, domain, a, a.GetArchivedAt().AsTime())
	return err
}

var _ platform.Service = (*Service)(nil)

// principal is the caller of a request.
func principal(ctx context.Context) auth.Principal {
	p, _ := auth.FromContext(ctx)
	return p
}

// NewSecretKeySpec returns a fresh CALLVAULT_SECRET_KEY value of one key.
func NewSecretKeySpec(id string) (string, error) { return seal.NewKeySpec(id) }
