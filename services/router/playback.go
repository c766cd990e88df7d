package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/tenant"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	routerv1 "github.com/callvault/callvault/proto/callvault/router/v1"
	"github.com/callvault/callvault/services/router/internal/target"
)

// TestConfig writes, reads back and deletes a probe object on the
// configuration's target and reports the step and reason of a failure.
func (s *Service) TestConfig(ctx context.Context, p auth.Principal, id string) (*routerv1.TestConfigResponse, error) {
	r, err := s.visibleConfig(ctx, p, id)
	if err != nil {
		return nil, err
	}
	tg, err := s.open(r)
	if err != nil {
		return &routerv1.TestConfigResponse{Reason: string(target.ReasonOther), Step: "configure", Detail: err.Error()}, nil
	}
	defer tg.Close()
	if r.GetWormMode() != "" {
		if s3, ok := tg.(*target.S3); ok {
			if err := s3.CheckObjectLock(ctx); err != nil {
				return failureResponse(err), nil
			}
		}
	}
	if err := tg.Probe(ctx, ".callvault-probe"); err != nil {
		return failureResponse(err), nil
	}
	return &routerv1.TestConfigResponse{Ok: true}, nil
}

func failureResponse(err error) *routerv1.TestConfigResponse {
	out := &routerv1.TestConfigResponse{Reason: string(target.ReasonOf(err)), Detail: err.Error()}
	var f *target.Failure
	if errors.As(err, &f) {
		out.Step, out.Detail = f.Op, f.Detail
	}
	return out
}

// checkWORM refuses a WORM configuration whose bucket has no Object Lock
// (or cannot be asked): a WORM promise that the bucket would not keep is
// worse than none.
func (s *Service) checkWORM(ctx context.Context, r *eventv1.ArchiveConfigRecord) error {
	if !isS3Family(r.GetStorageType()) {
		return apierr.Invalid("config.worm_mode", "WORM (S3 Object Lock) is for S3 configurations only")
	}
	tg, err := s.open(r)
	if err != nil {
		return err
	}
	defer tg.Close()
	s3, ok := tg.(*target.S3)
	if !ok {
		return apierr.Invalid("config.worm_mode", "WORM (S3 Object Lock) is for S3 configurations only")
	}
	if err := s3.CheckObjectLock(ctx); err != nil {
		if target.ReasonOf(err) == target.ReasonNoObjectLock {
			return apierr.Invalid("config.worm_mode", "bucket %s has no S3 Object Lock enabled, so WORM retention cannot be honoured: create the bucket with Object Lock, or leave worm_mode empty", r.GetBucket())
		}
		return apierr.Invalid("config.worm_mode", "the bucket's Object Lock could not be checked (%s): %v", target.ReasonOf(err), err)
	}
	return nil
}

