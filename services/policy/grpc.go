package policy

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
	"github.com/callvault/callvault/services/policy/internal/bundle"
	"github.com/callvault/callvault/services/policy/internal/override"
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

func (g *grpcServer) SetOverride(ctx context.Context, req *policyv1.SetOverrideRequest) (*policyv1.SetOverrideResponse, error) {
	p, _ := auth.FromContext(ctx)
	o, err := g.s.SetOverride(ctx, p, req.GetOverride())
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	return &policyv1.SetOverrideResponse{Override: overrideProto(o)}, nil
}

func (g *grpcServer) GetOverride(ctx context.Context, req *policyv1.GetOverrideRequest) (*policyv1.GetOverrideResponse, error) {
	p, _ := auth.FromContext(ctx)
	kind, err := kindOf(req.GetKind(), "kind")
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	n, err := nodeOf(req.GetScope(), "scope.")
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	if _, err := g.s.authorizeNode(ctx, p, n); err != nil {
		return nil, apierr.GRPC(err)
	}
	o, err := g.s.overrides.Get(ctx, n, kind)
	if errors.Is(err, override.ErrNotFound) {
		return nil, apierr.GRPC(fmt.Errorf("%w: no %s override at %s", apierr.ErrNotFound, kind, n.ID(kind)))
	}
	if err != nil {
		return nil, apierr.GRPC(fmt.Errorf("%w: %w", apierr.ErrUnavailable, err))
	}
	return &policyv1.GetOverrideResponse{Override: overrideProto(o)}, nil
}

func (g *grpcServer) DeleteOverride(ctx context.Context, req *policyv1.DeleteOverrideRequest) (*policyv1.DeleteOverrideResponse, error) {
	p, _ := auth.FromContext(ctx)
	if err := g.s.DeleteOverride(ctx, p, req.GetKind(), req.GetScope()); err != nil {
		return nil, apierr.GRPC(err)
	}
	return &policyv1.DeleteOverrideResponse{}, nil
}

func (g *grpcServer) ListOverrides(ctx context.Context, req *policyv1.ListOverridesRequest) (*policyv1.ListOverridesResponse, error) {
	p, _ := auth.FromContext(ctx)
	n, err := nodeOf(req.GetScope(), "scope.")
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	if _, err := g.s.authorizeNode(ctx, p, n); err != nil {
		return nil, apierr.GRPC(err)
	}
	os, err := g.s.overrides.List(ctx, n)
	if err != nil {
		return nil, apierr.GRPC(fmt.Errorf("%w: %w", apierr.ErrUnavailable, err))
	}
	out := &policyv1.ListOverridesResponse{}
	for _, o := range os {
		out.Overrides = append(out.Overrides, overrideProto(o))
	}
	return out, nil
}

func (g *grpcServer) Resolve(ctx context.Context, req *policyv1.ResolveRequest) (*policyv1.ResolveResponse, error) {
	p, _ := auth.FromContext(ctx)
	pol, err := g.s.Resolve(ctx, p, req.GetKind(), req.GetTenant())
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	return &policyv1.ResolveResponse{Policy: policyProto(pol)}, nil
}

func (g *grpcServer) Explain(ctx context.Context, req *policyv1.ExplainRequest) (*policyv1.ExplainResponse, error) {
	p, _ := auth.FromContext(ctx)
	e, err := g.s.Explain(ctx, p, req.GetDomain(), req.GetArtifactId())
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	out := &policyv1.ExplainResponse{Policy: policyProto(e.Policy), CullableAt: timestamppb.New(e.Cullable)}
	if !e.DeleteBy.IsZero() {
		out.DeleteBy = timestamppb.New(e.DeleteBy)
	}
	for _, h := range e.Holds {
		out.Holds = append(out.Holds, holdProto(h))
	}
	return out, nil
}

func (g *grpcServer) RoundUp(_ context.Context, req *policyv1.RoundUpRequest) (*policyv1.RoundUpResponse, error) {
	b, why, err := g.s.bundles.RoundUp(int(req.GetPbxCount()), int(req.GetStorageLicences()))
	switch {
	case errors.Is(err, bundle.ErrNoBundle):
		return nil, apierr.GRPC(apierr.Invalid("storage_licences", "%v", err))
	case err != nil && req.GetPbxCount() < 1:
		return nil, apierr.GRPC(apierr.Invalid("pbx_count", "%v", err))
	case err != nil:
		return nil, apierr.GRPC(apierr.Invalid("storage_licences", "%v", err))
	}
	return &policyv1.RoundUpResponse{Bundle: bundleProto(b), Reason: why}, nil
}

func (g *grpcServer) AssignBundle(ctx context.Context, req *policyv1.AssignBundleRequest) (*policyv1.AssignBundleResponse, error) {
	p, _ := auth.FromContext(ctx)
	a, b, err := g.s.AssignBundle(ctx, p, req.GetDomain(), req.GetBundle(), int(req.GetDataRotationMonths()))
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	return &policyv1.AssignBundleResponse{Bundle: bundleProto(b), DataRotationMonths: int32(a.RotationMonths)}, nil
}

func (g *grpcServer) CheckQuota(ctx context.Context, req *policyv1.CheckQuotaRequest) (*policyv1.CheckQuotaResponse, error) {
	p, _ := auth.FromContext(ctx)
	out, err := g.s.CheckQuota(ctx, p, req.GetKind(), req.GetTenant(), req.GetFolder())
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	return out, nil
}

func (g *grpcServer) GetUsage(ctx context.Context, req *policyv1.GetUsageRequest) (*policyv1.GetUsageResponse, error) {
	p, _ := auth.FromContext(ctx)
	out, err := g.s.GetUsage(ctx, p, req.GetDomain())
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	return out, nil
}
