package catalog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/callvault/callvault/pkg/auth"
)

// Domain is a provisioned domain: the one reseller it belongs to, and who
// provisioned it when.
type Domain struct {
	Domain        string
	Reseller      string
	ProvisionedBy string
	ProvisionedAt time.Time
}

var _ auth.DomainOwners = (*Catalog)(nil)

// DomainOwner returns the reseller of record of domain; ok is false for a
// domain that is not provisioned.
func (c *Catalog) DomainOwner(ctx context.Context, domain string) (string, bool, error) {
	r, err := c.ResellerOf(ctx, domain)
	if errors.Is(err, ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return r, true, nil
}

// ApplyDomain records d, provisioned by the config event at stream
// sequence seq, unless its domain is already provisioned, and returns the
// reseller of record. The first provisioning in stream order wins, so a
// replay settles a race exactly as the live system did. The domain's
// number (what id claims name it by) is that sequence, given in the same
// step: a domain has one provisioning event (the stream refuses a second
// one per domain subject), so a rebuild gives every domain the number it
// had, whatever order the live system applied concurrent provisionings
// in. Sequence 0 (tools and tests filling a catalog) takes a number from
// a counter above every stream sequence.
func (c *Catalog) ApplyDomain(ctx context.Context, d Domain, seq uint64) (string, error) {
	meta := d.ProvisionedBy + "|" + strconv.FormatInt(d.ProvisionedAt.UnixMilli(), 10)
	owner, err := c.provision.Run(ctx, c.rdb, []string{c.k.domains(), c.k.domainMeta(), c.k.domainNum(), c.k.domainName(), c.k.domainCount()},
		d.Domain, d.Reseller, meta, seq).Text()
	if err != nil {
		return "", fmt.Errorf("catalog provision %s: %w", d.Domain, err)
	}
	return owner, nil
}

// unprovisionedNumbers is where the numbers of domains catalogued
// without a provisioning event start: above every stream sequence.
const unprovisionedNumbers = 1 << 36

// numberLua defines number(domain, seq): the domain's number; one it has
// not got yet is seq, or (seq 0) the next from the counter above
// unprovisionedNumbers. KEYS 3-5: num, name, counter.
const numberLua = `
local function number(domain, seq)
  local n = redis.call('HGET', KEYS[3], domain)
  if n then return n end
  if seq == '0' then
    n = tostring(68719476736 + redis.call('INCR', KEYS[5]))
  else
    n = seq
  end
  local other = redis.call('HGET', KEYS[4], n)
  if other and other ~= domain then
    return redis.error_reply('catalog: domain number ' .. n .. ' is ' .. other .. "'s: the config stream and Redis disagree; empty Redis and rebuild it")
  end
  redis.call('HSET', KEYS[3], domain, n)
  redis.call('HSET', KEYS[4], n, domain)
  return n
end
`

const provisionScript = numberLua + `
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[3])
number(ARGV[1], ARGV[4])
return redis.call('HGET', KEYS[1], ARGV[1])
`

const numberScript = numberLua + `
return number(ARGV[1], '0')
`

// domainNumber is the number of domain, assigned now if it has none (a
// domain admitted without provisioning: only tools and tests fill a
// catalog so; the admission consumer waits for provisioning). A number
// from a provisioning event never changes, even across a rebuild, so it
// is remembered; one from the counter is not.
func (c *Catalog) domainNumber(ctx context.Context, domain string) (int64, error) {
	if n, ok := c.nums.Load(domain); ok {
		return n.(int64), nil
	}
	keys := []string{c.k.domains(), c.k.domainMeta(), c.k.domainNum(), c.k.domainName(), c.k.domainCount()}
	s, err := c.number.Run(ctx, c.rdb, keys, domain).Text()
	if err != nil {
		return 0, fmt.Errorf("catalog domain number %s: %w", domain, err)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("catalog domain number %s: %q", domain, s)
	}
	c.remember(domain, n)
	return n, nil
}

func (c *Catalog) remember(domain string, n int64) {
	if n < unprovisionedNumbers {
		c.nums.Store(domain, n)
	}
}

// domainNumbers is domainNumber for many domains, in one round trip for
// those not remembered (and one more for each without a number yet).
func (c *Catalog) domainNumbers(ctx context.Context, domains []string) (map[string]int64, error) {
	out := make(map[string]int64, len(domains))
	cmds := map[string]*redis.StringCmd{}
	pipe := c.rdb.Pipeline()
	for _, d := range domains {
		if _, ok := out[d]; ok {
			continue
		}
		if n, ok := c.nums.Load(d); ok {
			out[d] = n.(int64)
			continue
		}
		if cmds[d] == nil {
			cmds[d] = pipe.HGet(ctx, c.k.domainNum(), d)
		}
	}
	if len(cmds) == 0 {
		return out, nil
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("catalog domain numbers: %w", err)
	}
	// In the order the domains come, so numbers given now (domains never
	// provisioned) follow the batch as one-by-one admissions would.
	for _, d := range domains {
		cmd := cmds[d]
		if _, ok := out[d]; ok || cmd == nil {
			continue
		}
		n, err := cmd.Int64()
		if err != nil {
			if n, err = c.domainNumber(ctx, d); err != nil {
				return nil, err
			}
		}
		c.remember(d, n)
		out[d] = n
	}
	return out, nil
}

// lookupNumber reads the number of domain without assigning one.
func (c *Catalog) lookupNumber(ctx context.Context, domain string) (int64, bool, error) {
	if n, ok := c.nums.Load(domain); ok {
		return n.(int64), true, nil
	}
	s, err := c.rdb.HGet(ctx, c.k.domainNum(), domain).Result()
	if errors.Is(err, redis.Nil) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("catalog domain number %s: %w", domain, err)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("catalog domain number %s: %q", domain, s)
	}
	c.remember(domain, n)
	return n, true, nil
}

