package router

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/tenant"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	"github.com/callvault/callvault/services/router/internal/match"
	"github.com/callvault/callvault/services/router/internal/pathtmpl"
	"github.com/callvault/callvault/services/router/internal/target"
)

// outcome of one attempt to archive an artifact.
type outcome int

const (
	outcomeArchived outcome = iota + 1
	outcomeNotArchived
	outcomeSkipped // already recorded, or not something the router sends
)

// transientError is a target failure worth retrying; the configuration
// it waits for is marked error meanwhile.
type transientError struct {
	configID string
	// quiet: the configuration did not fail (nothing matched, or it was
	// busy); its status is left alone.
	quiet bool
	// busy: no turn at the target came in time.
	busy bool
	err  error
}

// turnWait bounds the wait for a turn at a configuration's target.
const turnWait = time.Minute

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

// handle archives one admission decision (the consumer runs Workers of
// them at once, each upload also holding its configuration's semaphore).
// A transient failure is retried with backoff by the stream for the first
// ParkAfter deliveries, then parked: the message is acknowledged and the
// work waits in the router's own list, so a target that stays down holds
// no stream slot.
func (s *Service) handle(ctx context.Context, m jetstream.Msg) error {
	env, err := bus.DecodeEnvelope(m.Data())
	if err != nil {
		return err
	}
	if err := s.ensureRestored(ctx); err != nil {
		return err
	}
	attempts, seq := uint64(1), uint64(0)
	if md, err := m.Metadata(); err == nil {
		attempts, seq = md.NumDelivered, md.Sequence.Stream
	}
	_, err = s.archiveOne(ctx, env, jobInfo{seq: seq})
	var te *transientError
	if errors.As(err, &te) && attempts >= uint64(s.set.ParkAfter) {
		info := jobInfo{seq: seq, hadTarget: !te.busy}
		if perr := s.st.park(ctx, env.GetTenant().GetDomain(), bus.ArtifactID(env), m.Data(), time.Now().Add(s.set.ParkedRetry), info); perr != nil {
			return fmt.Errorf("park after %w: %w", err, perr)
		}
		s.metrics.transfers.WithLabelValues("parked").Inc()
		s.log.Warn("archive target keeps failing; the artifact waits for it", "config", te.configID, "artifact", bus.ArtifactID(env), "err", err)
		return nil
	}
	return err
}

// checkDecision refuses an admission the router can never act on.
func checkDecision(env *eventv1.Envelope) error {
	adm := env.GetAdmitted()
	if adm == nil {
		return bus.Poison(fmt.Errorf("event %s on the admission subject is not an admission", env.GetId()))
	}
	rec := adm.GetRecording()
	if rec == nil {
		return nil
	}
	if err := tenant.CheckDomain(env.GetTenant().GetDomain()); err != nil {
		return bus.Poison(fmt.Errorf("admission %s: domain %w", env.GetId(), err))
	}
	if err := tenant.CheckID(bus.ArtifactID(env)); err != nil {
		return bus.Poison(fmt.Errorf("admission %s: artifact id %w", env.GetId(), err))
	}
	if rec.GetMedia().GetKey() == "" {
		return bus.Poison(fmt.Errorf("admission %s: recording %s has no media", env.GetId(), bus.ArtifactID(env)))
	}
	return nil
}

