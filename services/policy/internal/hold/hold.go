// Package hold keeps legal holds. A hold on a domain, a user or a call
// freezes every deletion under it until it is released. Holds are stored
// per domain (hash-tagged with it, next to the artifacts they cover), so
// the check on a deletion path is one read of a small hash.
package hold

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotFound is returned for a hold id that is not placed.
var ErrNotFound = errors.New("hold not found")

// Hold freezes deletions under its scope.
type Hold struct {
	ID       string    `json:"id"`
	Reseller string    `json:"reseller"`
	Domain   string    `json:"domain"`
	User     string    `json:"user,omitempty"`
	CallID   string    `json:"call_id,omitempty"`
	Reason   string    `json:"reason"`
	PlacedBy string    `json:"placed_by"`
	PlacedAt time.Time `json:"placed_at"`
	// PlacedLevel is the level of the token that placed the hold
	// ("system", "reseller", "domain"); empty for holds placed before it
	// was recorded, which only a system token may release.
	PlacedLevel string `json:"placed_level,omitempty"`
}

// levelRank orders token levels from the widest.
var levelRank = map[string]int{"system": 0, "reseller": 1, "domain": 2, "user": 3}

// ReleasableBy reports whether a token of the given level may release h
// (the tenant check is the caller's): its own level or a wider one. A hold
// of unknown level counts as the system's.
func (h Hold) ReleasableBy(level string) bool {
	placed, ok := levelRank[h.PlacedLevel]
	if !ok {
		placed = 0
	}
	by, ok := levelRank[level]
	return ok && by <= placed
}

// Covers reports whether h freezes an artifact of user in call (of h's
// domain): a domain hold covers everything, a user hold that user's
// artifacts, a call hold that call's, and a hold naming both only their
// intersection.
func (h Hold) Covers(user, callID string) bool {
	if h.User != "" && h.User != user {
		return false
	}
	if h.CallID != "" && h.CallID != callID {
		return false
	}
	return true
}

// Store reads and writes holds in Redis.
type Store struct {
	rdb redis.UniversalClient
	ns  string
}

// NewStore returns a store whose keys start with ns.
func NewStore(rdb redis.UniversalClient, ns string) *Store { return &Store{rdb: rdb, ns: ns} }

func (s *Store) domainKey(domain string) string { return s.ns + ":{" + domain + "}:holds" }
func (s *Store) indexKey() string               { return s.ns + ":holds" }

// Put stores h (placing it, or replaying its placement).
func (s *Store) Put(ctx context.Context, h Hold) error {
	raw, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("hold %s: %w", h.ID, err)
	}
	if err := s.rdb.HSet(ctx, s.domainKey(h.Domain), h.ID, raw).Err(); err != nil {
		return fmt.Errorf("hold %s: %w", h.ID, err)
	}
	if err := s.rdb.HSet(ctx, s.indexKey(), h.ID, h.Domain).Err(); err != nil {
		return fmt.Errorf("hold %s: index: %w", h.ID, err)
	}
	return nil
}

// Get reads one hold by id.
func (s *Store) Get(ctx context.Context, id string) (Hold, error) {
	domain, err := s.rdb.HGet(ctx, s.indexKey(), id).Result()
	if errors.Is(err, redis.Nil) {
		return Hold{}, fmt.Errorf("hold %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Hold{}, fmt.Errorf("hold %s: %w", id, err)
	}
	raw, err := s.rdb.HGet(ctx, s.domainKey(domain), id).Result()
	if errors.Is(err, redis.Nil) {
		return Hold{}, fmt.Errorf("hold %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Hold{}, fmt.Errorf("hold %s: %w", id, err)
	}
	var h Hold
	if err := json.Unmarshal([]byte(raw), &h); err != nil {
		return Hold{}, fmt.Errorf("hold %s: %w", id, err)
	}
	return h, nil
}

// Delete removes a hold; a missing one is not an error (release is
// idempotent, and replays release again).
func (s *Store) Delete(ctx context.Context, h Hold) error {
	if err := s.rdb.HDel(ctx, s.domainKey(h.Domain), h.ID).Err(); err != nil {
		return fmt.Errorf("release hold %s: %w", h.ID, err)
	}
	if err := s.rdb.HDel(ctx, s.indexKey(), h.ID).Err(); err != nil {
		return fmt.Errorf("release hold %s: index: %w", h.ID, err)
	}
	return nil
}

// List returns a domain's holds, oldest first.
func (s *Store) List(ctx context.Context, domain string) ([]Hold, error) {
	m, err := s.rdb.HGetAll(ctx, s.domainKey(domain)).Result()
	if err != nil {
		return nil, fmt.Errorf("holds of %s: %w", domain, err)
	}
	out := make([]Hold, 0, len(m))
	for id, raw := range m {
		var h Hold
		if err := json.Unmarshal([]byte(raw), &h); err != nil {
			return nil, fmt.Errorf("hold %s: %w", id, err)
		}
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].PlacedAt.Equal(out[j].PlacedAt) {
			return out[i].PlacedAt.Before(out[j].PlacedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// Covering returns the holds of domain that freeze an artifact of user in
// call.
func (s *Store) Covering(ctx context.Context, domain, user, callID string) ([]Hold, error) {
	all, err := s.List(ctx, domain)
	if err != nil {
		return nil, err
	}
	var out []Hold
	for _, h := range all {
		if h.Covers(user, callID) {
			out = append(out, h)
		}
	}
	return out, nil
}
