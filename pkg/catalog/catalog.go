package catalog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
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
	rdb                                                                              redis.UniversalClient
	k                                                                                keys
	decide, done, gateS, applyMany, refused, provision, number, mark, appendS, evict *redis.Script
	// nums remembers domain numbers: once given, a domain's number never
	// changes (a rebuild gives it again in the config stream's order).
	nums sync.Map
}

// New returns a catalog whose keys start with ns.
func New(rdb redis.UniversalClient, ns string) *Catalog {
	return &Catalog{rdb: rdb, k: keys{ns: ns},
		decide: redis.NewScript(decideScript), done: redis.NewScript(doneScript), gateS: redis.NewScript(gateScript),
		applyMany: redis.NewScript(applyManyScript), refused: redis.NewScript(refusedScript),
		provision: redis.NewScript(provisionScript), number: redis.NewScript(numberScript), mark: redis.NewScript(markScript),
		appendS: redis.NewScript(appendScript), evict: redis.NewScript(evictScript)}
}

// AdmitRecording decides r with no cap: the path of tests and tools that
// fill a catalog directly. It reports whether r is admitted now.
func (c *Catalog) AdmitRecording(ctx context.Context, r Recording) (bool, error) {
	d, err := c.Decide(ctx, c.RecordingArtifact(r), CapCheck{})
	return err == nil && !d.Repeat && d.Admitted(), err
}

// AdmitRecordings writes recordings as recorded admissions in one
// pipeline (replay's path), each at the call index level its domain's
// count gives. It reports which were new.
func (c *Catalog) AdmitRecordings(ctx context.Context, recs []Recording) ([]bool, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	before := make([]*redis.BoolCmd, len(recs))
	counts := map[string]*redis.StringCmd{}
	pipe := c.rdb.Pipeline()
	for i, r := range recs {
		a := c.RecordingArtifact(r)
		p := c.place(a, 0)
		before[i] = pipe.HExists(ctx, p.bucket, p.field)
		if counts[r.Domain] == nil {
			counts[r.Domain] = pipe.Get(ctx, c.k.callCount(r.Domain))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("catalog admit batch: %w", err)
	}
	next := map[string]int64{}
	for d, cmd := range counts {
		next[d], _ = strconv.ParseInt(cmd.Val(), 10, 64)
	}
	batch := make([]Recorded, len(recs))
	out := make([]bool, len(recs))
	seen := make(map[string]bool, len(recs))
	for i, r := range recs {
		k := r.Domain + "/" + r.ID
		out[i] = !before[i].Val() && !seen[k]
		seen[k] = true
		level := 0
		if r.CallID != "" && out[i] {
			level = callLevel(next[r.Domain])
			next[r.Domain]++
		}
		batch[i] = Recorded{Op: OpAdmission, Admission: Admission{Artifact: c.RecordingArtifact(r), CallLevel: level}}
	}
	if err := c.ApplyRecorded(ctx, batch); err != nil {
		return nil, err
	}
	return out, nil
}

// GetRecording reads one admitted recording of a domain.
func (c *Catalog) GetRecording(ctx context.Context, domain, id string) (Recording, error) {
	s, _, err := c.find(ctx, domain, id)
	if errors.Is(err, ErrNoRecord) || (err == nil && (s.State != StateAdmitted || s.Kind != KindRecording)) {
		return Recording{}, fmt.Errorf("catalog get %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Recording{}, fmt.Errorf("catalog get %s: %w", id, err)
	}
	reseller, _, err := c.DomainOwner(ctx, domain)
	if err != nil {
		return Recording{}, err
	}
	return s.recording(domain, reseller), nil
}

// DomainOf returns the domain an artifact id belongs to.
func (c *Catalog) DomainOf(ctx context.Context, id string) (string, error) {
	h := hashID(id)
	v, err := c.rdb.HGet(ctx, c.k.claims(h), h.claim).Result()
	if errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("catalog id %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("catalog id %s: %w", id, err)
	}
	cl, err := parseClaim(v)
	if err != nil {
		return "", err
	}
	d, err := c.domainNamed(ctx, cl.num)
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