// archiveOne archives the artifact an admission decision admitted, unless
// its archive record exists. job carries the decision's stream sequence
// and whether the artifact already waited for a configuration.
func (s *Service) archiveOne(ctx context.Context, env *eventv1.Envelope, job jobInfo) (outcome, error) {
	seq := job.seq
	if err := checkDecision(env); err != nil {
		return 0, err
	}
	adm := env.GetAdmitted()
	rec := adm.GetRecording()
	if rec == nil {
		return outcomeSkipped, nil // voicemail, fax and messages are not offloaded
	}
	t := env.GetTenant()
	domain, id := t.GetDomain(), bus.ArtifactID(env)
	done, err := s.st.archived(ctx, domain, id)
	if err != nil {
		return 0, err
	}
	if done != nil {
		// Settle what the record still owes: an attempt that stopped
		// after writing it, or one that lost to another, may have left a
		// count, a wait or a parked job behind.
		if err := s.st.settleDone(ctx, domain, done, time.Now()); err != nil {
			return 0, &transientError{configID: done.GetConfigId(), quiet: true, err: fmt.Errorf("settle the archive record of %s: %w", id, err)}
		}
		return outcomeSkipped, nil
	}
	records, err := s.st.candidates(ctx, t.GetReseller(), domain)
	if err != nil {
		return 0, err
	}
	cands := make([]match.Config, 0, len(records))
	byID := make(map[string]*eventv1.ArchiveConfigRecord, len(records))
	for _, r := range records {
		byID[r.GetId()] = r
		cands = append(cands, matchConfig(r))
	}
	best := match.Best(cands, match.Item{Reseller: t.GetReseller(), Domain: domain, Kind: match.KindRecording})
	base := &eventv1.ArtifactArchived{ArtifactId: id, Kind: adm.GetKind(), AdmittedSequence: seq}
	if !best.OK {
		// Work that waited for a configuration keeps waiting when nothing
		// matches now (its configuration was disabled or deleted to be
		// fixed): it goes when that one is enabled again or another
		// matches, or when an operator acts. Only an artifact that never
		// had a target is recorded as not archived.
		w, err := s.st.waitingFor(ctx, domain, []string{id})
		if err != nil {
			return 0, err
		}
		if prev, ok := w[id]; ok || job.hadTarget {
			msg := "nothing matches now (" + best.Reason + "); kept until a configuration takes it"
			if prev.ConfigID != "" {
				msg += ", such as " + prev.ConfigID + " enabled again"
			}
			if werr := s.st.markWaiting(ctx, domain, id, prev.ConfigID, msg, time.Now(), false); werr != nil {
				return 0, werr
			}
			return 0, &transientError{configID: prev.ConfigID, quiet: true, err: errors.New(msg)}
		}
		base.NotArchivedReason = best.Reason
		base.ArchivedAt = timestamppb.New(time.Now().UTC().Truncate(time.Millisecond))
		if err := s.record(ctx, env, base); err != nil {
			return 0, recordFailed(base, err)
		}
		s.metrics.transfers.WithLabelValues("not_archived").Inc()
		return outcomeNotArchived, nil
	}
	cfg := byID[best.Config.ID]
	// A turn at the target waits a bounded time, so the lease of a parked
	// job and the deadline of a delivery cover the wait and the upload.
	wctx, cancel := context.WithTimeout(ctx, turnWait)
	release, err := s.sem.acquire(wctx, cfg.GetId())
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, &transientError{configID: cfg.GetId(), quiet: true, busy: true, err: fmt.Errorf("configuration %s is busy with other uploads", cfg.GetId())}
	}
	defer release()
	stored, retain, err := s.upload(ctx, cfg, env, rec, id)
	var unstorable *unstorableError
	if errors.As(err, &unstorable) {
		// The artifact, not the target, is the problem: waiting would not
		// help, and the configuration did not fail.
		base.NotArchivedReason = unstorable.Error()
		base.ArchivedAt = timestamppb.New(time.Now().UTC().Truncate(time.Millisecond))
		if err := s.record(ctx, env, base); err != nil {
			return 0, recordFailed(base, err)
		}
		return outcomeNotArchived, nil
	}
	if errors.Is(err, cds.ErrNotFound) {
		// The central copy went (deleted) before it could be archived.
		base.NotArchivedReason = "the central copy was deleted before it was archived"
		base.ArchivedAt = timestamppb.New(time.Now().UTC().Truncate(time.Millisecond))
		if err := s.record(ctx, env, base); err != nil {
			return 0, recordFailed(base, err)
		}
		return outcomeNotArchived, nil
	}
	if err != nil {
		s.metrics.transfers.WithLabelValues("failed").Inc()
		msg := err.Error()
		if werr := s.st.markWaiting(ctx, domain, id, cfg.GetId(), msg, time.Now(), true); werr != nil {
			return 0, fmt.Errorf("%w (and recording the wait failed: %w)", err, werr)
		}
		return 0, &transientError{configID: cfg.GetId(), err: fmt.Errorf("archive %s to %s (%s): %w", id, cfg.GetId(), cfg.GetName(), err)}
	}
	base.ConfigId, base.Location, base.Key = cfg.GetId(), stored.Location, stored.Key
	base.SizeBytes, base.Sha256, base.Encrypted = stored.Size, stored.SHA256, cfg.GetAgeRecipient() != ""
	base.StorageType, base.Service = cfg.GetStorageType(), serviceOf(cfg)
	base.StorageClass = storageClass(cfg)
	if !retain.IsZero() {
		base.RetainUntil = timestamppb.New(retain)
	}
	base.ArchivedAt = timestamppb.New(time.Now().UTC().Truncate(time.Millisecond))
	failing, err := s.st.failing(ctx, cfg.GetId())
	if err != nil {
		return 0, err
	}
	if err := s.record(ctx, env, base); err != nil {
		return 0, recordFailed(base, err)
	}
	s.metrics.transfers.WithLabelValues("archived").Inc()
	s.metrics.bytes.Add(float64(stored.Size))
	// The target works again: whatever parked waiting for it may go now.
	// Only on that turn from error to working: waking reads the whole
	// wait list, which a drain of a long backlog must not do per upload.
	if failing {
		if err := s.st.wakeParked(ctx, cfg.GetId(), time.Now()); err != nil {
			s.log.Warn("waking parked work", "config", cfg.GetId(), "err", err)
		}
	}
	return outcomeArchived, nil
}

