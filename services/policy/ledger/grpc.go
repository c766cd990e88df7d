package ledger

import (
	"context"
	"fmt"
	"io"
	"slices"

	"google.golang.org/grpc"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/cdr"
	"github.com/callvault/callvault/pkg/tenant"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
)

var _ cdr.Ledger = (*Ledger)(nil)

type grpcServer struct {
	cdrv1.UnimplementedCdrServiceServer
	l *Ledger
}

// RegisterGRPC registers CdrService on g.
func (l *Ledger) RegisterGRPC(g *grpc.Server) {
	cdrv1.RegisterCdrServiceServer(g, &grpcServer{l: l})
}

func (s *grpcServer) ExportCdrs(req *cdrv1.ExportCdrsRequest, stream grpc.ServerStreamingServer[cdrv1.ExportCdrsResponse]) error {
	p, _ := auth.FromContext(stream.Context())
	q := req.GetQuery()
	if q == nil {
		return apierr.GRPC(apierr.Invalid("query", "is required"))
	}
	err := s.l.Export(stream.Context(), p, q, func(cs []*cdrv1.Cdr) error {
		return stream.Send(&cdrv1.ExportCdrsResponse{Cdrs: cs})
	})
	return apierr.GRPC(err)
}

func (s *grpcServer) CreateExport(ctx context.Context, req *cdrv1.CreateExportRequest) (*cdrv1.CreateExportResponse, error) {
	p, _ := auth.FromContext(ctx)
	if req.GetQuery() == nil {
		return nil, apierr.GRPC(apierr.Invalid("query", "is required"))
	}
	e, err := s.l.CreateExport(ctx, p, req.GetQuery(), req.GetFormat())
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	return &cdrv1.CreateExportResponse{Export: e}, nil
}

func (s *grpcServer) GetExport(ctx context.Context, req *cdrv1.GetExportRequest) (*cdrv1.GetExportResponse, error) {
	p, _ := auth.FromContext(ctx)
	e, err := s.l.GetExport(ctx, p, req.GetId())
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	return &cdrv1.GetExportResponse{Export: e}, nil
}

func (s *grpcServer) OpenExport(req *cdrv1.OpenExportRequest, stream grpc.ServerStreamingServer[cdrv1.OpenExportResponse]) error {
	p, _ := auth.FromContext(stream.Context())
	rc, _, err := s.l.OpenExport(stream.Context(), p, req.GetId())
	if err != nil {
		return apierr.GRPC(err)
	}
	defer rc.Close()
	buf := make([]byte, 256<<10)
	for {
		n, err := rc.Read(buf)
		if n > 0 {
			if serr := stream.Send(&cdrv1.OpenExportResponse{Chunk: slices.Clone(buf[:n])}); serr != nil {
				return serr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return apierr.GRPC(fmt.Errorf("read export %s: %w: %v", req.GetId(), apierr.ErrUnavailable, err))
		}
	}
}

func (s *grpcServer) ListPartitions(ctx context.Context, req *cdrv1.ListPartitionsRequest) (*cdrv1.ListPartitionsResponse, error) {
	p, _ := auth.FromContext(ctx)
	parts, err := s.l.ListPartitions(ctx, p, req.GetDomain(), req.GetBefore())
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	return &cdrv1.ListPartitionsResponse{Partitions: parts}, nil
}

// ListPartitions lists a domain's day partitions before the given day
// (all when empty), oldest first: what the culler deletes CDRs by.
func (l *Ledger) ListPartitions(ctx context.Context, p auth.Principal, domain, before string) ([]*cdrv1.Partition, error) {
	if err := tenant.CheckDomain(domain); err != nil {
		return nil, apierr.Invalid("domain", "%v", err)
	}
	until := int64(1) << 40
	if before != "" {
		t, err := cdr.ParseDay(before)
		if err != nil {
			return nil, apierr.Invalid("before", "%v", err)
		}
		until = cdr.DayNumber(t)
	}
	if p.Level == auth.LevelUser {
		return nil, fmt.Errorf("domain %s: %w", domain, apierr.ErrNotFound)
	}
	d, err := l.domains.GetDomain(ctx, domain)
	if err != nil || !p.CoversDomain(d.Domain, d.Reseller) {
		return nil, fmt.Errorf("domain %s: %w", domain, apierr.ErrNotFound)
	}
	days, err := l.idx.daysBetween(ctx, domain, -1<<40, until)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", apierr.ErrUnavailable, err)
	}
	out := make([]*cdrv1.Partition, 0, len(days))
	for _, day := range days {
		segs, err := l.idx.segments(ctx, domain, day)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", apierr.ErrUnavailable, err)
		}
		part := &cdrv1.Partition{Domain: domain, Day: day, Segments: uint32(len(segs))}
		for _, s := range segs {
			part.Cdrs += s.Count
			part.Bytes += s.Bytes
		}
		out = append(out, part)
	}
	return out, nil
}

// Stat answers a domain's CDR totals from the index: CDRs (before
// de-duplication), stored bytes and segments.
func (l *Ledger) Stat(ctx context.Context, domain string) (cdrs, bytes, segments int64, err error) {
	m, err := l.rdb.HGetAll(ctx, l.k.stat(domain)).Result()
	if err != nil {
		return 0, 0, 0, err
	}
	var n [3]int64
	for i, f := range []string{"cdrs", "bytes", "segments"} {
		_, _ = fmt.Sscan(m[f], &n[i])
	}
	return n[0], n[1], n[2], nil
}