// domainNamed is the domain a number stands for.
func (c *Catalog) domainNamed(ctx context.Context, n int64) (string, error) {
	d, err := c.rdb.HGet(ctx, c.k.domainName(), strconv.FormatInt(n, 10)).Result()
	if errors.Is(err, redis.Nil) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("catalog domain number %d: %w", n, err)
	}
	return d, nil
}

// GetDomain reads one provisioned domain.
func (c *Catalog) GetDomain(ctx context.Context, domain string) (Domain, error) {
	pipe := c.rdb.Pipeline()
	r := pipe.HGet(ctx, c.k.domains(), domain)
	m := pipe.HGet(ctx, c.k.domainMeta(), domain)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Domain{}, fmt.Errorf("catalog domain %s: %w", domain, err)
	}
	if r.Err() != nil {
		return Domain{}, fmt.Errorf("catalog domain %s: %w", domain, ErrNotFound)
	}
	return domainOf(domain, r.Val(), m.Val()), nil
}

// Domains lists the provisioned domains, of one reseller when reseller is
// set, sorted by name.
func (c *Catalog) Domains(ctx context.Context, reseller string) ([]Domain, error) {
	pipe := c.rdb.Pipeline()
	all := pipe.HGetAll(ctx, c.k.domains())
	meta := pipe.HGetAll(ctx, c.k.domainMeta())
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("catalog domains: %w", err)
	}
	out := []Domain{}
	for d, r := range all.Val() {
		if reseller == "" || r == reseller {
			out = append(out, domainOf(d, r, meta.Val()[d]))
		}
	}
	slices.SortFunc(out, func(a, b Domain) int { return strings.Compare(a.Domain, b.Domain) })
	return out, nil
}

func domainOf(domain, reseller, meta string) Domain {
	d := Domain{Domain: domain, Reseller: reseller}
	by, at, _ := strings.Cut(meta, "|")
	d.ProvisionedBy = by
	if ms, err := strconv.ParseInt(at, 10, 64); err == nil && ms > 0 {
		d.ProvisionedAt = time.UnixMilli(ms).UTC()
	}
	return d
}

// DomainOwners is DomainOwner for many domains in one round trip: the
// reseller of record of each provisioned domain (one not provisioned is
// left out).
func (c *Catalog) DomainOwners(ctx context.Context, domains []string) (map[string]string, error) {
	out := make(map[string]string, len(domains))
	if len(domains) == 0 {
		return out, nil
	}
	vals, err := c.rdb.HMGet(ctx, c.k.domains(), domains...).Result()
	if err != nil {
		return nil, fmt.Errorf("catalog domains: %w", err)
	}
	for i, v := range vals {
		if r, ok := v.(string); ok {
			out[domains[i]] = r
		}
	}
	return out, nil
}