// serviceOf names the service a configuration's objects are on.
func serviceOf(cfg *eventv1.ArchiveConfigRecord) string {
	if cfg.GetStorageType() == typeSFTP {
		return net.JoinHostPort(cfg.GetHost(), strconv.Itoa(int(cfg.GetPort())))
	}
	return cfg.GetEndpoint()
}

func storageClass(cfg *eventv1.ArchiveConfigRecord) string {
	switch cfg.GetStorageType() {
	case typeGlacierIR:
		return "GLACIER_IR"
	case typeS3, typeWasabi:
		return "STANDARD"
	}
	return ""
}

func matchConfig(r *eventv1.ArchiveConfigRecord) match.Config {
	c := match.Config{ID: r.GetId(), Name: r.GetName(), Match: r.GetMatch(), Enabled: r.GetEnabled(), Recordings: r.GetSendRecordings(), CDRs: r.GetSendCdrs()}
	switch r.GetLevel() {
	case levelSystem:
		c.Level = match.LevelSystem
	case levelReseller:
		c.Level = match.LevelReseller
	case levelDomain:
		c.Level = match.LevelDomain
	}
	return c
}

// objectKey renders a configuration's path template for a recording.
func objectKey(cfg *eventv1.ArchiveConfigRecord, env *eventv1.Envelope, rec *eventv1.RecordingStored, id string) (string, error) {
	tp, err := pathtmpl.Parse(cfg.GetPathTemplate())
	if err != nil {
		return "", fmt.Errorf("configuration %s: path template: %w", cfg.GetId(), err)
	}
	t := env.GetTenant()
	key := tp.Render(pathtmpl.Values{
		Reseller: t.GetReseller(), Domain: t.GetDomain(), User: t.GetUser(), CallID: rec.GetCallId(), RecordingID: id,
		Time: rec.GetStartedAt().AsTime(), Ext: pathtmpl.ExtFor(rec.GetMedia().GetContentType()),
	})
	if cfg.GetAgeRecipient() != "" {
		key += ".age"
	}
	if err := storable(path.Join(cfg.GetPrefix(), key)); err != nil {
		return "", err
	}
	return key, nil
}

// unstorableError says an artifact's object key is one no target stores.
type unstorableError struct{ msg string }

