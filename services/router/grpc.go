package router

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"

	"github.com/callvault/callvault/pkg/apierr"
	routerv1 "github.com/callvault/callvault/proto/callvault/router/v1"
)

// RegisterGRPC registers ArchiveService.
func (s *Service) RegisterGRPC(g *grpc.Server) {
	routerv1.RegisterArchiveServiceServer(g, &grpcServer{s: s})
}

type grpcServer struct {
	routerv1.UnimplementedArchiveServiceServer
	s *Service
}

func (g *grpcServer) CreateConfig(ctx context.Context, req *routerv1.CreateConfigRequest) (*routerv1.CreateConfigResponse, error) {
	c, warn, err := g.s.CreateConfig(ctx, principal(ctx), req.GetConfig(), req.GetSecret())
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	return &routerv1.CreateConfigResponse{Config: c, Warnings: warn}, nil
}

func (g *grpcServer) GetConfig(ctx context.Context, req *routerv1.GetConfigRequest) (*routerv1.GetConfigResponse, error) {
	c, err := g.s.GetConfig(ctx, principal(ctx), req.GetId())
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	return &routerv1.GetConfigResponse{Config: c}, nil
}

func (g *grpcServer) UpdateConfig(ctx context.Context, req *routerv1.UpdateConfigRequest) (*routerv1.UpdateConfigResponse, error) {
	c, warn, err := g.s.UpdateConfig(ctx, principal(ctx), req.GetConfig(), req.GetSecret())
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	return &routerv1.UpdateConfigResponse{Config: c, Warnings: warn}, nil
}

func (g *grpcServer) DeleteConfig(ctx context.Context, req *routerv1.DeleteConfigRequest) (*routerv1.DeleteConfigResponse, error) {
	if err := g.s.DeleteConfig(ctx, principal(ctx), req.GetId()); err != nil {
		return nil, apierr.GRPC(err)
	}
	return &routerv1.DeleteConfigResponse{}, nil
}

func (g *grpcServer) ListConfigs(ctx context.Context, req *routerv1.ListConfigsRequest) (*routerv1.ListConfigsResponse, error) {
	cs, err := g.s.ListConfigs(ctx, principal(ctx), req.GetLevel(), req.GetMatch())
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	return &routerv1.ListConfigsResponse{Configs: cs}, nil
}

func (g *grpcServer) TestConfig(ctx context.Context, req *routerv1.TestConfigRequest) (*routerv1.TestConfigResponse, error) {
	out, err := g.s.TestConfig(ctx, principal(ctx), req.GetId())
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	return out, nil
}

func (g *grpcServer) GetStatus(ctx context.Context, req *routerv1.GetStatusRequest) (*routerv1.GetStatusResponse, error) {
	st, err := g.s.Status(ctx, principal(ctx), req.GetId())
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	return &routerv1.GetStatusResponse{Status: st}, nil
}

func (g *grpcServer) GetArchiveStates(ctx context.Context, req *routerv1.GetArchiveStatesRequest) (*routerv1.GetArchiveStatesResponse, error) {
	st, err := g.s.ArchiveStates(ctx, principal(ctx), req.GetDomain(), req.GetArtifactIds())
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	return &routerv1.GetArchiveStatesResponse{States: st}, nil
}

const chunk = 64 << 10

func (g *grpcServer) OpenArchived(req *routerv1.OpenArchivedRequest, stream grpc.ServerStreamingServer[routerv1.OpenArchivedResponse]) error {
	ctx := stream.Context()
	length := req.GetLength()
	if length == 0 {
		length = -1
	}
	a, err := g.s.OpenArchive(ctx, principal(ctx), req.GetDomain(), req.GetArtifactId(), req.GetOffset(), length)
	if err != nil {
		return apierr.GRPC(err)
	}
	defer a.Body.Close()
	buf := make([]byte, chunk)
	for {
		n, err := io.ReadFull(a.Body, buf)
		if n > 0 {
			if serr := stream.Send(&routerv1.OpenArchivedResponse{Data: append([]byte(nil), buf[:n]...)}); serr != nil {
				return serr
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return apierr.GRPC(err)
		}
	}
}
