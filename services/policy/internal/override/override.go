// Package override stores retention overrides in Redis: one hash per node
// of the tenant tree, one field per kind. Domain and user overrides carry
// the domain's hash tag, so resolving a tenant reads at most four keys in
// one pipeline.
package override

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/callvault/callvault/pkg/retention"
)

// Node is one node of the tenant tree.
type Node struct {
	Level    retention.Level
	Reseller string
	Domain   string
	User     string
}

// ID names the node and kind in events and logs.
func (n Node) ID(kind retention.Kind) string {
	return fmt.Sprintf("%s/%s/%s/%s/%s", n.Level, n.Reseller, n.Domain, n.User, kind)
}

// Stored is an override with who set it and when.
type Stored struct {
	Kind      retention.Kind   `json:"kind"`
	Node      Node             `json:"node"`
	Fields    retention.Fields `json:"fields"`
	UpdatedBy string           `json:"updated_by"`
	UpdatedAt time.Time        `json:"updated_at"`
}

// ErrNotFound is returned when a node has no override for a kind.
var ErrNotFound = errors.New("override not found")

// Store reads and writes overrides.
type Store struct {
	rdb redis.UniversalClient
	ns  string
}

// NewStore returns a store whose keys start with ns.
func NewStore(rdb redis.UniversalClient, ns string) *Store { return &Store{rdb: rdb, ns: ns} }

func (s *Store) key(n Node) string {
	switch n.Level {
	case retention.LevelReseller:
		return s.ns + ":policy:reseller:" + n.Reseller
	case retention.LevelDomain:
		return s.ns + ":{" + n.Domain + "}:policy:domain"
	case retention.LevelUser:
		return s.ns + ":{" + n.Domain + "}:policy:user:" + n.User
	default:
		return s.ns + ":policy:system"
	}
}

// Put writes an override.
func (s *Store) Put(ctx context.Context, o Stored) error {
	raw, err := json.Marshal(o)
	if err != nil {
		return fmt.Errorf("override %s: %w", o.Node.ID(o.Kind), err)
	}
	if err := s.rdb.HSet(ctx, s.key(o.Node), string(o.Kind), raw).Err(); err != nil {
		return fmt.Errorf("override %s: %w", o.Node.ID(o.Kind), err)
	}
	return nil
}

// Delete removes an override; a missing one is not an error.
func (s *Store) Delete(ctx context.Context, n Node, kind retention.Kind) error {
	if err := s.rdb.HDel(ctx, s.key(n), string(kind)).Err(); err != nil {
		return fmt.Errorf("override %s: %w", n.ID(kind), err)
	}
	return nil
}

// Get reads one override.
func (s *Store) Get(ctx context.Context, n Node, kind retention.Kind) (Stored, error) {
	raw, err := s.rdb.HGet(ctx, s.key(n), string(kind)).Result()
	if errors.Is(err, redis.Nil) {
		return Stored{}, fmt.Errorf("override %s: %w", n.ID(kind), ErrNotFound)
	}
	if err != nil {
		return Stored{}, fmt.Errorf("override %s: %w", n.ID(kind), err)
	}
	var o Stored
	if err := json.Unmarshal([]byte(raw), &o); err != nil {
		return Stored{}, fmt.Errorf("override %s: %w", n.ID(kind), err)
	}
	return o, nil
}

// List returns every override of one node.
func (s *Store) List(ctx context.Context, n Node) ([]Stored, error) {
	m, err := s.rdb.HGetAll(ctx, s.key(n)).Result()
	if err != nil {
		return nil, fmt.Errorf("overrides of %s: %w", n.ID(""), err)
	}
	out := make([]Stored, 0, len(m))
	for _, k := range retention.Kinds {
		raw, ok := m[string(k)]
		if !ok {
			continue
		}
		var o Stored
		if err := json.Unmarshal([]byte(raw), &o); err != nil {
			return nil, fmt.Errorf("override %s: %w", n.ID(k), err)
		}
		out = append(out, o)
	}
	return out, nil
}

// Chain reads the overrides of kind on the path from the system to the
// given tenant (empty names are skipped) in one pipeline.
func (s *Store) Chain(ctx context.Context, kind retention.Kind, reseller, domain, user string) ([]retention.Override, error) {
	nodes := []Node{{Level: retention.LevelSystem}}
	if reseller != "" {
		nodes = append(nodes, Node{Level: retention.LevelReseller, Reseller: reseller})
	}
	if domain != "" {
		nodes = append(nodes, Node{Level: retention.LevelDomain, Domain: domain})
		if user != "" {
			nodes = append(nodes, Node{Level: retention.LevelUser, Domain: domain, User: user})
		}
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(nodes))
	for i, n := range nodes {
		cmds[i] = pipe.HGet(ctx, s.key(n), string(kind))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("overrides of %s: %w", kind, err)
	}
	var out []retention.Override
	for i, cmd := range cmds {
		raw, err := cmd.Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("overrides of %s: %w", kind, err)
		}
		var o Stored
		if err := json.Unmarshal([]byte(raw), &o); err != nil {
			return nil, fmt.Errorf("override %s: %w", nodes[i].ID(kind), err)
		}
		out = append(out, retention.Override{Level: nodes[i].Level, Fields: o.Fields})
	}
	return out, nil
}
