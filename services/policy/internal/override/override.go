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
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/callvault/callvault/pkg/retention"
)

// Node is one node of the tenant tree. Reseller is the domain's reseller
// of record on domain and user nodes (it does not change their key).
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

// The index of nodes with overrides, so a change can find the nodes below
// it: resellers (a set), domains (a hash: domain -> reseller of record, ""
// when unknown) and per domain its users (a set in the domain's slot).
// Entries are never removed: a stale one costs one empty read.
func (s *Store) resellersKey() string          { return s.ns + ":policy:idx:resellers" }
func (s *Store) domainsKey() string            { return s.ns + ":policy:idx:domains" }
func (s *Store) usersKey(domain string) string { return s.ns + ":{" + domain + "}:policy:idx:users" }

// Put writes an override and indexes its node, in one pipeline.
func (s *Store) Put(ctx context.Context, o Stored) error {
	raw, err := json.Marshal(o)
	if err != nil {
		return fmt.Errorf("override %s: %w", o.Node.ID(o.Kind), err)
	}
	n := o.Node
	pipe := s.rdb.Pipeline()
	pipe.HSet(ctx, s.key(n), string(o.Kind), raw)
	switch n.Level {
	case retention.LevelReseller:
		pipe.SAdd(ctx, s.resellersKey(), n.Reseller)
	case retention.LevelDomain, retention.LevelUser:
		if n.Reseller != "" {
			pipe.HSet(ctx, s.domainsKey(), n.Domain, n.Reseller)
		} else {
			pipe.HSetNX(ctx, s.domainsKey(), n.Domain, "")
		}
		if n.Level == retention.LevelUser {
			pipe.SAdd(ctx, s.usersKey(n.Domain), n.User)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("override %s: %w", n.ID(o.Kind), err)
	}
	return nil
}

// Below returns the indexed nodes under n (every node that has, or had,
// an override). Domain and user nodes carry the reseller the index knows
// for their domain ("" when unknown); for a reseller node, domains whose
// reseller is unknown are returned too, for the caller to check.
func (s *Store) Below(ctx context.Context, n Node) ([]Node, error) {
	var out []Node
	var domains []Node
	switch n.Level {
	case retention.LevelUser:
		return nil, nil
	case retention.LevelDomain:
		domains = []Node{{Level: retention.LevelDomain, Domain: n.Domain, Reseller: n.Reseller}}
	default:
		if n.Level == retention.LevelSystem {
			rs, err := s.rdb.SMembers(ctx, s.resellersKey()).Result()
			if err != nil {
				return nil, fmt.Errorf("overrides below %s: %w", n.ID(""), err)
			}
			slices.Sort(rs)
			for _, r := range rs {
				out = append(out, Node{Level: retention.LevelReseller, Reseller: r})
			}
		}
		m, err := s.rdb.HGetAll(ctx, s.domainsKey()).Result()
		if err != nil {
			return nil, fmt.Errorf("overrides below %s: %w", n.ID(""), err)
		}
		for d, r := range m {
			if n.Level == retention.LevelSystem || r == n.Reseller || r == "" {
				domains = append(domains, Node{Level: retention.LevelDomain, Domain: d, Reseller: r})
			}
		}
		slices.SortFunc(domains, func(a, b Node) int { return strings.Compare(a.Domain, b.Domain) })
	}
	pipe := s.rdb.Pipeline()
	users := make([]*redis.StringSliceCmd, len(domains))
	for i, d := range domains {
		users[i] = pipe.SMembers(ctx, s.usersKey(d.Domain))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("overrides below %s: %w", n.ID(""), err)
	}
	for i, d := range domains {
		if n.Level != retention.LevelDomain {
			out = append(out, d)
		}
		us := users[i].Val()
		slices.Sort(us)
		for _, u := range us {
			out = append(out, Node{Level: retention.LevelUser, Reseller: d.Reseller, Domain: d.Domain, User: u})
		}
	}
	return out, nil
}

// Path lists the nodes from the system down to n.
func Path(n Node) []Node {
	path := []Node{{Level: retention.LevelSystem}}
	if n.Reseller != "" && n.Level >= retention.LevelReseller {
		path = append(path, Node{Level: retention.LevelReseller, Reseller: n.Reseller})
	}
	if n.Level >= retention.LevelDomain {
		path = append(path, Node{Level: retention.LevelDomain, Reseller: n.Reseller, Domain: n.Domain})
	}
	if n.Level == retention.LevelUser {
		path = append(path, n)
	}
	return path
}

// Chains reads, for each node, the overrides of kind on its path from the
// system, all in one pipeline.
func (s *Store) Chains(ctx context.Context, kind retention.Kind, nodes []Node) ([][]retention.Override, error) {
	pipe := s.rdb.Pipeline()
	paths := make([][]Node, len(nodes))
	cmds := make([][]*redis.StringCmd, len(nodes))
	for i, n := range nodes {
		paths[i] = Path(n)
		for _, p := range paths[i] {
			cmds[i] = append(cmds[i], pipe.HGet(ctx, s.key(p), string(kind)))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("overrides of %s: %w", kind, err)
	}
	out := make([][]retention.Override, len(nodes))
	for i := range nodes {
		for j, cmd := range cmds[i] {
			raw, err := cmd.Result()
			if errors.Is(err, redis.Nil) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("overrides of %s: %w", kind, err)
			}
			var o Stored
			if err := json.Unmarshal([]byte(raw), &o); err != nil {
				return nil, fmt.Errorf("override %s: %w", paths[i][j].ID(kind), err)
			}
			out[i] = append(out[i], retention.Override{Level: paths[i][j].Level, Fields: o.Fields})
		}
	}
	return out, nil
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
