package policy

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/cds"
)

// OrphanSweep configures the removal of media no artifact references:
// objects ingest stored whose event never reached the stream (its publish
// failed for good) or was superseded by another upload of the same id.
type OrphanSweep struct {
	// Grace is how old an object must be before it may be removed. It must
	// exceed the longest upload plus ingest's publish budget: an object
	// younger than that may still be about to be referenced.
	Grace time.Duration `env:"CALLVAULT_ORPHAN_GRACE, default=24h"`
	// Interval between sweeps; 0 disables the background sweep.
	Interval time.Duration `env:"CALLVAULT_ORPHAN_SWEEP_INTERVAL, default=1h"`
}

// DefaultOrphanGrace is the grace period when none is configured.
const DefaultOrphanGrace = 24 * time.Hour

// orphanPrefix is where ingest stores recordings; the sweep looks only
// there and only at keys it can parse back to (domain, id).
const orphanPrefix = "recordings/"

// recordingKeyRE parses ingest's object keys:
// recordings/<domain>/<yyyy>/<mm>/<dd>/<id>-<12 hex>.
var recordingKeyRE = regexp.MustCompile(`^recordings/([^/]+)/\d{4}/\d{2}/\d{2}/([^/]+)-[0-9a-f]{12}$`)

// SweepReport counts what one sweep saw and did.
type SweepReport struct {
	// Cutoff: only objects written before it were candidates.
	Cutoff     time.Time
	Scanned    int
	Young      int // written after the cutoff
	Referenced int // an admitted artifact or a dead-lettered event needs it
	Unknown    int // a key the sweep cannot attribute: never removed
	Removed    int
	Failed     int
}

// ErrNoLister is returned when the content store cannot list its objects.
var ErrNoLister = errors.New("orphan sweep: the content store cannot list objects")

// ErrStateBehind: Redis does not hold every applied event, so nothing may
// be decided from what it lacks.
var ErrStateBehind = errors.New("the catalog state is behind the streams")

// SweepOrphans removes media objects no artifact references. An object is
// removed only when all of these hold: it was written before the cutoff
// (now minus the grace period, and no later than the grace period before
// the oldest ingest event admission has not settled yet); no dead-lettered
// ingest event points to it; and its artifact's decision record is absent,
// points to another object, or is a refusal or deletion (whose media
// removal is owed anyway). Removing is idempotent: a missing object is
// success, and a later sweep retries what failed.
func (s *Service) SweepOrphans(ctx context.Context, now time.Time) (SweepReport, error) {
	lister, ok := s.d.CDS.(cds.Lister)
	if !ok {
		return SweepReport{}, ErrNoLister
	}
	// A missing record means "orphan" only when Redis holds every decision:
	// after a Redis loss every object would look unreferenced.
	if why, err := s.Lag(ctx); err != nil {
		return SweepReport{}, fmt.Errorf("orphan sweep: %w", err)
	} else if why != "" {
		return SweepReport{}, fmt.Errorf("orphan sweep: %w: %s", ErrStateBehind, why)
	}
	cutoff, err := s.sweepCutoff(ctx, now)
	if err != nil {
		return SweepReport{}, err
	}
	protected, err := s.deadLetteredMedia(ctx)
	if err != nil {
		return SweepReport{}, err
	}
	rep := SweepReport{Cutoff: cutoff}
	var failures []error
	err = lister.List(ctx, orphanPrefix, func(o cds.Object) error {
		rep.Scanned++
		if !o.Modified.Before(cutoff) {
			rep.Young++
			return nil
		}
		m := recordingKeyRE.FindStringSubmatch(o.Key)
		if m == nil {
			rep.Unknown++
			return nil
		}
		if protected[o.Key] {
			rep.Referenced++
			return nil
		}
		rec, err := s.catalog.Record(ctx, m[1], m[2])
		switch {
		case errors.Is(err, catalog.ErrNoRecord):
		case err != nil:
			rep.Failed++
			failures = append(failures, err)
			return nil
		case rec.ObjectKey == o.Key && rec.State == catalog.StateAdmitted:
			rep.Referenced++
			return nil
		}
		// Redis may have been emptied since the sweep began: the marker
		// goes with the rest of its state.
		if ap, err := s.catalog.Applied(ctx); err != nil || !ap.Present {
			return fmt.Errorf("%w: Redis lost its state during the sweep", ErrStateBehind)
		}
		if err := s.d.CDS.Delete(ctx, o.Key); err != nil {
			rep.Failed++
			failures = append(failures, err)
			return nil
		}
		rep.Removed++
		s.log.Info("orphan media removed", "key", o.Key, "domain", m[1], "id", m[2], "size_bytes", o.Size, "written", o.Modified)
		return nil
	})
	for status, n := range map[string]int{"removed": rep.Removed, "referenced": rep.Referenced, "young": rep.Young, "unknown": rep.Unknown, "failed": rep.Failed} {
		s.orphans.WithLabelValues(status).Add(float64(n))
	}
	if err != nil {
		return rep, fmt.Errorf("orphan sweep: %w", err)
	}
	if len(failures) > 0 {
		return rep, fmt.Errorf("orphan sweep: %d objects not checked or removed: %w", len(failures), errors.Join(failures...))
	}
	return rep, nil
}

