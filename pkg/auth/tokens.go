package auth

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/bus"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
)

// TokenInfo describes a token without its secret or the secret's hash.
type TokenInfo struct {
	ID        string
	Scope     Principal
	IssuedBy  string
	IssuedAt  time.Time
	ExpiresAt time.Time // zero: never
	Revoked   bool
	RevokedBy string
	RevokedAt time.Time
}

var tokenIDRE = regexp.MustCompile(`^tok_[0-9a-f]{20}$`)

func parseTime(ms string) time.Time {
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil || n == 0 {
		return time.Time{}
	}
	return time.UnixMilli(n).UTC()
}

func parseInfo(hash string, m map[string]string) TokenInfo {
	return TokenInfo{
		ID:        TokenID(hash),
		Scope:     Principal{Name: m["name"], Level: Level(m["level"]), Reseller: m["reseller"], Domain: m["domain"], User: m["user"]},
		IssuedBy:  m["issued_by"],
		IssuedAt:  parseTime(m["issued_at"]),
		ExpiresAt: parseTime(m["expires_at"]),
		Revoked:   m["revoked"] == "1",
		RevokedBy: m["revoked_by"],
		RevokedAt: parseTime(m["revoked_at"]),
	}
}

// List returns the tokens inside caller's scope (those caller could have
// issued: a reseller sees its own and its domains' tokens, a domain admin
// its domain's), revoked and expired ones included, sorted by issue time.
func (s *Store) List(ctx context.Context, caller Principal) ([]TokenInfo, error) {
	ids, err := s.rdb.HGetAll(ctx, s.idsKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w: %w", apierr.ErrUnavailable, err)
	}
	hashes := make([]string, 0, len(ids))
	for _, h := range ids {
		hashes = append(hashes, h)
	}
	cmds := make([]*redis.MapStringStringCmd, len(hashes))
	pipe := s.rdb.Pipeline()
	for i, h := range hashes {
		cmds[i] = pipe.HGetAll(ctx, s.key(h))
	}
	if len(hashes) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("list tokens: %w: %w", apierr.ErrUnavailable, err)
		}
	}
	out := []TokenInfo{}
	for i, h := range hashes {
		m := cmds[i].Val()
		if m["name"] == "" {
			continue
		}
		info := parseInfo(h, m)
		if caller.CoversScope(info.Scope) {
			out = append(out, info)
		}
	}
	slices.SortFunc(out, func(a, b TokenInfo) int {
		if c := a.IssuedAt.Compare(b.IssuedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// Revoke withdraws the token with public id. A token outside caller's
// scope is reported as not found, exactly like one that does not exist.
// Revoking a revoked token again changes nothing.
func (s *Store) Revoke(ctx context.Context, caller Principal, id string) (TokenInfo, error) {
	if !tokenIDRE.MatchString(id) {
		return TokenInfo{}, apierr.Invalid("id", "must be a token id such as tok_0123456789abcdef0123")
	}
	notFound := fmt.Errorf("revoke token: %w: token %s", apierr.ErrNotFound, id)
	hash, err := s.rdb.HGet(ctx, s.idsKey(), id).Result()
	if err == redis.Nil {
		return TokenInfo{}, notFound
	}
	if err != nil {
		return TokenInfo{}, fmt.Errorf("revoke token: %w: %w", apierr.ErrUnavailable, err)
	}
	m, err := s.rdb.HGetAll(ctx, s.key(hash)).Result()
	if err != nil {
		return TokenInfo{}, fmt.Errorf("revoke token: %w: %w", apierr.ErrUnavailable, err)
	}
	info := parseInfo(hash, m)
	if m["name"] == "" || !caller.CoversScope(info.Scope) {
		return TokenInfo{}, notFound
	}
	if info.Revoked {
		return info, nil
	}
	at := s.now().UTC().Truncate(time.Millisecond)
	env := &eventv1.Envelope{
		Id:         "token-revoke-" + id,
		AcceptedAt: timestamppb.Now(),
		Source:     "auth",
		Body: &eventv1.Envelope_TokenRevoked{TokenRevoked: &eventv1.TokenRevoked{
			TokenSha256: hash, RevokedBy: caller.Name, RevokedAt: timestamppb.New(at),
		}},
	}
	if _, err := bus.PublishEnvelope(ctx, s.js, s.names.TokenSubject(), env.GetId(), env); err != nil {
		return TokenInfo{}, fmt.Errorf("revoke token: %w: %w", apierr.ErrUnavailable, err)
	}
	if err := s.Apply(ctx, env); err != nil {
		return TokenInfo{}, fmt.Errorf("revoke token: %w: %w", apierr.ErrUnavailable, err)
	}
	info.Revoked, info.RevokedBy, info.RevokedAt = true, caller.Name, at
	return info, nil
}
