// Package ledger is the CDR ledger: it takes CDRs off their work-queue
// stream into compressed segment objects in the CDS, one partition per
// domain and UTC day of the call's start, keeps the small Redis index of
// partitions, compacts closed days, rebuilds the index from the objects
// alone, and answers exports in constant memory. It runs inside the
// policy service, which owns the partition index as it owns the catalog.
package ledger

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/cdr"
	"github.com/callvault/callvault/pkg/cds"
)

// WriterConsumer is the durable consumer of the CDR stream.
const WriterConsumer = "cdr-writer"

// Settings tune the segment writer, compaction and exports.
type Settings struct {
	// SegmentCDRs flushes a partition's buffer once it holds this many.
	SegmentCDRs int `env:"CALLVAULT_CDR_SEGMENT_CDRS, default=8192"`
	// FlushAge flushes a partition whose oldest buffered CDR is this old.
	FlushAge time.Duration `env:"CALLVAULT_CDR_FLUSH_AGE, default=2s"`
	// MaxBuffered bounds the CDRs held unacknowledged across partitions;
	// reaching it flushes the largest partitions first.
	MaxBuffered int `env:"CALLVAULT_CDR_MAX_BUFFERED, default=65536"`
	// BlockCDRs is how many CDRs one compressed block holds.
	BlockCDRs int `env:"CALLVAULT_CDR_BLOCK_CDRS, default=2048"`
	// CompactEvery is how often closed days are looked at.
	CompactEvery time.Duration `env:"CALLVAULT_CDR_COMPACT_EVERY, default=1m"`
	// DayGrace is how long after a UTC day ends it counts as closed, and
	// how long a closed partition must go unwritten before compaction.
	DayGrace time.Duration `env:"CALLVAULT_CDR_DAY_GRACE, default=1h"`
	// AckWait is how long a CDR delivered to a writer that stopped waits
	// before another writer gets it.
	AckWait time.Duration `env:"CALLVAULT_CDR_ACK_WAIT, default=1m"`
	// ExportWorkers run background exports.
	ExportWorkers int `env:"CALLVAULT_CDR_EXPORT_WORKERS, default=2"`
}

func (s Settings) withDefaults() Settings {
	if s.SegmentCDRs <= 0 {
		s.SegmentCDRs = 8192
	}
	if s.FlushAge <= 0 {
		s.FlushAge = 2 * time.Second
	}
	if s.MaxBuffered < s.SegmentCDRs {
		s.MaxBuffered = max(65536, s.SegmentCDRs)
	}
	if s.BlockCDRs <= 0 {
		s.BlockCDRs = cdr.DefaultBlockCDRs
	}
	if s.CompactEvery <= 0 {
		s.CompactEvery = time.Minute
	}
	if s.DayGrace <= 0 {
		s.DayGrace = time.Hour
	}
	if s.AckWait <= 0 {
		s.AckWait = time.Minute
	}
	if s.ExportWorkers <= 0 {
		s.ExportWorkers = 2
	}
	return s
}

// Ledger is the CDR ledger.
type Ledger struct {
	js      jetstream.JetStream
	names   bus.Names
	rdb     redis.UniversalClient
	store   cds.Store
	idx     index
	k       keys
	set     Settings
	log     *slog.Logger
	m       *metrics
	domains Domains
	clock   atomic.Pointer[func() time.Time]
	// hooks let tests stop a flush between its steps.
	hooks hooks
}

type hooks struct {
	afterPut   func(key string)
	afterIndex func(key string)
	afterSwap  func(key string)
}

// New returns the ledger; domains answers who owns a domain (the catalog),
// reg may be nil.
func New(js jetstream.JetStream, names bus.Names, rdb redis.UniversalClient, store cds.Store, domains Domains, set Settings, log *slog.Logger, reg prometheus.Registerer) *Ledger {
	k := keys{ns: names.Namespace()}
	l := &Ledger{
		js: js, names: names, rdb: rdb, store: store,
		idx: index{rdb: rdb, k: k}, k: k, domains: domains,
		set: set.withDefaults(), log: log.With("component", "cdr-ledger"),
		m: newMetrics(reg),
	}
	l.setClock(time.Now)
	l.setClock(time.Now)
	return l
}

// Run runs the segment writer, the compactor and the export workers until
// ctx ends.
func (l *Ledger) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return l.runWriter(gctx) })
	g.Go(func() error { return l.compactEvery(gctx) })
	for range l.set.ExportWorkers {
		g.Go(func() error { return l.runExports(gctx) })
	}
	return g.Wait()
}

type metrics struct {
	written   prometheus.Counter
	segments  *prometheus.CounterVec
	bytes     prometheus.Counter
	poison    prometheus.Counter
	failures  prometheus.Counter
	exported  prometheus.Counter
	buffered  prometheus.Gauge
	compacted prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		written: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "callvault", Subsystem: "cdr", Name: "written_total",
			Help: "CDRs written into segments (a rewrite after a lost ack counts again)."}),
		segments: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "callvault", Subsystem: "cdr", Name: "segments_total",
			Help: "Segment objects written, by origin (writer, compaction)."}, []string{"origin"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "callvault", Subsystem: "cdr", Name: "segment_bytes_total",
			Help: "Bytes of segment objects written."}),
		poison: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "callvault", Subsystem: "cdr", Name: "dead_letters_total",
			Help: "CDR messages sent to the dead-letter stream."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "callvault", Subsystem: "cdr", Name: "flush_failures_total",
			Help: "Segment flushes that failed and will be retried."}),
		exported: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "callvault", Subsystem: "cdr", Name: "exported_total",
			Help: "CDRs returned by exports."}),
		buffered: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "callvault", Subsystem: "cdr", Name: "buffered",
			Help: "CDRs held by the writer, not yet in a segment."}),
		compacted: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "callvault", Subsystem: "cdr", Name: "compactions_total",
			Help: "Partitions compacted."}),
	}
	if reg != nil {
		reg.MustRegister(m.written, m.segments, m.bytes, m.poison, m.failures, m.exported, m.buffered, m.compacted)
	}
	return m
}

func (l *Ledger) now() time.Time { return (*l.clock.Load())() }

// setClock replaces the clock (tests move it to close days).
func (l *Ledger) setClock(f func() time.Time) { l.clock.Store(&f) }
