// Package auth authenticates bearer tokens and scopes every request to a
// node of the tenant hierarchy. Tokens are random strings; only their
// SHA-256 is stored, so a Redis dump never yields a usable token.
package auth

import (
	"context"
	"fmt"
	"time"
)

// Level is how much of the tenant tree a token covers.
type Level string

// The levels, widest first.
const (
	LevelSystem   Level = "system"
	LevelReseller Level = "reseller"
	LevelDomain   Level = "domain"
	LevelUser     Level = "user"
)

// Principal is an authenticated caller.
type Principal struct {
	Name     string
	Level    Level
	Reseller string
	Domain   string
	User     string
	// ExpiresAt is when the token that authenticated expires (zero:
	// never). A token it issues expires no later.
	ExpiresAt time.Time
}

// Covers reports whether p may read and write artifacts of the given
// tenant. reseller must be the domain's reseller of record: the reseller
// is compared at every level, so a domain token minted under one reseller
// never covers a domain of the same name recorded under another.
func (p Principal) Covers(reseller, domain, user string) bool {
	switch p.Level {
	case LevelSystem:
		return true
	case LevelReseller:
		return reseller != "" && reseller == p.Reseller
	case LevelDomain:
		return reseller != "" && reseller == p.Reseller && domain != "" && domain == p.Domain
	case LevelUser:
		return reseller != "" && reseller == p.Reseller && domain != "" && domain == p.Domain && user == p.User
	default:
		return false
	}
}

// CoversDomain reports whether p may act on the whole of domain, whose
// reseller of record is reseller. User tokens never cover a whole domain.
func (p Principal) CoversDomain(domain, reseller string) bool {
	if p.Level == LevelUser {
		return false
	}
	return p.Covers(reseller, domain, "")
}

// CoversScope reports whether every tenant under s is also under p, i.e.
// p may issue a token for s.
func (p Principal) CoversScope(s Principal) bool {
	switch s.Level {
	case LevelSystem:
		return p.Level == LevelSystem
	case LevelReseller:
		return p.Level == LevelSystem || (p.Level == LevelReseller && p.Reseller == s.Reseller)
	case LevelDomain:
		return p.Covers(s.Reseller, s.Domain, "") && p.Level != LevelUser
	case LevelUser:
		return p.Covers(s.Reseller, s.Domain, s.User)
	default:
		return false
	}
}

func (p Principal) String() string {
	switch p.Level {
	case LevelReseller:
		return fmt.Sprintf("%s(reseller=%s)", p.Name, p.Reseller)
	case LevelDomain:
		return fmt.Sprintf("%s(domain=%s)", p.Name, p.Domain)
	case LevelUser:
		return fmt.Sprintf("%s(domain=%s user=%s)", p.Name, p.Domain, p.User)
	default:
		return fmt.Sprintf("%s(%s)", p.Name, p.Level)
	}
}

type ctxKey struct{}

// WithPrincipal stores p in ctx.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the caller; ok is false for unauthenticated contexts.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(ctxKey{}).(Principal)
	return p, ok
}