func (e *unstorableError) Error() string { return e.msg }

// Object key limits every target kind keeps: S3 keys up to 1,024 bytes,
// file names (one segment) up to 255, less the 26 bytes the SFTP target's
// temporary name adds to the last one.
const (
	maxKeyLen     = 1024
	maxSegmentLen = 255 - 26
)

func storable(key string) error {
	if len(key) > maxKeyLen {
		return &unstorableError{fmt.Sprintf("its object key would be %d bytes, more than the %d a target stores; shorten the configuration's path template", len(key), maxKeyLen)}
	}
	for _, seg := range strings.Split(key, "/") {
		if len(seg) > maxSegmentLen {
			return &unstorableError{fmt.Sprintf("a segment of its object key would be %d bytes, more than the %d a file name may hold; shorten the configuration's path template", len(seg), maxSegmentLen)}
		}
	}
	return nil
}

// upload streams the recording from the CDS to the configuration's
// target and returns what was stored. A key that already holds the very
// bytes (an earlier attempt stored them and stopped before recording it)
// is taken as archived; one holding other bytes is an error, never
// overwritten.
func (s *Service) upload(ctx context.Context, cfg *eventv1.ArchiveConfigRecord, env *eventv1.Envelope, rec *eventv1.RecordingStored, id string) (target.Stored, time.Time, error) {
	tg, release, err := s.targets.get(cfg)
	if err != nil {
		return target.Stored{}, time.Time{}, err
	}
	defer release()
	key, err := objectKey(cfg, env, rec, id)
	if err != nil {
		return target.Stored{}, time.Time{}, err
	}
	media := rec.GetMedia()
	ctx, cancel := context.WithTimeout(ctx, s.set.UploadTimeout)
	defer cancel()
	// The central copy first: a recording deleted meanwhile is recorded as
	// such whatever else the configuration asks.
	src, err := s.d.CDS.Open(ctx, media.GetKey(), 0, -1)
	if err != nil {
		return target.Stored{}, time.Time{}, err
	}
	defer src.Close()
	var retain time.Time
	if cfg.GetWormMode() != "" {
		if retain, err = s.retainUntil(ctx, env.GetTenant().GetDomain(), id); err != nil {
			return target.Stored{}, time.Time{}, err
		}
	}
	// Plain, the target itself checks the bytes it sends against the size
	// and SHA-256 the catalog recorded; encrypted, what it sends is
	// ciphertext, so the source is checked on the way in.
	body := io.Reader(src)
	opts := target.PutOptions{ContentType: media.GetContentType(), Size: media.GetSizeBytes(), SHA256: media.GetSha256(), RetainUntil: retain}
	domain := env.GetTenant().GetDomain()
	if r := cfg.GetAgeRecipient(); r != "" {
		opts.BeforeCommit = func(sum string, _ int64) error {
			return s.st.noteIntent(ctx, domain, id, cfg.GetId(), key, sum)
		}
		enc, err := encrypting(newCheckedReader(src, media.GetSha256(), media.GetSizeBytes()), r)
		if err != nil {
			return target.Stored{}, time.Time{}, err
		}
		defer enc.Close()
		body = enc
		opts.ContentType, opts.Size, opts.SHA256 = "application/age-encryption", -1, ""
	}
	stored, putErr := tg.Put(ctx, key, body, opts)
	if !errors.Is(putErr, target.ErrExists) {
		return stored, retain, putErr
	}
	// The key is taken. Plain, it is this recording when it holds the very
	// bytes (an earlier attempt stored them and stopped before recording
	// it). Encrypted, it is when it hashes to what one of this artifact's
	// own attempts was about to commit at that key.
	sum, size, herr := objectHash(ctx, tg, key)
	if herr != nil {
		return target.Stored{}, time.Time{}, fmt.Errorf("%s is taken and could not be read back: %w", key, herr)
	}
	ours := sum == media.GetSha256() && size == media.GetSizeBytes()
	if cfg.GetAgeRecipient() != "" {
		if ours, err = s.st.intended(ctx, domain, id, cfg.GetId(), key, sum); err != nil {
			return target.Stored{}, time.Time{}, err
		}
	}
	if !ours {
		return target.Stored{}, time.Time{}, fmt.Errorf("%s already holds other bytes; the router never overwrites a remote object: %w", key, putErr)
	}
	return target.Stored{Location: tg.Locate(key), Key: key, Size: size, SHA256: sum}, retain, nil
}