// ArchiveStates says, for each artifact of a domain the caller covers,
// whether and where it is archived.
func (s *Service) ArchiveStates(ctx context.Context, p auth.Principal, domain string, ids []string) ([]*routerv1.ArchiveState, error) {
	if err := tenant.CheckDomain(domain); err != nil {
		return nil, apierr.Invalid("domain", "%v", err)
	}
	if len(ids) > 1000 {
		return nil, apierr.Invalid("artifact_ids", "at most 1000 per call")
	}
	for i, id := range ids {
		if err := tenant.CheckID(id); err != nil {
			return nil, apierr.Invalid(fmt.Sprintf("artifact_ids[%d]", i), "%v", err)
		}
	}
	if _, err := s.authorizeRead(ctx, p, domain, ids); err != nil {
		return nil, err
	}
	waiting, err := s.st.waitingFor(ctx, domain, ids)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	records, err := s.st.archivedMany(ctx, domain, ids)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	// Only the configurations these artifacts name are read. Names and
	// errors of those the caller does not see (a reseller's or the
	// system's, for a domain's users) are not shown.
	var cfgIDs []string
	for i, id := range ids {
		if a := records[i]; a != nil && a.GetConfigId() != "" {
			cfgIDs = append(cfgIDs, a.GetConfigId())
		} else if w, ok := waiting[id]; ok && w.ConfigID != "" {
			cfgIDs = append(cfgIDs, w.ConfigID)
		}
	}
	cfgs, err := s.st.configsByID(ctx, slices.Compact(slices.Sorted(slices.Values(cfgIDs))))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	names, hidden := map[string]string{}, map[string]bool{}
	for cid, c := range cfgs {
		if visible(p, c) {
			names[cid] = c.GetName()
		} else {
			hidden[cid] = true
		}
	}
	out := make([]*routerv1.ArchiveState, 0, len(ids))
	for i, id := range ids {
		st := &routerv1.ArchiveState{ArtifactId: id}
		switch a := records[i]; {
		case a != nil && a.GetConfigId() != "":
			st.State, st.ConfigId, st.Location, st.ArchivedAt = "archived", a.GetConfigId(), a.GetLocation(), a.GetArchivedAt()
			st.Encrypted, st.Sha256, st.SizeBytes, st.ConfigName = a.GetEncrypted(), a.GetSha256(), a.GetSizeBytes(), names[a.GetConfigId()]
		case a != nil:
			st.State, st.Reason = "not_archived", a.GetNotArchivedReason()
		default:
			st.State = "pending"
			if w, ok := waiting[id]; ok {
				st.ConfigId, st.ConfigName, st.Reason = w.ConfigID, names[w.ConfigID], w.Err
				if hidden[w.ConfigID] {
					st.Reason = "waiting for an archive configuration above this domain, which reports a failure to its owner"
				}
			}
		}
		out = append(out, st)
	}
	return out, nil
}

// authorizeRead checks p may read the artifacts: a domain (or wider) token
// covering the domain, or a user token for its own user's artifacts.
func (s *Service) authorizeRead(ctx context.Context, p auth.Principal, domain string, ids []string) (string, error) {
	if p.Level != auth.LevelUser {
		return s.domains.AuthorizeDomain(ctx, p, domain)
	}
	var reseller string
	for _, id := range ids {
		rec, err := s.domains.GetRecording(ctx, domain, id)
		if errors.Is(err, catalog.ErrNotFound) {
			return "", fmt.Errorf("%w: recording %s", apierr.ErrNotFound, id)
		}
		if err != nil {
			return "", fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
		}
		if reseller, err = s.domains.AuthorizeUser(ctx, p, domain, rec.User); err != nil {
			return "", fmt.Errorf("%w: recording %s", apierr.ErrNotFound, id)
		}
	}
	return reseller, nil
}

// Archived is an archived object opened for reading.
type Archived struct {
	Body      io.ReadCloser
	Size      int64
	Location  string
	Encrypted bool
}

// OpenArchived reads length bytes (below zero: to the end) of an archived
// recording from offset, as the gateway's media route needs it.
func (s *Service) OpenArchived(ctx context.Context, p auth.Principal, domain, id string, offset, length int64) (io.ReadCloser, error) {
	a, err := s.OpenArchive(ctx, p, domain, id, offset, length)
	if err != nil {
		return nil, err
	}
	return a.Body, nil
}

