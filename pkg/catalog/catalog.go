package catalog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
)

// ErrNotFound is returned for an artifact the catalog does not hold.
var ErrNotFound = errors.New("catalog: not found")

// KindRecording is the catalog kind of call recordings (both modes).
const KindRecording = "recording"

// Recording is a catalogued call recording.
type Recording struct {
	ID          string
	CallID      string
	Reseller    string
	Domain      string
	User        string
	Mode        string // "automatic" or "on_demand"
	StartedAt   time.Time
	DurationS   uint32
	ContentType string
	Size        int64
	SHA256      string
	ObjectKey   string
	AcceptedAt  time.Time
	// Sequence of the event in the ingest stream.
	StreamSeq uint64
}

// Catalog reads and writes the artifact index.
type Catalog struct {
	rdb                                                            redis.UniversalClient
	k                                                              keys
	decide, conflict, done, gateS, apply, refused, mark, applyMany *redis.Script
}

// New returns a catalog whose keys start with ns.
func New(rdb redis.UniversalClient, ns string) *Catalog {
	return &Catalog{rdb: rdb, k: keys{ns: ns},
		decide: redis.NewScript(decideScript), conflict: redis.NewScript(conflictScript), done: redis.NewScript(doneScript),
		gateS: redis.NewScript(gateScript), apply: redis.NewScript(applyScript), refused: redis.NewScript(refusedScript),
		mark: redis.NewScript(markScript), applyMany: redis.NewScript(applyManyScript)}
}

// AdmitRecording decides r with no cap: the path of tests and tools that
// fill a catalog directly. It reports whether r is admitted now.
func (c *Catalog) AdmitRecording(ctx context.Context, r Recording) (bool, error) {
	d, err := c.Decide(ctx, c.RecordingArtifact(r), CapCheck{})
	return err == nil && !d.Repeat && d.Admitted(), err
}

// AdmitRecordings writes recordings as recorded admissions in one
// pipeline (replay's path). It reports which were new.
func (c *Catalog) AdmitRecordings(ctx context.Context, recs []Recording) ([]bool, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	before := make([]*redis.IntCmd, len(recs))
	pipe := c.rdb.Pipeline()
	for i, r := range recs {
		before[i] = pipe.Exists(ctx, c.k.artifact(r.Domain, r.ID))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("catalog admit batch: %w", err)
	}
	batch := make([]Admission, len(recs))
	for i, r := range recs {
		batch[i] = Admission{Artifact: c.RecordingArtifact(r)}
	}
	if err := c.ApplyAdmissions(ctx, batch); err != nil {
		return nil, err
	}
	out := make([]bool, len(recs))
	seen := make(map[string]bool, len(recs))
	for i, r := range recs {
		k := r.Domain + "/" + r.ID
		out[i] = before[i].Val() == 0 && !seen[k]
		seen[k] = true
	}
	return out, nil
}

func recordingFields(r Recording) []any {
	keyField, keyValue := storedKey(KindRecording, r.Domain, r.ID, r.ObjectKey)
	return []any{
		"id", r.ID,
		"kind", KindRecording,
		"mode", r.Mode,
		"call_id", r.CallID,
		"reseller", r.Reseller,
		"domain", r.Domain,
		"user", r.User,
		"started_at", r.StartedAt.UnixMilli(),
		"duration_s", r.DurationS,
		"content_type", r.ContentType,
		"size", r.Size,
		"sha256", r.SHA256,
		keyField, keyValue,
		"accepted_at", r.AcceptedAt.UnixMilli(),
		"seq", r.StreamSeq,
	}
}

func parseRecording(m map[string]string) (Recording, error) {
	if len(m) == 0 || (m["st"] != "" && m["st"] != string(StateAdmitted)) {
		return Recording{}, ErrNotFound
	}
	num := func(f string) int64 {
		v, _ := strconv.ParseInt(m[f], 10, 64)
		return v
	}
	return Recording{
		ID:          m["id"],
		CallID:      m["call_id"],
		Reseller:    m["reseller"],
		Domain:      m["domain"],
		User:        m["user"],
		Mode:        m["mode"],
		StartedAt:   time.UnixMilli(num("started_at")).UTC(),
		DurationS:   uint32(num("duration_s")),
		ContentType: m["content_type"],
		Size:        num("size"),
		SHA256:      m["sha256"],
		ObjectKey:   objectKeyOf(m, KindRecording, m["domain"], m["id"]),
		AcceptedAt:  time.UnixMilli(num("accepted_at")).UTC(),
		StreamSeq:   uint64(num("seq")),
	}, nil
}

