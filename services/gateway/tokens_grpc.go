package gateway

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	authv1 "github.com/callvault/callvault/proto/callvault/auth/v1"
)

// tokenServer implements TokenService over the same store as the REST
// routes.
type tokenServer struct {
	authv1.UnimplementedTokenServiceServer
	s *Service
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func tokenProto(t auth.TokenInfo) *authv1.TokenInfo {
	return &authv1.TokenInfo{
		Id: t.ID, Name: t.Scope.Name, Level: string(t.Scope.Level), Reseller: t.Scope.Reseller, Domain: t.Scope.Domain, User: t.Scope.User,
		IssuedBy: t.IssuedBy, IssuedAt: ts(t.IssuedAt), ExpiresAt: ts(t.ExpiresAt),
		Revoked: t.Revoked, RevokedBy: t.RevokedBy, RevokedAt: ts(t.RevokedAt),
	}
}

func (g *tokenServer) IssueToken(ctx context.Context, req *authv1.IssueTokenRequest) (*authv1.IssueTokenResponse, error) {
	p, _ := auth.FromContext(ctx)
	var expires time.Time
	if req.GetExpiresAt() != nil {
		if err := req.GetExpiresAt().CheckValid(); err != nil {
			return nil, apierr.GRPC(apierr.Invalid("expires_at", "%v", err))
		}
		expires = req.GetExpiresAt().AsTime()
	}
	scope := auth.Principal{Name: req.GetName(), Level: auth.Level(req.GetLevel()), Reseller: req.GetReseller(), Domain: req.GetDomain(), User: req.GetUser()}
	token, info, err := g.s.tokens.Issue(ctx, p, scope, expires)
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	return &authv1.IssueTokenResponse{Token: token, Info: tokenProto(info)}, nil
}

func (g *tokenServer) ListTokens(ctx context.Context, _ *authv1.ListTokensRequest) (*authv1.ListTokensResponse, error) {
	p, _ := auth.FromContext(ctx)
	all, err := g.s.tokens.List(ctx, p)
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	out := &authv1.ListTokensResponse{}
	for _, t := range all {
		out.Tokens = append(out.Tokens, tokenProto(t))
	}
	return out, nil
}

func (g *tokenServer) RevokeToken(ctx context.Context, req *authv1.RevokeTokenRequest) (*authv1.RevokeTokenResponse, error) {
	p, _ := auth.FromContext(ctx)
	info, err := g.s.tokens.Revoke(ctx, p, req.GetId())
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	return &authv1.RevokeTokenResponse{Info: tokenProto(info)}, nil
}
