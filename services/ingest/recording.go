package ingest

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	"github.com/callvault/callvault/services/ingest/internal/meta"
)

// Result is what an upload did.
type Result struct {
	ID        string `json:"id"`
	Duplicate bool   `json:"duplicate"`
	Size      int64  `json:"size_bytes"`
	SHA256    string `json:"sha256"`
	Sequence  uint64 `json:"stream_sequence"`
}

// StoreRecording validates m, checks the caller may write it, streams body
// into the CDS and publishes the event. Nothing is claimed here: the id
// becomes the domain's only when admission records its decision, so a
// request that fails (invalid, refused, store or publish error) leaves no
// trace that could block a later upload of the same id. An id the domain
// already has a record for is answered as a duplicate.
func (s *Service) StoreRecording(ctx context.Context, p auth.Principal, m meta.Recording, body io.Reader, source string) (res Result, err error) {
	start := s.now()
	defer func() { s.observe(start, res, err) }()
	if err := meta.Validate(m, s.now(), "metadata."); err != nil {
		return Result{}, err
	}
	// The media must hold at least one byte before anything is stored or
	// provisioned.
	br := bufio.NewReaderSize(body, 32<<10)
	if _, err := br.Peek(1); err != nil {
		if errors.Is(err, io.EOF) {
			return Result{}, apierr.Invalid("media", "is empty")
		}
		return Result{}, s.mediaError(err, false)
	}
	if err := s.checkTenancy(ctx, p, m); err != nil {
		return Result{}, err
	}
	if dup, ok, err := s.recorded(ctx, m); err != nil || ok {
		return dup, err
	}

	key, err := objectKey(m)
	if err != nil {
		return Result{}, err
	}
	h := sha256.New()
	lr := &limitReader{r: br, left: s.limits.MaxMediaBytes}
	size, err := s.store.Put(ctx, key, io.TeeReader(lr, h), m.ContentType)
	if err != nil {
		return Result{}, s.mediaError(err, lr.exceeded)
	}
	sum := hexSum(h)
	env := &eventv1.Envelope{
		Id:            EventID(m.Domain, m.ID),
		ArtifactId:    m.ID,
		Type:          EventTypeRecording,
		SchemaVersion: bus.SchemaVersion,
		AcceptedAt:    timestamppb.New(s.now()),
		Tenant:        &eventv1.Tenant{Reseller: m.Reseller, Domain: m.Domain, User: m.User},
		Source:        source,
		Body: &eventv1.Envelope_Recording{Recording: &eventv1.RecordingStored{
			CallId:    m.CallID,
			Mode:      modeProto(m.Mode),
			StartedAt: timestamppb.New(m.StartedAt),
			DurationS: m.DurationS,
			Media:     &eventv1.MediaObject{Key: key, SizeBytes: size, Sha256: sum, ContentType: m.ContentType},
		}},
	}
	// The publish must not be abandoned half way because the client went
	// away: the media is stored and the event should follow.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.publish.Budget)
	defer cancel()
	out, err := s.publishEvent(pctx, env)
	if err != nil {
		// The event may or may not be in the stream: the media stays. A
		// retry of the upload is deduplicated against it, and media no
		// event references is the orphan sweep's to remove.
		return Result{}, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	if out.ours {
		return Result{ID: m.ID, Size: size, SHA256: sum, Sequence: out.ack.Sequence}, nil
	}
	// Another upload of this id is in the stream and its event points to
	// its own media; this one's object is referenced by nothing.
	if out.other != nil {
		s.discard(key)
		o := out.other.GetRecording().GetMedia()
		return Result{ID: m.ID, Duplicate: true, Size: o.GetSizeBytes(), SHA256: o.GetSha256(), Sequence: out.ack.Sequence}, nil
	}
	return Result{ID: m.ID, Duplicate: true, Size: size, SHA256: sum, Sequence: out.ack.Sequence}, nil
}

// mediaError maps a failure to read or store the media to what the client
// is told.
func (s *Service) mediaError(err error, exceeded bool) error {
	if exceeded || errors.Is(err, apierr.ErrTooLarge) {
		return fmt.Errorf("%w: media: larger than %d bytes", apierr.ErrTooLarge, s.limits.MaxMediaBytes)
	}
	var ve *apierr.ValidationError
	var mbe *http.MaxBytesError
	if errors.As(err, &ve) || errors.As(err, &mbe) || errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("%w: store media: %w", apierr.ErrUnavailable, err)
}

// recorded answers a duplicate for an id the domain already has a decision
// record for, whatever the decision was. It only reads.
func (s *Service) recorded(ctx context.Context, m meta.Recording) (Result, bool, error) {
	rec, err := s.catalog.Record(ctx, m.Domain, m.ID)
	if errors.Is(err, catalog.ErrNoRecord) {
		return Result{}, false, nil
	}
	if err != nil {
		return Result{}, false, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	res := Result{ID: m.ID, Duplicate: true, Size: rec.Size}
	if r, err := s.catalog.GetRecording(ctx, m.Domain, m.ID); err == nil {
		res.SHA256, res.Sequence = r.SHA256, r.StreamSeq
	}
	return res, true, nil
}

// checkTenancy judges the caller against the domain's reseller of record
// and claims the id for the domain. An unprovisioned domain is provisioned
// here only by a system token (under the reseller the upload names) or by
// a reseller token for its own reseller; domain and user tokens never
// provision. A registry that cannot be read refuses the upload.
func (s *Service) checkTenancy(ctx context.Context, p auth.Principal, m meta.Recording) error {
	refused := fmt.Errorf("%w: token %s does not cover domain %s", apierr.ErrForbidden, p.Name, m.Domain)
	owner, ok, err := s.catalog.DomainOwner(ctx, m.Domain)
	if err != nil {
		return fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	if !ok {
		if !p.Covers(m.Reseller, m.Domain, m.User) || (p.Level != auth.LevelSystem && p.Level != auth.LevelReseller) {
			return refused
		}
		if s.domains == nil {
			return fmt.Errorf("%w: domain %s is not provisioned", apierr.ErrForbidden, m.Domain)
		}
		d, _, err := s.domains.ProvisionDomain(ctx, p, m.Domain, m.Reseller)
		if err != nil {
			return err
		}
		owner = d.Reseller
	}
	if !p.Covers(owner, m.Domain, m.User) {
		return refused
	}
	if owner != m.Reseller {
		return apierr.Invalid("metadata.reseller", "domain %s is provisioned under another reseller", m.Domain)
	}
	d, err := s.catalog.DomainOf(ctx, m.ID)
	switch {
	case errors.Is(err, catalog.ErrNotFound):
	case err != nil:
		return fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	case d != m.Domain:
		return fmt.Errorf("%w: id %s is already used by another tenant", apierr.ErrConflict, m.ID)
	}
	return nil
}

func (s *Service) discard(key string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.store.Delete(ctx, key); err != nil {
		s.log.Warn("orphan media not removed", "key", key, "err", err)
	}
}

func (s *Service) observe(start time.Time, res Result, err error) {
	status := "accepted"
	var ve *apierr.ValidationError
	switch {
	case errors.As(err, &ve):
		status = "invalid"
	case errors.Is(err, apierr.ErrForbidden), errors.Is(err, apierr.ErrConflict), errors.Is(err, apierr.ErrTooLarge):
		status = "refused"
	case err != nil:
		status = "error"
		s.log.Error("upload failed", "err", err)
	case res.Duplicate:
		status = "duplicate"
	default:
		s.metrics.bytes.Add(float64(res.Size))
		s.metrics.seconds.Observe(s.now().Sub(start).Seconds())
	}
	s.metrics.uploads.WithLabelValues(status).Inc()
}

// objectKey places media by domain and start day; the random suffix keeps
// two concurrent uploads of one id from overwriting each other.
func objectKey(m meta.Recording) (string, error) {
	var nonce [6]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return "", fmt.Errorf("object key: %w", err)
	}
	return fmt.Sprintf("recordings/%s/%s/%s-%s", m.Domain, m.StartedAt.UTC().Format("2006/01/02"), m.ID, hex.EncodeToString(nonce[:])), nil
}

func modeProto(mode string) eventv1.RecordingMode {
	if mode == meta.ModeOnDemand {
		return eventv1.RecordingMode_RECORDING_MODE_ON_DEMAND
	}
	return eventv1.RecordingMode_RECORDING_MODE_AUTOMATIC
}

func hexSum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

// limitReader fails once more than left bytes have been read.
type limitReader struct {
	r        io.Reader
	left     int64
	exceeded bool
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left < 0 {
		l.exceeded = true
		return 0, apierr.ErrTooLarge
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		l.exceeded = true
		return n, apierr.ErrTooLarge
	}
	return n, err
}