// objectHash reads key back and returns its SHA-256 and size.
func objectHash(ctx context.Context, tg target.Target, key string) (string, int64, error) {
	rc, err := tg.Open(ctx, key, 0, -1)
	if err != nil {
		return "", 0, err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

func (s *Service) retainUntil(ctx context.Context, domain, id string) (time.Time, error) {
	if s.retention != nil {
		at, err := s.retention.DeleteBy(ctx, domain, id)
		if errors.Is(err, apierr.ErrNotFound) {
			return time.Time{}, cds.ErrNotFound // deleted meanwhile
		}
		if err != nil {
			return time.Time{}, fmt.Errorf("delete-by date for WORM retention: %w", err)
		}
		if !at.IsZero() && !at.After(time.Now()) {
			// Locking it would keep it past what its policy allows.
			return time.Time{}, &unstorableError{fmt.Sprintf("its delete-by date %s has passed: a WORM archive would keep it longer than its policy allows", at.UTC().Format(time.RFC3339))}
		}
		if !at.IsZero() {
			return at.UTC(), nil
		}
	}
	return time.Now().Add(s.set.WORMDefault).UTC().Truncate(time.Second), nil
}

// record publishes the archive record, then applies it. The event id is
// the artifact's, so a retry after a lost PubAck is a duplicate the
// stream drops, and applying twice changes nothing.
func (s *Service) record(ctx context.Context, admitted *eventv1.Envelope, a *eventv1.ArtifactArchived) error {
	t := admitted.GetTenant()
	msgID := "archived-" + t.GetDomain() + "-" + a.GetArtifactId()
	env := &eventv1.Envelope{
		Id: msgID, ArtifactId: a.GetArtifactId(), AcceptedAt: timestamppb.Now(), Source: "router",
		Type: "artifact.archived", SchemaVersion: 2,
		Tenant: &eventv1.Tenant{Reseller: t.GetReseller(), Domain: t.GetDomain(), User: t.GetUser()},
		Body:   &eventv1.Envelope_Archived{Archived: a},
	}
	ack, err := bus.PublishEnvelope(ctx, s.d.JS, s.d.Names.ArchivedSubject(), msgID, env)
	if err != nil {
		return fmt.Errorf("publish archive record: %w", err)
	}
	if ack.Duplicate {
		// The stream already holds this artifact's record (an attempt that
		// stopped after publishing it): that one is what happened, and
		// Redis follows it, not the record this attempt built.
		if stored, err := s.storedRecord(ctx, ack.Sequence, a.GetArtifactId()); err == nil {
			a = stored
		} else {
			return fmt.Errorf("read the archive record already on the stream: %w", err)
		}
	}
	// The last success is when it was recorded: an attempt that lost to
	// this one may have marked an error just before.
	_, err = s.st.recordDone(ctx, t.GetDomain(), a, time.Now())
	return err
}

// recordFailed is a failure to record (publish or apply) an archive
// record: retried like a target failure, and parked after ParkAfter
// deliveries rather than dead-lettered, since the decision itself is good;
// the configuration's status is left alone.
func recordFailed(a *eventv1.ArtifactArchived, err error) error {
	return &transientError{configID: a.GetConfigId(), quiet: true, err: fmt.Errorf("record where %s went: %w", a.GetArtifactId(), err)}
}

// storedRecord reads the archive record at seq of the ingest stream.
func (s *Service) storedRecord(ctx context.Context, seq uint64, id string) (*eventv1.ArtifactArchived, error) {
	st, err := s.d.JS.Stream(ctx, s.d.Names.IngestStream())
	if err != nil {
		return nil, err
	}
	m, err := st.GetMsg(ctx, seq)
	if err != nil {
		return nil, err
	}
	env, err := bus.DecodeEnvelope(m.Data)
	if err != nil {
		return nil, err
	}
	if a := env.GetArchived(); a != nil && a.GetArtifactId() == id {
		return a, nil
	}
	return nil, fmt.Errorf("message %d is not the archive record of %s", seq, id)
}

// drain retries parked work when it is due, until ctx ends. It claims
// only as many jobs as it has free workers, so a claimed job starts at
// once and its lease covers its turn and its upload; each job frees its
// worker when it ends, never waiting for the others.
func (s *Service) drain(ctx context.Context) error {
	tick := time.NewTicker(s.drainEvery())
	defer tick.Stop()
	slots := make(chan struct{}, s.set.Workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if err := s.ensureRestored(ctx); err != nil {
			if ctx.Err() == nil {
				s.log.Warn("draining parked archive work", "err", err)
			}
			continue
		}
		free := cap(slots) - len(slots)
		jobs, err := s.st.claimDue(ctx, time.Now(), s.set.UploadTimeout+turnWait+time.Minute, free)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("draining parked archive work", "err", err)
			}
			continue
		}
		for _, j := range jobs {
			slots <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-slots }()
				s.retryParked(context.WithoutCancel(ctx), j)
			}()
		}
	}
}

