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
	"strings"

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

// Store authenticates tokens and issues new ones. Issued tokens are events
// on the config stream (so Redis can be rebuilt) and hashes in Redis.
type Store struct {
	rdb       redis.UniversalClient
	ns        string
	js        jetstream.JetStream
	names     bus.Names
	bootstrap [32]byte
	hasBoot   bool
}

// NewStore returns a store. bootstrap, when set, is accepted as a
// system-scope token named "bootstrap".
func NewStore(rdb redis.UniversalClient, js jetstream.JetStream, names bus.Names, bootstrap string) (*Store, error) {
	s := &Store{rdb: rdb, ns: names.Namespace(), js: js, names: names}
	if bootstrap != "" {
		if len(bootstrap) < MinBootstrapLen {
			return nil, fmt.Errorf("bootstrap token: must be at least %d characters", MinBootstrapLen)
		}
		s.bootstrap, s.hasBoot = sha256.Sum256([]byte(bootstrap)), true
	}
	return s, nil
}

func (s *Store) key(hash string) string { return s.ns + ":token:" + hash }

// Authenticate resolves a bearer token to its principal.
func (s *Store) Authenticate(ctx context.Context, token string) (Principal, error) {
	if token == "" {
		return Principal{}, apierr.ErrUnauthenticated
	}
	sum := sha256.Sum256([]byte(token))
	if s.hasBoot && subtle.ConstantTimeCompare(sum[:], s.bootstrap[:]) == 1 {
		return Principal{Name: "bootstrap", Level: LevelSystem}, nil
	}
	m, err := s.rdb.HGetAll(ctx, s.key(hex.EncodeToString(sum[:]))).Result()
	if err != nil {
		return Principal{}, fmt.Errorf("authenticate: %w: %w", apierr.ErrUnavailable, err)
	}
	if len(m) == 0 || m["revoked"] == "1" {
		return Principal{}, apierr.ErrUnauthenticated
	}
	return Principal{Name: m["name"], Level: Level(m["level"]), Reseller: m["reseller"], Domain: m["domain"], User: m["user"]}, nil
}

// ValidateScope checks a requested token scope field by field.
func ValidateScope(p Principal) error {
	v := &apierr.ValidationError{}
	if p.Name == "" || len(p.Name) > 64 {
		v.Add("name", "must be 1-64 characters")
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

// Issue creates a token for scope on behalf of issuer and returns it. The
// token is shown only here.
func (s *Store) Issue(ctx context.Context, issuer Principal, scope Principal) (string, error) {
	if err := ValidateScope(scope); err != nil {
		return "", err
	}
	if !issuer.CoversScope(scope) {
		return "", fmt.Errorf("issue token: %w: %s may not issue a token for %s", apierr.ErrForbidden, issuer, scope)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("issue token: %w", err)
	}
	token := "cvt_" + base64.RawURLEncoding.EncodeToString(raw)
	sum := sha256.Sum256([]byte(token))
	hash := hex.EncodeToString(sum[:])
	env := &eventv1.Envelope{
		Id:         "token-" + hash[:32],
		AcceptedAt: timestamppb.Now(),
		Source:     "auth",
		Body: &eventv1.Envelope_TokenIssued{TokenIssued: &eventv1.TokenIssued{
			TokenSha256: hash, Name: scope.Name, Level: string(scope.Level),
			Reseller: scope.Reseller, Domain: scope.Domain, User: scope.User, IssuedBy: issuer.Name,
		}},
	}
	if _, err := bus.PublishEnvelope(ctx, s.js, s.names.TokenSubject(), env.GetId(), env); err != nil {
		return "", fmt.Errorf("issue token: %w: %w", apierr.ErrUnavailable, err)
	}
	if err := s.Apply(ctx, env); err != nil {
		return "", err
	}
	return token, nil
}

// Apply writes a token event to Redis; replaying the config stream through
// Apply rebuilds every token.
func (s *Store) Apply(ctx context.Context, env *eventv1.Envelope) error {
	switch b := env.GetBody().(type) {
	case *eventv1.Envelope_TokenIssued:
		t := b.TokenIssued
		if len(t.GetTokenSha256()) != 64 {
			return bus.Poison(errors.New("token event: bad hash"))
		}
		err := s.rdb.HSet(ctx, s.key(t.GetTokenSha256()), "name", t.GetName(), "level", t.GetLevel(),
			"reseller", t.GetReseller(), "domain", t.GetDomain(), "user", t.GetUser(), "issued_by", t.GetIssuedBy()).Err()
		if err != nil {
			return fmt.Errorf("apply token: %w", err)
		}
	case *eventv1.Envelope_TokenRevoked:
		if err := s.rdb.HSet(ctx, s.key(b.TokenRevoked.GetTokenSha256()), "revoked", "1").Err(); err != nil {
			return fmt.Errorf("apply token revoke: %w", err)
		}
	}
	return nil
}

// BearerToken extracts the token of an "Authorization: Bearer x" value.
func BearerToken(header string) string {
	const prefix = "bearer "
	if len(header) > len(prefix) && strings.EqualFold(header[:len(prefix)], prefix) {
		return strings.TrimSpace(header[len(prefix):])
	}
	return ""
}
