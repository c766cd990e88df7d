// Package cdrclient is how a service running apart from the policy
// service reads the CDR ledger it owns (CdrService). Every call is made as
// the caller (auth.Forward), so the ledger applies its own tenancy checks;
// its answers come back as the caller's own errors (apierr.FromGRPC).
package cdrclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/cdr"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
)

// service names the other side in unavailable errors.
const service = "CDR ledger"

// Client reads the CDR ledger over gRPC.
type Client struct{ rpc cdrv1.CdrServiceClient }

var _ cdr.Ledger = (*Client)(nil)

// New returns a client on conn.
func New(conn grpc.ClientConnInterface) *Client {
	return &Client{rpc: cdrv1.NewCdrServiceClient(conn)}
}

// Dial connects to the gRPC address of the service serving CdrService
// (plaintext, as every callvault gRPC port: a private network or the
// mesh's mTLS).
func Dial(addr string) (*Client, func() error, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("CDR ledger %s: %w", addr, err)
	}
	return New(conn), conn.Close, nil
}

// Export calls fn with each batch the ledger streams, as it arrives. An
// error from fn ends the stream and is returned as it is.
func (c *Client) Export(ctx context.Context, _ auth.Principal, q *cdrv1.Query, fn func([]*cdrv1.Cdr) error) error {
	ctx, cancel := context.WithCancel(auth.Forward(ctx))
	defer cancel()
	stream, err := c.rpc.ExportCdrs(ctx, &cdrv1.ExportCdrsRequest{Query: q})
	if err != nil {
		return apierr.FromGRPC(service, err)
	}
	for {
		res, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return apierr.FromGRPC(service, err)
		}
		if len(res.GetCdrs()) == 0 {
			continue
		}
		if err := fn(res.GetCdrs()); err != nil {
			return err
		}
	}
}

// CreateExport starts a background export.
func (c *Client) CreateExport(ctx context.Context, _ auth.Principal, q *cdrv1.Query, f cdrv1.ExportFormat) (*cdrv1.Export, error) {
	res, err := c.rpc.CreateExport(auth.Forward(ctx), &cdrv1.CreateExportRequest{Query: q, Format: f})
	if err != nil {
		return nil, apierr.FromGRPC(service, err)
	}
	return res.GetExport(), nil
}

// GetExport reads a background export's state.
func (c *Client) GetExport(ctx context.Context, _ auth.Principal, id string) (*cdrv1.Export, error) {
	res, err := c.rpc.GetExport(auth.Forward(ctx), &cdrv1.GetExportRequest{Id: id})
	if err != nil {
		return nil, apierr.FromGRPC(service, err)
	}
	return res.GetExport(), nil
}

// OpenExport opens a finished export's file. It reads the export first,
// so an export that is not done is apierr.ErrConflict whatever the
// ledger would answer to opening it, and the first chunk before it
// returns, so a refusal is an error here rather than a broken body.
// Closing the reader cancels the stream.
func (c *Client) OpenExport(ctx context.Context, p auth.Principal, id string) (io.ReadCloser, *cdrv1.Export, error) {
	ex, err := c.GetExport(ctx, p, id)
	if err != nil {
		return nil, nil, err
	}
	if st := ex.GetState(); st != cdrv1.ExportState_EXPORT_STATE_DONE {
		name := strings.ToLower(strings.TrimPrefix(st.String(), "EXPORT_STATE_"))
		return nil, nil, fmt.Errorf("%w: export %s is %s, not done", apierr.ErrConflict, id, name)
	}
	ctx, cancel := context.WithCancel(auth.Forward(ctx))
	stream, err := c.rpc.OpenExport(ctx, &cdrv1.OpenExportRequest{Id: id})
	if err != nil {
		cancel()
		return nil, nil, apierr.FromGRPC(service, err)
	}
	first, err := stream.Recv()
	if err != nil && !errors.Is(err, io.EOF) {
		cancel()
		return nil, nil, apierr.FromGRPC(service, err)
	}
	r := &chunkReader{stream: stream, cancel: cancel, eof: errors.Is(err, io.EOF)}
	if first != nil {
		r.buf = first.GetChunk()
	}
	return r, ex, nil
}

// chunkReader reads the chunks of an OpenExport stream as one body.
type chunkReader struct {
	stream grpc.ServerStreamingClient[cdrv1.OpenExportResponse]
	cancel context.CancelFunc
	buf    []byte
	eof    bool
	err    error
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		switch {
		case r.err != nil:
			return 0, r.err
		case r.eof:
			return 0, io.EOF
		}
		m, err := r.stream.Recv()
		if errors.Is(err, io.EOF) {
			r.eof = true
			continue
		}
		if err != nil {
			r.err = apierr.FromGRPC(service, err)
			continue
		}
		r.buf = m.GetChunk()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *chunkReader) Close() error {
	r.cancel()
	return nil
}
