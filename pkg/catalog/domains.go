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

// ApplyDomain records d unless its domain is already provisioned, and
// returns the reseller of record. The first provisioning in stream order
// wins, so a replay settles a race exactly as the live system did.
func (c *Catalog) ApplyDomain(ctx context.Context, d Domain) (string, error) {
	meta := d.ProvisionedBy + "|" + strconv.FormatInt(d.ProvisionedAt.UnixMilli(), 10)
	pipe := c.rdb.TxPipeline()
	set := pipe.HSetNX(ctx, c.k.domains(), d.Domain, d.Reseller)
	pipe.HSetNX(ctx, c.k.domainMeta(), d.Domain, meta)
	owner := pipe.HGet(ctx, c.k.domains(), d.Domain)
	if _, err := pipe.Exec(ctx); err != nil {
		return "", fmt.Errorf("catalog provision %s: %w", d.Domain, err)
	}
	if set.Val() {
		return d.Reseller, nil
	}
	return owner.Val(), nil
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
