package catalog

import (
	"context"

	"github.com/redis/go-redis/v9"

	"github.com/callvault/callvault/pkg/auth"
)

// Reader is the catalog as services other than policy see it: reads only.
// The policy service owns the catalog and is its only writer; the gateway
// and ingest hold a Reader, so a write from them does not compile.
type Reader struct{ c *Catalog }

// NewReader returns a read-only view of the catalog in namespace ns.
func NewReader(rdb redis.UniversalClient, ns string) Reader {
	return Reader{c: New(rdb, ns)}
}

// GetRecording reads one admitted recording.
func (r Reader) GetRecording(ctx context.Context, domain, id string) (Recording, error) {
	return r.c.GetRecording(ctx, domain, id)
}

// ListRecordings lists a domain's or a user's recordings, newest first.
func (r Reader) ListRecordings(ctx context.Context, q Query) (Page, error) {
	return r.c.ListRecordings(ctx, q)
}

// Record reads the decision record of an id in a domain.
func (r Reader) Record(ctx context.Context, domain, id string) (Record, error) {
	return r.c.Record(ctx, domain, id)
}

// DomainOf reads which domain an id belongs to.
func (r Reader) DomainOf(ctx context.Context, id string) (string, error) {
	return r.c.DomainOf(ctx, id)
}

// DomainOwner reads a domain's reseller of record.
func (r Reader) DomainOwner(ctx context.Context, domain string) (string, bool, error) {
	return r.c.DomainOwner(ctx, domain)
}

// AuthorizeDomain checks p against the domain's reseller of record.
func (r Reader) AuthorizeDomain(ctx context.Context, p auth.Principal, domain string) (string, error) {
	return r.c.AuthorizeDomain(ctx, p, domain)
}

// AuthorizeUser checks p against the domain's reseller of record and the
// user.
func (r Reader) AuthorizeUser(ctx context.Context, p auth.Principal, domain, user string) (string, error) {
	return r.c.AuthorizeUser(ctx, p, domain, user)
}
