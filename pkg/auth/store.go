package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/tenant"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
)

// MinBootstrapLen is the shortest bootstrap token accepted.
const MinBootstrapLen = 16

// DomainOwners answers who a domain belongs to: its reseller of record,
// and whether it is provisioned at all. Errors mean "could not tell" and
// refuse whatever depended on the answer.
type DomainOwners interface {
	DomainOwner(ctx context.Context, domain string) (reseller string, ok bool, err error)
}

// Store authenticates tokens and issues, lists and revokes them. Issued
// and revoked tokens are events on the config stream (so Redis can be
// rebuilt) and hashes in Redis.
type Store struct {
	rdb       redis.UniversalClient
	ns        string
	js        jetstream.JetStream
	names     bus.Names
	domains   DomainOwners
	now       func() time.Time
	bootstrap [32]byte
	hasBoot   bool
}

// NewStore returns a store. bootstrap, when set, is accepted as a
// system-scope token named "bootstrap". domains judges the domain of every
// domain- and user-scope token issued; without it no such token is issued.
func NewStore(rdb redis.UniversalClient, js jetstream.JetStream, names bus.Names, bootstrap string, domains DomainOwners) (*Store, error) {
	s := &Store{rdb: rdb, ns: names.Namespace(), js: js, names: names, domains: domains, now: time.Now}
	if bootstrap != "" {
		if len(bootstrap) < MinBootstrapLen {
			return nil, fmt.Errorf("bootstrap token: must be at least %d characters", MinBootstrapLen)
		}
		s.bootstrap, s.hasBoot = sha256.Sum256([]byte(bootstrap)), true
	}
	return s, nil
}

func (s *Store) key(hash string) string { return s.ns + ":token:" + hash }

// idsKey maps every token's public id to its hash: the index listing and
// revocation start from.
func (s *Store) idsKey() string { return s.ns + ":tokenids" }

// TokenID is the public id of the token whose SHA-256 is hash. It is a
// one-way function of the hash, so it can be shown and logged without
// helping anyone to guess the token, and a rebuild derives the same id.
func TokenID(hash string) string {
	sum := sha256.Sum256([]byte("callvault token id\x00" + hash))
	return "tok_" + hex.EncodeToString(sum[:10])
}

// Authenticate resolves a bearer token to its principal. Unknown, revoked
// and expired tokens are all ErrUnauthenticated; a Redis failure is
// ErrUnavailable, never a pass.
func (s *Store) Authenticate(ctx context.Context, token string) (Principal, error) {
	if token == "" {
		return Principal{}, apierr.ErrUnauthenticated
	}
	sum := sha256.Sum256([]byte(token))
	// One round trip: the token and whether Redis holds current state. A
	// Redis emptied or being rebuilt answers nothing (503), so a valid
	// token is never refused and a revoked one never accepted from it.
	pipe := s.rdb.Pipeline()
	current := pipe.HGet(ctx, bus.AppliedKey(s.ns), bus.AppliedLayoutField)
	get := pipe.HGetAll(ctx, s.key(hex.EncodeToString(sum[:])))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Principal{}, fmt.Errorf("authenticate: %w: %w", apierr.ErrUnavailable, err)
	}
	switch current.Val() {
	case bus.CatalogLayout:
	case "":
		return Principal{}, fmt.Errorf("authenticate: %w: Redis holds no current state; it is being rebuilt from the streams", apierr.ErrUnavailable)
	default:
		return Principal{}, fmt.Errorf("authenticate: %w: Redis holds the catalog in another layout (%s); it must be emptied and rebuilt", apierr.ErrUnavailable, current.Val())
	}
	if s.hasBoot && subtle.ConstantTimeCompare(sum[:], s.bootstrap[:]) == 1 {
		return Principal{Name: BootstrapName, Level: LevelSystem}, nil
	}
	m := get.Val()
	if len(m) == 0 || m["name"] == "" {
		return Principal{}, apierr.ErrUnauthenticated
	}
	info := parseInfo(hex.EncodeToString(sum[:]), m)
	if info.Revoked || (!info.ExpiresAt.IsZero() && !s.now().Before(info.ExpiresAt)) {
		return Principal{}, apierr.ErrUnauthenticated
	}
	p := info.Scope
	p.ExpiresAt = info.ExpiresAt
	return p, nil
}