// OpenArchive reads an archived recording from its target (the central
// copy being gone). An encrypted archive is refused with a reason: only
// the tenant holds the key.
func (s *Service) OpenArchive(ctx context.Context, p auth.Principal, domain, id string, offset, length int64) (Archived, error) {
	if err := tenant.CheckDomain(domain); err != nil {
		return Archived{}, apierr.Invalid("domain", "%v", err)
	}
	if err := tenant.CheckID(id); err != nil {
		return Archived{}, apierr.Invalid("artifact_id", "%v", err)
	}
	if offset < 0 {
		return Archived{}, apierr.Invalid("offset", "must not be negative")
	}
	if _, err := s.authorizeRead(ctx, p, domain, []string{id}); err != nil {
		return Archived{}, err
	}
	a, err := s.st.archived(ctx, domain, id)
	if err != nil {
		return Archived{}, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	if a == nil || a.GetConfigId() == "" {
		return Archived{}, fmt.Errorf("%w: recording %s has no archived copy", apierr.ErrNotFound, id)
	}
	if a.GetEncrypted() {
		return Archived{}, fmt.Errorf("%w: recording %s is archived encrypted to the tenant's own key (age); callvault cannot decrypt it for playback: fetch it from %s and decrypt it with that key",
			apierr.ErrConflict, id, a.GetLocation())
	}
	cfg, err := s.st.config(ctx, a.GetConfigId())
	if errors.Is(err, errNoConfig) {
		return Archived{}, fmt.Errorf("%w: recording %s was archived to configuration %s, which was deleted; its copy at %s cannot be reached",
			apierr.ErrUnavailable, id, a.GetConfigId(), a.GetLocation())
	}
	if err != nil {
		return Archived{}, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	tg, key, release, err := s.archivedTarget(cfg, a)
	if err != nil {
		return Archived{}, err
	}
	size := a.GetSizeBytes()
	if offset >= size {
		release()
		return Archived{Body: io.NopCloser(eofReader{}), Size: size, Location: a.GetLocation()}, nil
	}
	rc, err := tg.Open(ctx, key, offset, length)
	if errors.Is(err, target.ErrNotFound) {
		release()
		return Archived{}, fmt.Errorf("%w: the archived copy of %s is gone from %s", apierr.ErrNotFound, id, a.GetLocation())
	}
	if err != nil {
		release()
		return Archived{}, fmt.Errorf("%w: reading the archive: %w", apierr.ErrUnavailable, err)
	}
	return Archived{Body: releasing{rc, release}, Size: size, Location: a.GetLocation()}, nil
}

// archivedTarget is the target and key to read an archive record from:
// the configuration's own when it still points where the object was
// stored; the same bucket without the prefix when only the prefix changed
// (the record's location holds the whole key); otherwise an error, never
// another service's bytes.
func (s *Service) archivedTarget(cfg *eventv1.ArchiveConfigRecord, a *eventv1.ArtifactArchived) (target.Target, string, func(), error) {
	moved := func(now string) error {
		return fmt.Errorf("%w: recording %s was archived to %s, but configuration %s now points to %s; its archived copy cannot be read through it",
			apierr.ErrUnavailable, a.GetArtifactId(), a.GetLocation(), a.GetConfigId(), now)
	}
	if a.GetService() != serviceOf(cfg) || isS3Family(a.GetStorageType()) != isS3Family(cfg.GetStorageType()) {
		return nil, "", nil, moved(cfg.GetStorageType() + " " + serviceOf(cfg))
	}
	tg, release, err := s.targets.get(cfg)
	if err != nil {
		return nil, "", nil, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	if loc := tg.Locate(a.GetKey()); loc == a.GetLocation() {
		return tg, a.GetKey(), release, nil
	}
	release()
	bucketRoot := "s3://" + cfg.GetBucket() + "/"
	if !isS3Family(cfg.GetStorageType()) || !strings.HasPrefix(a.GetLocation(), bucketRoot) {
		return nil, "", nil, moved(tg.Locate(a.GetKey()))
	}
	// Only the prefix changed: read the whole key from the bucket's root.
	root := proto.Clone(cfg).(*eventv1.ArchiveConfigRecord)
	root.Prefix = ""
	tg, release, err = s.targets.getAs(cfg.GetId()+rootVariant, root)
	if err != nil {
		return nil, "", nil, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	return tg, strings.TrimPrefix(a.GetLocation(), bucketRoot), release, nil
}

// releasing releases the target when the body is closed.
type releasing struct {
	io.ReadCloser
	release func()
}

func (r releasing) Close() error {
	err := r.ReadCloser.Close()
	r.release()
	return err
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
