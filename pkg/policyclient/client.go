// Package policyclient is how a service running apart from the policy
// service reaches what policy owns: the domain registry. Every call is made
// as the caller (auth.Forward), so policy applies its own checks.
package policyclient

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/catalog"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
)

// Client calls the policy service over gRPC.
type Client struct{ rpc policyv1.PolicyServiceClient }

// New returns a client on conn.
func New(conn grpc.ClientConnInterface) *Client {
	return &Client{rpc: policyv1.NewPolicyServiceClient(conn)}
}

// ProvisionDomain provisions domain under reseller as the caller; created
// is false when it was already provisioned to that reseller.
func (c *Client) ProvisionDomain(ctx context.Context, _ auth.Principal, domain, reseller string) (catalog.Domain, bool, error) {
	res, err := c.rpc.ProvisionDomain(auth.Forward(ctx), &policyv1.ProvisionDomainRequest{Domain: domain, Reseller: reseller})
	if err != nil {
		return catalog.Domain{}, false, fromStatus(err)
	}
	return domainOf(res.GetDomain()), res.GetCreated(), nil
}

// GetDomain reads one provisioned domain the caller covers.
func (c *Client) GetDomain(ctx context.Context, _ auth.Principal, domain string) (catalog.Domain, error) {
	res, err := c.rpc.GetDomain(auth.Forward(ctx), &policyv1.GetDomainRequest{Domain: domain})
	if err != nil {
		return catalog.Domain{}, fromStatus(err)
	}
	return domainOf(res.GetDomain()), nil
}

// ListDomains lists the provisioned domains the caller covers.
func (c *Client) ListDomains(ctx context.Context, _ auth.Principal, reseller string) ([]catalog.Domain, error) {
	res, err := c.rpc.ListDomains(auth.Forward(ctx), &policyv1.ListDomainsRequest{Reseller: reseller})
	if err != nil {
		return nil, fromStatus(err)
	}
	out := make([]catalog.Domain, 0, len(res.GetDomains()))
	for _, d := range res.GetDomains() {
		out = append(out, domainOf(d))
	}
	return out, nil
}

func domainOf(d *policyv1.Domain) catalog.Domain {
	out := catalog.Domain{Domain: d.GetDomain(), Reseller: d.GetReseller(), ProvisionedBy: d.GetProvisionedBy()}
	if d.GetProvisionedAt() != nil {
		out.ProvisionedAt = d.GetProvisionedAt().AsTime()
	}
	return out
}

// fromStatus turns policy's answer back into the caller's own error.
func fromStatus(err error) error { return apierr.FromGRPC("policy", err) }

// Dial connects to the policy service's gRPC address. The connection is
// plaintext: deployments run it on a private network or behind their
// mesh's mTLS, as they do every callvault gRPC port.
func Dial(addr string) (*Client, func() error, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("policy service %s: %w", addr, err)
	}
	return New(conn), conn.Close, nil
}