// sweepCutoff is now minus the grace period, moved back to the grace
// period before the first ingest event after the admission consumer's ack
// floor when admission is behind: an event not yet decided was published
// after that one, and its media was written at most the grace period
// before its publish.
func (s *Service) sweepCutoff(ctx context.Context, now time.Time) (time.Time, error) {
	grace := s.orphanSweep.Grace
	cutoff := now.Add(-grace)
	cons, err := s.d.JS.Consumer(ctx, s.d.Names.IngestStream(), AdmitConsumer)
	if err != nil {
		return time.Time{}, fmt.Errorf("orphan sweep: admission consumer: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("orphan sweep: admission consumer: %w", err)
	}
	if info.NumPending == 0 && info.NumAckPending == 0 {
		return cutoff, nil
	}
	stream, err := s.d.JS.Stream(ctx, s.d.Names.IngestStream())
	if err != nil {
		return time.Time{}, fmt.Errorf("orphan sweep: %w", err)
	}
	first, err := stream.GetMsg(ctx, info.AckFloor.Stream+1, jetstream.WithGetMsgSubject(s.d.Names.IngestSubjects()))
	if err != nil {
		return time.Time{}, fmt.Errorf("orphan sweep: oldest unsettled ingest event: %w", err)
	}
	if behind := first.Time.Add(-grace); behind.Before(cutoff) {
		cutoff = behind
	}
	return cutoff, nil
}

// deadLetteredMedia returns the media keys of ingest events admission gave
// up on: they are undecided, and an operator may still re-drive them.
func (s *Service) deadLetteredMedia(ctx context.Context) (map[string]bool, error) {
	stream, err := s.d.JS.Stream(ctx, s.d.Names.DeadLetterStream())
	if err != nil {
		return nil, fmt.Errorf("orphan sweep: dead letters: %w", err)
	}
	keys := map[string]bool{}
	subject := s.d.Names.DeadLetterSubject(AdmitConsumer)
	for seq := uint64(1); ; {
		msg, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return keys, nil
		}
		if err != nil {
			return nil, fmt.Errorf("orphan sweep: dead letter %d: %w", seq, err)
		}
		seq = msg.Sequence + 1
		env, err := bus.DecodeEnvelope(msg.Data)
		if err != nil {
			continue
		}
		if k := mediaOf(env).GetKey(); k != "" {
			keys[k] = true
		}
	}
}

// sweepOrphansEvery runs the sweep until ctx ends. A failed sweep is
// logged and tried again at the next tick.
func (s *Service) sweepOrphansEvery(ctx context.Context, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		rep, err := s.SweepOrphans(ctx, time.Now())
		if err != nil && ctx.Err() == nil {
			s.log.Warn("orphan sweep incomplete", "err", err, "removed", rep.Removed, "failed", rep.Failed)
		}
	}
}

func newOrphanMetrics(reg prometheus.Registerer) *prometheus.CounterVec {
	m := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "callvault", Subsystem: "policy", Name: "orphan_objects_total",
		Help: "Media objects seen by the orphan sweep, by outcome (removed, referenced, young, unknown, failed).",
	}, []string{"status"})
	reg.MustRegister(m)
	return m
}

func orphanSettings(o OrphanSweep) OrphanSweep {
	if o.Grace <= 0 {
		o.Grace = DefaultOrphanGrace
	}
	return o
}
