package auth

import (
	"context"
	"net/http"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/callvault/callvault/pkg/apierr"
)

// Authenticator is what the interceptors need from a Store.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (Principal, error)
}

// HTTP requires a valid bearer token before next runs.
func HTTP(a Authenticator, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := BearerToken(r.Header.Get("Authorization"))
		p, err := a.Authenticate(r.Context(), token)
		if err != nil {
			apierr.HTTP(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(withToken(WithPrincipal(r.Context(), p), token)))
	})
}

// public methods need no token: health checks and reflection.
func public(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/grpc.health.v1.Health/") || strings.HasPrefix(fullMethod, "/grpc.reflection.")
}

func grpcAuth(ctx context.Context, a Authenticator) (context.Context, error) {
	var token string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			token = BearerToken(v[0])
		}
	}
	p, err := a.Authenticate(ctx, token)
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	return withToken(WithPrincipal(ctx, p), token), nil
}

// UnaryInterceptor authenticates unary calls.
func UnaryInterceptor(a Authenticator) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if public(info.FullMethod) {
			return h(ctx, req)
		}
		ctx, err := grpcAuth(ctx, a)
		if err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
}

// StreamInterceptor authenticates streaming calls.
func StreamInterceptor(a Authenticator) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if public(info.FullMethod) {
			return h(srv, ss)
		}
		ctx, err := grpcAuth(ss.Context(), a)
		if err != nil {
			return err
		}
		return h(srv, &authStream{ServerStream: ss, ctx: ctx})
	}
}

type authStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *authStream) Context() context.Context { return s.ctx }