func (s *Service) drainEvery() time.Duration {
	d := s.set.ParkedRetry / 4
	switch {
	case d < 50*time.Millisecond:
		return 50 * time.Millisecond
	case d > 5*time.Second:
		return 5 * time.Second
	}
	return d
}

func (s *Service) retryParked(ctx context.Context, j parkedJob) {
	m := j.member
	env := &eventv1.Envelope{}
	if err := proto.Unmarshal(j.env, env); err != nil {
		s.deadLetterParked(ctx, j, fmt.Errorf("a parked job does not decode: %w", err))
		return
	}
	_, err := s.archiveOne(ctx, env, j.info)
	if err == nil {
		if uerr := s.st.unpark(ctx, m); uerr != nil {
			s.log.Warn("unpark", "job", m, "err", uerr)
		}
		return
	}
	if bus.IsPoison(err) {
		s.deadLetterParked(ctx, j, err)
		return
	}
	if rerr := s.st.reschedule(ctx, m, time.Now().Add(s.set.ParkedRetry)); rerr != nil {
		s.log.Warn("reschedule", "job", m, "err", rerr)
	}
}

// deadLetterParked moves a parked job that can never succeed to the
// dead-letter stream with the reason; it leaves the list only once its
// dead letter is written (else it is tried, and dead-lettered, again).
func (s *Service) deadLetterParked(ctx context.Context, j parkedJob, why error) {
	// Named by the job, not only its sequence: a job without one must not
	// collide with another's dead letter.
	// The consumer's own name for the same admission when there is a
	// sequence (so a second dead letter of it is a duplicate the stream
	// drops); named by the job otherwise, so two never collide.
	msgID := ArchiveConsumer + ":" + strconv.FormatUint(j.info.seq, 10)
	if j.info.seq == 0 {
		msgID = ArchiveConsumer + ":parked:" + j.member
	}
	if err := bus.PublishDeadLetter(ctx, s.d.JS, s.d.Names, ArchiveConsumer, s.d.Names.IngestStream(), s.d.Names.AdmittedSubject(), j.info.seq, j.env, why.Error(), msgID); err != nil {
		s.log.Error("a parked job cannot be archived and its dead letter failed; it stays parked", "job", j.member, "reason", why, "err", err)
		_ = s.st.reschedule(ctx, j.member, time.Now().Add(s.set.ParkedRetry))
		return
	}
	s.log.Warn("a parked job cannot be archived: dead-lettered", "job", j.member, "reason", why)
	if err := s.st.unpark(ctx, j.member); err != nil {
		s.log.Warn("unpark", "job", j.member, "err", err)
	}
}
