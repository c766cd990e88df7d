// Package policyclient is how a service running apart from the policy
// service reaches what policy owns: the domain registry. Every call is made
// as the caller (auth.Forward), so policy applies its own checks.
package policyclient

import (
	"context"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

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

// fromStatus turns policy's answer back into the error the caller's own
// API reports: a bad field stays a bad field, a refusal a refusal, and
// anything else (policy down, a timeout) is unavailable.
func fromStatus(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%w: policy: %w", apierr.ErrUnavailable, err)
	}
	msg := st.Message()
	switch st.Code() {
	case codes.InvalidArgument:
		var v apierr.ValidationError
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok {
				for _, f := range br.GetFieldViolations() {
					v.Add(f.GetField(), "%s", f.GetDescription())
				}
			}
		}
		if len(v.Violations) == 0 {
			return apierr.Invalid("request", "%s", msg)
		}
		return &v
	case codes.NotFound:
		return remoteError{apierr.ErrNotFound, msg}
	case codes.Unauthenticated:
		return remoteError{apierr.ErrUnauthenticated, msg}
	case codes.PermissionDenied:
		return remoteError{apierr.ErrForbidden, msg}
	case codes.AlreadyExists:
		return remoteError{apierr.ErrConflict, msg}
	}
	return fmt.Errorf("%w: policy answered %s", apierr.ErrUnavailable, st.Code())
}

// remoteError is policy's answer as policy worded it (its message already
// names the kind of refusal), matching the sentinel it stands for.
type remoteError struct {
	kind error
	msg  string
}

func (e remoteError) Error() string { return e.msg }
func (e remoteError) Unwrap() error { return e.kind }

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