// BootstrapName is the name of the configured bootstrap token; no stored
// token may take it, so the audit trail never confuses the two.
const BootstrapName = "bootstrap"

// ValidateScope checks a requested token scope field by field.
func ValidateScope(p Principal) error {
	v := &apierr.ValidationError{}
	// Names are visible ASCII, so none can pass for another in a log or a
	// listing (no spaces, controls or look-alike letters).
	if err := tenant.CheckName(p.Name); err != nil {
		v.Add("name", "%v", err)
	} else if strings.EqualFold(p.Name, BootstrapName) {
		v.Add("name", "is reserved for the bootstrap token")
	}
	need := map[Level][3]bool{ // reseller, domain, user required
		LevelSystem:   {false, false, false},
		LevelReseller: {true, false, false},
		LevelDomain:   {true, true, false},
		LevelUser:     {true, true, true},
	}
	req, ok := need[p.Level]
	if !ok {
		v.Add("level", "must be one of system, reseller, domain, user")
		return v.Err()
	}
	check := func(field, val string, required bool, f func(string) error) {
		switch {
		case required:
			if err := f(val); err != nil {
				v.Add(field, "%v", err)
			}
		case val != "":
			v.Add(field, "must be empty for a %s token", p.Level)
		}
	}
	check("reseller", p.Reseller, req[0], tenant.CheckName)
	check("domain", p.Domain, req[1], tenant.CheckDomain)
	check("user", p.User, req[2], tenant.CheckName)
	return v.Err()
}

// checkDomain refuses a domain- or user-scope token unless its domain is
// provisioned under the token's reseller. Only a system issuer is told why
// (it sees every domain anyway); anyone else gets the same refusal for a
// domain that does not exist and one of another reseller.
func (s *Store) checkDomain(ctx context.Context, issuer, scope Principal) error {
	if scope.Level != LevelDomain && scope.Level != LevelUser {
		return nil
	}
	if s.domains == nil {
		return fmt.Errorf("issue token: %w: no domain registry", apierr.ErrUnavailable)
	}
	owner, ok, err := s.domains.DomainOwner(ctx, scope.Domain)
	if err != nil {
		return fmt.Errorf("issue token: %w: %w", apierr.ErrUnavailable, err)
	}
	if ok && owner == scope.Reseller {
		return nil
	}
	if issuer.Level == LevelSystem {
		if !ok {
			return apierr.Invalid("domain", "%s is not provisioned; provision it first", scope.Domain)
		}
		return apierr.Invalid("reseller", "domain %s is provisioned under reseller %s", scope.Domain, owner)
	}
	return fmt.Errorf("issue token: %w: %s may not issue a token for %s", apierr.ErrForbidden, issuer, scope)
}