// GetRecording reads one recording of a domain.
func (c *Catalog) GetRecording(ctx context.Context, domain, id string) (Recording, error) {
	m, err := c.rdb.HGetAll(ctx, c.k.artifact(domain, id)).Result()
	if err != nil {
		return Recording{}, fmt.Errorf("catalog get %s: %w", id, err)
	}
	r, err := parseRecording(m)
	if err != nil {
		return Recording{}, fmt.Errorf("catalog get %s: %w", id, err)
	}
	return r, nil
}

// DomainOf returns the domain an artifact id belongs to.
func (c *Catalog) DomainOf(ctx context.Context, id string) (string, error) {
	d, err := c.rdb.HGet(ctx, c.k.ids(id), id).Result()
	if errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("catalog id %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("catalog id %s: %w", id, err)
	}
	return d, nil
}

// ResellerOf returns the reseller a domain is provisioned under.
func (c *Catalog) ResellerOf(ctx context.Context, domain string) (string, error) {
	r, err := c.rdb.HGet(ctx, c.k.domains(), domain).Result()
	if errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("catalog domain %s: %w", domain, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("catalog domain %s: %w", domain, err)
	}
	return r, nil
}

// Usage is what a domain stores, per category.
type Usage map[string]struct{ Bytes, Count int64 }

// Usage reads a domain's usage counters.
func (c *Catalog) Usage(ctx context.Context, domain string) (Usage, error) {
	m, err := c.rdb.HGetAll(ctx, c.k.usage(domain)).Result()
	if err != nil {
		return nil, fmt.Errorf("catalog usage %s: %w", domain, err)
	}
	u := Usage{}
	for f, v := range m {
		n, _ := strconv.ParseInt(v, 10, 64)
		for i := len(f) - 1; i >= 0; i-- {
			if f[i] != ':' {
				continue
			}
			e := u[f[:i]]
			switch f[i+1:] {
			case "bytes":
				e.Bytes = n
			case "count":
				e.Count = n
			}
			u[f[:i]] = e
			break
		}
	}
	return u, nil
}

// AuthorizeDomain checks that p may act on the whole of domain, judging
// every token by the domain's reseller of record, and returns that
// reseller. A domain that is not provisioned is refused: a system token is
// told it is not found, anyone else gets the same refusal as for another
// reseller's domain, so existence leaks to nobody. A registry that cannot
// be read refuses too. Errors wrap apierr sentinels.
func (c *Catalog) AuthorizeDomain(ctx context.Context, p auth.Principal, domain string) (string, error) {
	reseller, ok, err := c.DomainOwner(ctx, domain)
	if err != nil {
		return "", fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	if !ok && p.Level == auth.LevelSystem {
		return "", fmt.Errorf("%w: domain %s is not provisioned", apierr.ErrNotFound, domain)
	}
	if !ok || !p.CoversDomain(domain, reseller) {
		return "", fmt.Errorf("%w: token %s does not cover domain %s", apierr.ErrForbidden, p.Name, domain)
	}
	return reseller, nil
}

// AuthorizeUser is AuthorizeDomain for what a user token may also reach:
// its own user's artifacts in its own domain of its own reseller.
func (c *Catalog) AuthorizeUser(ctx context.Context, p auth.Principal, domain, user string) (string, error) {
	if p.Level != auth.LevelUser {
		return c.AuthorizeDomain(ctx, p, domain)
	}
	reseller, ok, err := c.DomainOwner(ctx, domain)
	if err != nil {
		return "", fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	if !ok || !p.Covers(reseller, domain, user) {
		return "", fmt.Errorf("%w: token %s does not cover domain %s user %s", apierr.ErrForbidden, p.Name, domain, user)
	}
	return reseller, nil
}
