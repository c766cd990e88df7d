package policy

import (
	"context"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
)

// grpcServer implements PolicyService. Methods not yet built answer
// Unimplemented through the embedded type.
type grpcServer struct {
	policyv1.UnimplementedPolicyServiceServer
	s *Service
}

func (g *grpcServer) PlaceHold(ctx context.Context, req *policyv1.PlaceHoldRequest) (*policyv1.PlaceHoldResponse, error) {
	p, _ := auth.FromContext(ctx)
	h, err := g.s.PlaceHold(ctx, p, req.GetHold())
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	return &policyv1.PlaceHoldResponse{Hold: holdProto(h)}, nil
}

func (g *grpcServer) ReleaseHold(ctx context.Context, req *policyv1.ReleaseHoldRequest) (*policyv1.ReleaseHoldResponse, error) {
	p, _ := auth.FromContext(ctx)
	if err := g.s.ReleaseHold(ctx, p, req.GetId(), req.GetReason()); err != nil {
		return nil, apierr.GRPC(err)
	}
	return &policyv1.ReleaseHoldResponse{}, nil
}

func (g *grpcServer) ListHolds(ctx context.Context, req *policyv1.ListHoldsRequest) (*policyv1.ListHoldsResponse, error) {
	p, _ := auth.FromContext(ctx)
	hs, err := g.s.ListHolds(ctx, p, req.GetScope().GetDomain(), req.GetScope().GetUser())
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	out := &policyv1.ListHoldsResponse{}
	for _, h := range hs {
		out.Holds = append(out.Holds, holdProto(h))
	}
	return out, nil
}

func (g *grpcServer) MayDelete(ctx context.Context, req *policyv1.MayDeleteRequest) (*policyv1.MayDeleteResponse, error) {
	p, _ := auth.FromContext(ctx)
	ok, blocking, err := g.s.MayDelete(ctx, p, req.GetDomain(), req.GetArtifactId())
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	out := &policyv1.MayDeleteResponse{Allowed: ok}
	for _, h := range blocking {
		out.BlockingHolds = append(out.BlockingHolds, holdProto(h))
	}
	return out, nil
}