// Issue creates a token for scope on behalf of issuer and returns it with
// its description. The token is shown only here. A zero expires means the
// token does not expire.
func (s *Store) Issue(ctx context.Context, issuer Principal, scope Principal, expires time.Time) (string, TokenInfo, error) {
	if err := ValidateScope(scope); err != nil {
		return "", TokenInfo{}, err
	}
	now := s.now().UTC().Truncate(time.Millisecond)
	if !expires.IsZero() && !expires.After(now) {
		return "", TokenInfo{}, apierr.Invalid("expires_at", "must be in the future")
	}
	// A token never outlives the token that issued it: an expiring grant
	// cannot mint a lasting one.
	if !issuer.ExpiresAt.IsZero() {
		switch {
		case expires.IsZero():
			expires = issuer.ExpiresAt
		case expires.After(issuer.ExpiresAt):
			return "", TokenInfo{}, apierr.Invalid("expires_at", "must not be later than the issuing token's expiry, %s", issuer.ExpiresAt.UTC().Format(time.RFC3339))
		}
	}
	if !issuer.CoversScope(scope) {
		return "", TokenInfo{}, fmt.Errorf("issue token: %w: %s may not issue a token for %s", apierr.ErrForbidden, issuer, scope)
	}
	if err := s.checkDomain(ctx, issuer, scope); err != nil {
		return "", TokenInfo{}, err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", TokenInfo{}, fmt.Errorf("issue token: %w", err)
	}
	token := "cvt_" + base64.RawURLEncoding.EncodeToString(raw)
	sum := sha256.Sum256([]byte(token))
	hash := hex.EncodeToString(sum[:])
	issued := &eventv1.TokenIssued{
		TokenSha256: hash, Name: scope.Name, Level: string(scope.Level),
		Reseller: scope.Reseller, Domain: scope.Domain, User: scope.User, IssuedBy: issuer.Name,
		IssuedAt: timestamppb.New(now),
	}
	if !expires.IsZero() {
		issued.ExpiresAt = timestamppb.New(expires.UTC().Truncate(time.Millisecond))
	}
	env := &eventv1.Envelope{
		Id:         "token-" + hash[:32],
		AcceptedAt: timestamppb.Now(),
		Source:     "auth",
		Body:       &eventv1.Envelope_TokenIssued{TokenIssued: issued},
	}
	if _, err := bus.PublishEnvelope(ctx, s.js, s.names.TokenSubject(), env.GetId(), env); err != nil {
		return "", TokenInfo{}, fmt.Errorf("issue token: %w: %w", apierr.ErrUnavailable, err)
	}
	if err := s.Apply(ctx, env); err != nil {
		return "", TokenInfo{}, fmt.Errorf("issue token: %w: %w", apierr.ErrUnavailable, err)
	}
	info := TokenInfo{ID: TokenID(hash), Scope: scope, IssuedBy: issuer.Name, IssuedAt: now}
	if issued.ExpiresAt != nil {
		info.ExpiresAt = issued.ExpiresAt.AsTime()
	}
	return token, info, nil
}

// Apply writes a token event to Redis; replaying the config stream through
// Apply rebuilds every token, revocations included.
func (s *Store) Apply(ctx context.Context, env *eventv1.Envelope) error {
	switch b := env.GetBody().(type) {
	case *eventv1.Envelope_TokenIssued:
		t := b.TokenIssued
		if len(t.GetTokenSha256()) != 64 {
			return bus.Poison(errors.New("token event: bad hash"))
		}
		fields := []any{"name", t.GetName(), "level", t.GetLevel(), "reseller", t.GetReseller(), "domain", t.GetDomain(),
			"user", t.GetUser(), "issued_by", t.GetIssuedBy(), "issued_at", millis(t.GetIssuedAt()), "expires_at", millis(t.GetExpiresAt())}
		pipe := s.rdb.TxPipeline()
		pipe.HSet(ctx, s.key(t.GetTokenSha256()), fields...)
		pipe.HSet(ctx, s.idsKey(), TokenID(t.GetTokenSha256()), t.GetTokenSha256())
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("apply token: %w", err)
		}
	case *eventv1.Envelope_TokenRevoked:
		t := b.TokenRevoked
		if len(t.GetTokenSha256()) != 64 {
			return bus.Poison(errors.New("token revoke event: bad hash"))
		}
		err := s.rdb.HSet(ctx, s.key(t.GetTokenSha256()), "revoked", "1", "revoked_by", t.GetRevokedBy(), "revoked_at", millis(t.GetRevokedAt())).Err()
		if err != nil {
			return fmt.Errorf("apply token revoke: %w", err)
		}
	}
	return nil
}

func millis(t *timestamppb.Timestamp) string {
	if t == nil {
		return ""
	}
	return strconv.FormatInt(t.AsTime().UnixMilli(), 10)
}

// BearerToken extracts the token of an "Authorization: Bearer x" value.
func BearerToken(header string) string {
	const prefix = "bearer "
	if len(header) > len(prefix) && strings.EqualFold(header[:len(prefix)], prefix) {
		return strings.TrimSpace(header[len(prefix):])
	}
	return ""
}
