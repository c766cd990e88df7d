// Package routerclient is how a service running apart from the archive
// router reaches what it owns: the archive records and the archived
// bytes. Every call is made as the caller (auth.Forward), so the router
// applies its own tenancy checks.
package routerclient

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	routerv1 "github.com/callvault/callvault/proto/callvault/router/v1"
)

// Client calls the archive router over gRPC.
type Client struct{ rpc routerv1.ArchiveServiceClient }

// New returns a client on conn.
func New(conn grpc.ClientConnInterface) *Client {
	return &Client{rpc: routerv1.NewArchiveServiceClient(conn)}
}

// Dial connects to the router's gRPC address (plaintext, as every
// callvault gRPC port: a private network or the mesh's mTLS).
func Dial(addr string) (*Client, func() error, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("archive router %s: %w", addr, err)
	}
	return New(conn), conn.Close, nil
}

// ArchiveStates asks where each artifact of a domain is archived.
func (c *Client) ArchiveStates(ctx context.Context, _ auth.Principal, domain string, ids []string) ([]*routerv1.ArchiveState, error) {
	res, err := c.rpc.GetArchiveStates(auth.Forward(ctx), &routerv1.GetArchiveStatesRequest{Domain: domain, ArtifactIds: ids})
	if err != nil {
		return nil, apierr.FromGRPC("archive router", err)
	}
	return res.GetStates(), nil
}

// OpenArchived streams an archived artifact's bytes. The first message is
// read before it returns, so a refusal (not found, encrypted) is an error
// here rather than a broken body.
func (c *Client) OpenArchived(ctx context.Context, _ auth.Principal, domain, id string, offset, length int64) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancel(auth.Forward(ctx))
	stream, err := c.rpc.OpenArchived(ctx, &routerv1.OpenArchivedRequest{Domain: domain, ArtifactId: id, Offset: offset, Length: length})
	if err != nil {
		cancel()
		return nil, apierr.FromGRPC("archive router", err)
	}
	first, err := stream.Recv()
	if err != nil && !errors.Is(err, io.EOF) {
		cancel()
		return nil, apierr.FromGRPC("archive router", err)
	}
	r := &streamReader{stream: stream, cancel: cancel, eof: errors.Is(err, io.EOF)}
	if first != nil {
		r.buf = first.GetData()
	}
	return r, nil
}

type streamReader struct {
	stream grpc.ServerStreamingClient[routerv1.OpenArchivedResponse]
	cancel context.CancelFunc
	buf    []byte
	eof    bool
}

func (r *streamReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.eof {
			return 0, io.EOF
		}
		m, err := r.stream.Recv()
		if errors.Is(err, io.EOF) {
			r.eof = true
			continue
		}
		if err != nil {
			return 0, apierr.FromGRPC("archive router", err)
		}
		r.buf = m.GetData()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *streamReader) Close() error {
	r.cancel()
	return nil
}
