package router

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"

	"filippo.io/age"
	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/tenant"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	routerv1 "github.com/callvault/callvault/proto/callvault/router/v1"
	"github.com/callvault/callvault/services/router/internal/pathtmpl"
	"github.com/callvault/callvault/services/router/internal/seal"
)

// entityArchiveConfig names remote storage configurations in config events.
const entityArchiveConfig = "archive_config"

// The storage types and levels, as the API spells them.
const (
	typeS3        = "s3"
	typeGlacierIR = "s3_glacier_ir"
	typeWasabi    = "wasabi"
	typeSFTP      = "sftp"

	levelSystem   = "system"
	levelReseller = "reseller"
	levelDomain   = "domain"
)

// WasabiWarning is returned with every Wasabi configuration.
const WasabiWarning = "Wasabi bills every object for at least 90 days: an archived object deleted or overwritten earlier is still charged for the full 90 days"

const ftpRefusal = "FTP does not meet compliance: credentials and recordings would cross the network unencrypted; use SFTP (storage_type \"sftp\") instead"

var (
	bucketRE      = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	regionRE      = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)
	hostRE        = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$`)
	userRE        = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
	prefixRE      = regexp.MustCompile(`^[A-Za-z0-9._/-]{0,200}$`)
	fingerprintRE = regexp.MustCompile(`^SHA256:[A-Za-z0-9+/]{43}$`)
)

const maxNameLen = 100

// secretKind names which secret a configuration holds.
func secretKind(s *routerv1.ArchiveSecret) (kind, value string) {
	switch v := s.GetValue().(type) {
	case *routerv1.ArchiveSecret_SecretAccessKey:
		return "secret_access_key", v.SecretAccessKey
	case *routerv1.ArchiveSecret_Password:
		return "password", v.Password
	case *routerv1.ArchiveSecret_PrivateKey:
		return "private_key", v.PrivateKey
	}
	return "", ""
}

func isS3Family(t string) bool { return t == typeS3 || t == typeGlacierIR || t == typeWasabi }

// validate checks a configuration as given by a caller, naming each bad
// field. secret is the new secret (nil: none given); hadSecret says a
// stored one is kept.
func validate(c *routerv1.ArchiveConfig, secret *routerv1.ArchiveSecret, hadSecret bool) error {
	v := &apierr.ValidationError{}
	if c == nil {
		return apierr.Invalid("config", "is required")
	}
	switch n := strings.TrimSpace(c.GetName()); {
	case n == "":
		v.Add("config.name", "is required")
	case len(n) > maxNameLen:
		v.Add("config.name", "must be at most %d characters", maxNameLen)
	}
	switch c.GetLevel() {
	case levelSystem:
		if c.GetMatch() != "" {
			v.Add("config.match", "must be empty at system level: a system configuration takes every call no reseller or domain configuration takes")
		}
	case levelReseller:
		if err := tenant.CheckName(c.GetMatch()); err != nil {
			v.Add("config.match", "must be the reseller id: %v", err)
		}
	case levelDomain:
		if err := tenant.CheckDomain(c.GetMatch()); err != nil {
			v.Add("config.match", "must be the domain: %v", err)
		}
	case "":
		v.Add("config.level", "is required: system, reseller or domain")
	default:
		v.Add("config.level", "must be system, reseller or domain, not %q", c.GetLevel())
	}
	if !c.GetSendRecordings() && !c.GetSendCdrs() {
		v.Add("config.send_recordings", "choose what to send: recordings, CDRs or both")
	}
	if t := c.GetPathTemplate(); t != "" {
		if _, err := pathtmpl.Parse(t); err != nil {
			v.Add("config.path_template", "%v", err)
		} else if c.GetLevel() != levelDomain && !strings.Contains(t, "{domain}") {
			// Recording ids are unique within a domain only.
			v.Add("config.path_template", "must contain {domain} at %s level: two domains may both have a recording of the same id", c.GetLevel())
		}
	}
	if p := c.GetPrefix(); p != "" {
		switch {
		case !prefixRE.MatchString(p):
			v.Add("config.prefix", "may hold only letters, digits and . _ - / (at most 200)")
		case strings.HasPrefix(p, "/"):
			v.Add("config.prefix", "must be relative, not start with /")
		default:
			for _, seg := range strings.Split(strings.TrimSuffix(p, "/"), "/") {
				if seg == "" || seg == "." || seg == ".." {
					v.Add("config.prefix", "must not hold empty, . or .. segments")
					break
				}
			}
		}
	}
	if r := c.GetAgeRecipient(); r != "" {
		if _, err := age.ParseX25519Recipient(r); err != nil {
			v.Add("config.age_recipient", "must be an age X25519 public key (age1...): %v", err)
		}
	}
	kind, value := secretKind(secret)
	if secret != nil && value == "" {
		v.Add("secret", "is empty: give secret_access_key, password or private_key")
	}
	st := strings.ToLower(strings.TrimSpace(c.GetStorageType()))
	switch {
	case st == "ftp" || st == "ftps" || strings.HasPrefix(strings.ToLower(c.GetEndpoint()), "ftp://"):
		v.Add("config.storage_type", ftpRefusal)
	case isS3Family(c.GetStorageType()):
		if !bucketRE.MatchString(c.GetBucket()) {
			v.Add("config.bucket", "must be an S3 bucket name: 3-63 of lower-case letters, digits, . and -")
		}
		if r := c.GetRegion(); r != "" && !regionRE.MatchString(r) {
			v.Add("config.region", "must be a region name such as us-east-1")
		}
		if e := c.GetEndpoint(); e != "" {
			u, err := url.Parse(e)
			switch {
			case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/"):
				v.Add("config.endpoint", "must be an https URL of the service, such as https://s3.eu-central-1.wasabisys.com (no credentials, no path)")
			case u.Scheme == "http" && !loopback(u.Hostname()):
				// As FTP: recordings and signed requests would cross the
				// network unencrypted.
				v.Add("config.endpoint", "must use https: plain http sends recordings unencrypted (only a loopback endpoint may use http)")
			}
		} else if c.GetStorageType() == typeWasabi {
			v.Add("config.endpoint", "is required for Wasabi: its regional endpoint, such as https://s3.us-east-2.wasabisys.com")
		}
		if c.GetAccessKeyId() == "" || len(c.GetAccessKeyId()) > 128 {
			v.Add("config.access_key_id", "is required (at most 128 characters)")
		}
		if secret == nil && !hadSecret {
			v.Add("secret.secret_access_key", "is required for %s", c.GetStorageType())
		} else if secret != nil && kind != "secret_access_key" {
			v.Add("secret", "an S3 configuration takes a secret_access_key, not a %s", kind)
		}
		switch c.GetWormMode() {
		case "", "governance", "compliance":
		default:
			v.Add("config.worm_mode", "must be empty, governance or compliance")
		}
		for f, val := range map[string]string{"config.host": c.GetHost(), "config.username": c.GetUsername(), "config.host_key_fingerprint": c.GetHostKeyFingerprint()} {
			if val != "" {
				v.Add(f, "is for SFTP configurations only")
			}
		}
	case c.GetStorageType() == typeSFTP:
		h := c.GetHost()
		if net.ParseIP(h) == nil && !hostRE.MatchString(h) {
			v.Add("config.host", "must be a host name or IP address")
		}
		if p := c.GetPort(); p < 0 || p > 65535 {
			v.Add("config.port", "must be from 1 to 65535 (0: 22)")
		}
		if !userRE.MatchString(c.GetUsername()) {
			v.Add("config.username", "is required: 1-64 of letters, digits and . _ -")
		}
		if !fingerprintRE.MatchString(c.GetHostKeyFingerprint()) {
			v.Add("config.host_key_fingerprint", "is required: the server's host key fingerprint as ssh-keygen -l prints it (SHA256: and 43 base64 characters); a server offering another key is refused")
		}
		switch {
		case secret == nil && !hadSecret:
			v.Add("secret", "is required for SFTP: a password or a private_key")
		case kind == "secret_access_key":
			v.Add("secret", "an SFTP configuration takes a password or a private_key, not a secret_access_key")
		case kind == "private_key":
			if _, err := ssh.ParsePrivateKey([]byte(value)); err != nil {
				v.Add("secret.private_key", "is not a private key ssh can use (PEM or OpenSSH format, without a passphrase)")
			}
		}
		if c.GetWormMode() != "" {
			v.Add("config.worm_mode", "WORM (S3 Object Lock) is for S3 configurations only")
		}
		for f, val := range map[string]string{"config.bucket": c.GetBucket(), "config.endpoint": c.GetEndpoint(), "config.access_key_id": c.GetAccessKeyId()} {
			if val != "" {
				v.Add(f, "is for S3 configurations only")
			}
		}
	case c.GetStorageType() == "":
		v.Add("config.storage_type", "is required: s3, s3_glacier_ir, wasabi or sftp")
	default:
		v.Add("config.storage_type", "must be s3, s3_glacier_ir, wasabi or sftp, not %q", c.GetStorageType())
	}
	return v.Err()
}

// loopback reports whether host names this machine.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// recordOf turns a validated API configuration into its record.
func recordOf(c *routerv1.ArchiveConfig) *eventv1.ArchiveConfigRecord {
	r := &eventv1.ArchiveConfigRecord{
		Id: c.GetId(), Name: strings.TrimSpace(c.GetName()), Level: c.GetLevel(), Match: c.GetMatch(), Enabled: c.GetEnabled(),
		StorageType: c.GetStorageType(), SendRecordings: c.GetSendRecordings(), SendCdrs: c.GetSendCdrs(),
		PathTemplate: c.GetPathTemplate(), Bucket: c.GetBucket(), Region: c.GetRegion(), Endpoint: strings.TrimSuffix(c.GetEndpoint(), "/"),
		AccessKeyId: c.GetAccessKeyId(), WormMode: c.GetWormMode(), Host: c.GetHost(), Port: c.GetPort(), Username: c.GetUsername(),
		HostKeyFingerprint: c.GetHostKeyFingerprint(), Prefix: strings.TrimSuffix(c.GetPrefix(), "/"), AgeRecipient: c.GetAgeRecipient(),
	}
	if r.PathTemplate == "" {
		r.PathTemplate = pathtmpl.Default
	}
	if r.StorageType == typeSFTP && r.Port == 0 {
		r.Port = 22
	}
	if isS3Family(r.StorageType) && r.Region == "" {
		r.Region = "us-east-1"
	}
	return r
}

// apiOf is the API form of a record: never the secret.
func (s *Service) apiOf(ctx context.Context, r *eventv1.ArchiveConfigRecord) *routerv1.ArchiveConfig {
	c := &routerv1.ArchiveConfig{
		Id: r.GetId(), Name: r.GetName(), Level: r.GetLevel(), Match: r.GetMatch(), Enabled: r.GetEnabled(),
		StorageType: r.GetStorageType(), SendRecordings: r.GetSendRecordings(), SendCdrs: r.GetSendCdrs(),
		PathTemplate: r.GetPathTemplate(), Bucket: r.GetBucket(), Region: r.GetRegion(), Endpoint: r.GetEndpoint(), Prefix: r.GetPrefix(),
		AccessKeyId: r.GetAccessKeyId(), WormMode: r.GetWormMode(), Host: r.GetHost(), Port: r.GetPort(), Username: r.GetUsername(),
		HostKeyFingerprint: r.GetHostKeyFingerprint(), AgeRecipient: r.GetAgeRecipient(), HasSecret: len(r.GetSecret().GetBox()) > 0,
		UpdatedBy: r.GetUpdatedBy(), CreatedAt: r.GetCreatedAt(), UpdatedAt: r.GetUpdatedAt(), OwnerReseller: r.GetOwnerReseller(),
	}
	c.Status = s.stateOf(ctx, r)
	return c
}

func (s *Service) stateOf(ctx context.Context, r *eventv1.ArchiveConfigRecord) *routerv1.ConfigState {
	st, err := s.st.status(ctx, r.GetId())
	out := &routerv1.ConfigState{Waiting: st.Waiting, Archived: st.Archived, LastError: st.Err}
	if err != nil {
		out.State, out.LastError = "error", "status unavailable: "+err.Error()
		return out
	}
	if !st.OKAt.IsZero() {
		out.LastSuccessAt = timestamppb.New(st.OKAt)
	}
	if !st.ErrAt.IsZero() {
		out.LastErrorAt = timestamppb.New(st.ErrAt)
	}
	switch {
	case !r.GetEnabled():
		out.State = "disabled"
	case !st.ErrAt.IsZero() && st.ErrAt.After(st.OKAt):
		out.State = "error"
	case !st.OKAt.IsZero():
		out.State = "active"
	default:
		out.State = "idle"
	}
	return out
}

func warningsFor(r *eventv1.ArchiveConfigRecord) []string {
	var w []string
	if r.GetStorageType() == typeWasabi {
		w = append(w, WasabiWarning)
	}
	if r.GetStorageType() == typeGlacierIR {
		w = append(w, "S3 Glacier Instant Retrieval is cheaper to keep and dearer to read: playback from it is billed per GB retrieved")
	}
	return w
}

// authorizeScope checks p may manage configurations of level/match and
// returns the reseller they belong to.
func (s *Service) authorizeScope(ctx context.Context, p auth.Principal, level, match string) (string, error) {
	switch level {
	case levelSystem:
		if p.Level != auth.LevelSystem {
			return "", fmt.Errorf("%w: only a system token manages system-level configurations", apierr.ErrForbidden)
		}
		return "", nil
	case levelReseller:
		if p.Level == auth.LevelSystem || (p.Level == auth.LevelReseller && p.Reseller == match) {
			return match, nil
		}
		return "", fmt.Errorf("%w: token %s does not cover reseller %s", apierr.ErrForbidden, p.Name, match)
	case levelDomain:
		if p.Level == auth.LevelUser {
			return "", fmt.Errorf("%w: a user token does not manage storage configurations", apierr.ErrForbidden)
		}
		return s.domains.AuthorizeDomain(ctx, p, match)
	}
	return "", apierr.Invalid("config.level", "must be system, reseller or domain")
}

// visible reports whether p sees the configuration at all; one it does
// not see answers not found, so no other tenant's configuration is
// revealed.
func visible(p auth.Principal, r *eventv1.ArchiveConfigRecord) bool {
	switch p.Level {
	case auth.LevelSystem:
		return true
	case auth.LevelReseller:
		return r.GetLevel() != levelSystem && r.GetOwnerReseller() != "" && r.GetOwnerReseller() == p.Reseller
	case auth.LevelDomain:
		return r.GetLevel() == levelDomain && r.GetMatch() == p.Domain && r.GetOwnerReseller() == p.Reseller
	}
	return false
}

func newConfigID() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "ac-" + hex.EncodeToString(b), nil
}

// withLock serialises configuration changes, so the check that no two
// enabled configurations share a level and match cannot race.
func (s *Service) withLock(ctx context.Context, fn func() error) error {
	tokenB := make([]byte, 8)
	_, _ = rand.Read(tokenB)
	token := base64.RawURLEncoding.EncodeToString(tokenB)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, err := s.d.Redis.SetNX(ctx, s.st.k.lock(), token, 15*time.Second).Result()
		if err != nil {
			return fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: another configuration change is in progress", apierr.ErrUnavailable)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	defer func() {
		// Release only our own lock.
		_ = s.d.Redis.Eval(context.WithoutCancel(ctx), `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`, []string{s.st.k.lock()}, token).Err()
	}()
	return fn()
}

// clash names an enabled configuration of the same level and match.
func (s *Service) clash(ctx context.Context, r *eventv1.ArchiveConfigRecord) error {
	if !r.GetEnabled() {
		return nil
	}
	all, err := s.st.configsOf(ctx, scopeKey(r.GetLevel(), r.GetMatch()))
	if err != nil {
		return fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	for _, o := range all {
		if o.GetId() != r.GetId() && o.GetEnabled() && o.GetLevel() == r.GetLevel() && o.GetMatch() == r.GetMatch() {
			where := r.GetLevel()
			if r.GetMatch() != "" {
				where += " " + r.GetMatch()
			}
			return fmt.Errorf("%w: configuration %s (%q) is already enabled for %s; only one configuration per level and match may be enabled: disable it first",
				apierr.ErrConflict, o.GetId(), o.GetName(), where)
		}
	}
	return nil
}

// CreateConfig validates and records a new configuration.
func (s *Service) CreateConfig(ctx context.Context, p auth.Principal, in *routerv1.ArchiveConfig, secret *routerv1.ArchiveSecret) (*routerv1.ArchiveConfig, []string, error) {
	if err := validate(in, secret, false); err != nil {
		return nil, nil, err
	}
	owner, err := s.authorizeScope(ctx, p, in.GetLevel(), in.GetMatch())
	if err != nil {
		return nil, nil, err
	}
	id, err := newConfigID()
	if err != nil {
		return nil, nil, err
	}
	in = proto.Clone(in).(*routerv1.ArchiveConfig)
	in.Id = id
	r := recordOf(in)
	r.OwnerReseller = owner
	now := time.Now().UTC().Truncate(time.Millisecond)
	r.CreatedAt, r.UpdatedAt, r.UpdatedBy = timestamppb.New(now), timestamppb.New(now), p.Name
	if err := s.sealSecret(r, secret); err != nil {
		return nil, nil, err
	}
	if r.GetWormMode() != "" {
		if err := s.checkWORM(ctx, r); err != nil {
			return nil, nil, err
		}
	}
	err = s.withLock(ctx, func() error {
		if err := s.clash(ctx, r); err != nil {
			return err
		}
		return s.recordConfig(ctx, nil, r, p.Name)
	})
	if err != nil {
		return nil, nil, err
	}
	return s.apiOf(ctx, r), warningsFor(r), nil
}

// UpdateConfig replaces a configuration the caller sees; an absent secret
// keeps the stored one (unless the storage type changes).
func (s *Service) UpdateConfig(ctx context.Context, p auth.Principal, in *routerv1.ArchiveConfig, secret *routerv1.ArchiveSecret) (*routerv1.ArchiveConfig, []string, error) {
	if in.GetId() == "" {
		return nil, nil, apierr.Invalid("config.id", "is required")
	}
	var out *eventv1.ArchiveConfigRecord
	err := s.withLock(ctx, func() error {
		before, err := s.visibleConfig(ctx, p, in.GetId())
		if err != nil {
			return err
		}
		sameFamily := before.GetStorageType() == in.GetStorageType() || (isS3Family(before.GetStorageType()) && isS3Family(in.GetStorageType()))
		keep := secret == nil && sameFamily && len(before.GetSecret().GetBox()) > 0
		if err := validate(in, secret, keep); err != nil {
			return err
		}
		owner, err := s.authorizeScope(ctx, p, in.GetLevel(), in.GetMatch())
		if err != nil {
			return err
		}
		r := recordOf(in)
		r.OwnerReseller, r.CreatedAt = owner, before.GetCreatedAt()
		r.UpdatedAt, r.UpdatedBy = timestamppb.New(time.Now().UTC().Truncate(time.Millisecond)), p.Name
		if keep {
			if r.Secret, err = s.reseal(before); err != nil {
				return err
			}
		} else if err := s.sealSecret(r, secret); err != nil {
			return err
		}
		if r.GetWormMode() != "" {
			if err := s.checkWORM(ctx, r); err != nil {
				return err
			}
		}
		if err := s.clash(ctx, r); err != nil {
			return err
		}
		if err := s.recordConfig(ctx, before, r, p.Name); err != nil {
			return err
		}
		out = r
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return s.apiOf(ctx, out), warningsFor(out), nil
}

// DeleteConfig removes a configuration. Its waiting work goes to whatever
// is now the best match; what it archived stays where it is (the router
// never deletes a remote object).
func (s *Service) DeleteConfig(ctx context.Context, p auth.Principal, id string) error {
	if id == "" {
		return apierr.Invalid("id", "is required")
	}
	return s.withLock(ctx, func() error {
		before, err := s.visibleConfig(ctx, p, id)
		if err != nil {
			return err
		}
		if _, err := s.authorizeScope(ctx, p, before.GetLevel(), before.GetMatch()); err != nil {
			return err
		}
		return s.recordConfig(ctx, before, nil, p.Name)
	})
}

// GetConfig returns one configuration the caller sees.
func (s *Service) GetConfig(ctx context.Context, p auth.Principal, id string) (*routerv1.ArchiveConfig, error) {
	r, err := s.visibleConfig(ctx, p, id)
	if err != nil {
		return nil, err
	}
	return s.apiOf(ctx, r), nil
}

// ListConfigs lists the configurations the caller sees, optionally of one
// level and match.
func (s *Service) ListConfigs(ctx context.Context, p auth.Principal, level, match string) ([]*routerv1.ArchiveConfig, error) {
	switch level {
	case "", levelSystem, levelReseller, levelDomain:
	default:
		return nil, apierr.Invalid("level", "must be system, reseller or domain")
	}
	if p.Level == auth.LevelUser {
		return nil, fmt.Errorf("%w: a user token does not see storage configurations", apierr.ErrForbidden)
	}
	all, err := s.st.allConfigs(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	out := []*routerv1.ArchiveConfig{}
	for _, r := range sortConfigs(all) {
		if !visible(p, r) || (level != "" && r.GetLevel() != level) || (match != "" && r.GetMatch() != match) {
			continue
		}
		out = append(out, s.apiOf(ctx, r))
	}
	return out, nil
}

// Status returns one configuration's status tag.
func (s *Service) Status(ctx context.Context, p auth.Principal, id string) (*routerv1.ConfigState, error) {
	r, err := s.visibleConfig(ctx, p, id)
	if err != nil {
		return nil, err
	}
	return s.stateOf(ctx, r), nil
}

func (s *Service) visibleConfig(ctx context.Context, p auth.Principal, id string) (*eventv1.ArchiveConfigRecord, error) {
	if id == "" {
		return nil, apierr.Invalid("id", "is required")
	}
	r, err := s.st.config(ctx, id)
	if errors.Is(err, errNoConfig) || (err == nil && !visible(p, r)) {
		return nil, fmt.Errorf("%w: archive configuration %s", apierr.ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	return r, nil
}

// reseal returns the stored secret of r, sealed again under the current
// key when an older one sealed it: re-saving a configuration moves it to
// the new key, so the old one can be retired.
func (s *Service) reseal(r *eventv1.ArchiveConfigRecord) (*eventv1.SealedSecret, error) {
	old := r.GetSecret()
	if old.GetKeyId() == s.keys.CurrentID() {
		return old, nil
	}
	plain, err := s.keys.Open(seal.Sealed{KeyID: old.GetKeyId(), Box: old.GetBox()}, r.GetId())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	sealed, err := s.keys.Seal(plain, r.GetId())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	return &eventv1.SealedSecret{Kind: old.GetKind(), KeyId: sealed.KeyID, Box: sealed.Box}, nil
}

func (s *Service) sealSecret(r *eventv1.ArchiveConfigRecord, secret *routerv1.ArchiveSecret) error {
	kind, value := secretKind(secret)
	if value == "" {
		return nil
	}
	sealed, err := s.keys.Seal([]byte(value), r.GetId())
	if errors.Is(err, seal.ErrNoKey) {
		return fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	if err != nil {
		return err
	}
	r.Secret = &eventv1.SealedSecret{Kind: kind, KeyId: sealed.KeyID, Box: sealed.Box}
	return nil
}

// recordConfig publishes the change to the config stream, then applies it.
// before is nil for a creation, after nil for a deletion.
func (s *Service) recordConfig(ctx context.Context, before, after *eventv1.ArchiveConfigRecord, actor string) error {
	change := &eventv1.ConfigChanged{Entity: entityArchiveConfig, Actor: actor}
	var ref *eventv1.ArchiveConfigRecord
	typ := "archive_config.updated"
	switch {
	case before == nil:
		typ, ref = "archive_config.created", after
	case after == nil:
		typ, ref = "archive_config.deleted", before
	default:
		ref = after
	}
	change.EntityId = ref.GetId()
	if before != nil {
		change.Before = &eventv1.ConfigPayload{Value: &eventv1.ConfigPayload_ArchiveConfig{ArchiveConfig: before}}
	}
	if after != nil {
		change.After = &eventv1.ConfigPayload{Value: &eventv1.ConfigPayload_ArchiveConfig{ArchiveConfig: after}}
	}
	idb := make([]byte, 6)
	_, _ = rand.Read(idb)
	msgID := typ + "-" + ref.GetId() + "-" + hex.EncodeToString(idb)
	env := &eventv1.Envelope{
		Id: msgID, AcceptedAt: timestamppb.Now(), Source: "router", Type: typ, SchemaVersion: 2,
		Tenant: &eventv1.Tenant{Reseller: ref.GetOwnerReseller()},
		Body:   &eventv1.Envelope_Config{Config: change},
	}
	if ref.GetLevel() == levelDomain {
		env.Tenant.Domain = ref.GetMatch()
	}
	ack, err := bus.PublishEnvelope(ctx, s.d.JS, s.d.Names.ArchiveConfigSubject(), msgID, env)
	if err != nil {
		return fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	if err := s.applyConfig(ctx, env, ack.Sequence); err != nil {
		return fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	return nil
}

// applyConfig applies one archive configuration event, at stream sequence
// seq; replaying the config stream through it restores every
// configuration, secrets sealed as they were. An event older than the one
// a configuration last took changes nothing, so a replay running beside a
// live change never undoes it.
func (s *Service) applyConfig(ctx context.Context, env *eventv1.Envelope, seq uint64) error {
	c := env.GetConfig()
	if c.GetEntity() != entityArchiveConfig {
		return nil
	}
	now := time.Now()
	if a := c.GetAfter().GetArchiveConfig(); a != nil {
		if applied, err := s.st.putConfig(ctx, a, seq); err != nil || !applied {
			return err
		}
		s.targets.forget(a.GetId())
		// Work waiting for it is tried again at once: it may work now, or
		// belong elsewhere after the change.
		return s.st.wakeParked(ctx, a.GetId(), now)
	}
	if b := c.GetBefore().GetArchiveConfig(); b != nil {
		if applied, err := s.st.removeConfig(ctx, b.GetId(), seq); err != nil || !applied {
			return err
		}
		s.targets.forget(b.GetId())
		return s.st.wakeParked(ctx, b.GetId(), now)
	}
	return bus.Poison(fmt.Errorf("archive config event %s carries no configuration", env.GetId()))
}

// sortConfigs orders configurations for listing: system, reseller, domain,
// then by match and name.
func sortConfigs(cs []*eventv1.ArchiveConfigRecord) []*eventv1.ArchiveConfigRecord {
	rank := map[string]int{levelSystem: 0, levelReseller: 1, levelDomain: 2}
	sort.Slice(cs, func(i, j int) bool {
		a, b := cs[i], cs[j]
		if rank[a.GetLevel()] != rank[b.GetLevel()] {
			return rank[a.GetLevel()] < rank[b.GetLevel()]
		}
		if a.GetMatch() != b.GetMatch() {
			return a.GetMatch() < b.GetMatch()
		}
		if a.GetName() != b.GetName() {
			return a.GetName() < b.GetName()
		}
		return a.GetId() < b.GetId()
	})
	return cs
}
