package auth

import (
	"context"

	"google.golang.org/grpc/metadata"
)

type tokenKey struct{}

func withToken(ctx context.Context, token string) context.Context {
	return context.WithValue(ctx, tokenKey{}, token)
}

// Forward returns ctx with the caller's bearer token in the outgoing gRPC
// metadata, so a call to another callvault service (the policy service,
// which owns the domain registry) is judged as the caller, never with more
// than the caller's own rights. The token travels only in call metadata and
// is never logged.
func Forward(ctx context.Context) context.Context {
	token, _ := ctx.Value(tokenKey{}).(string)
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}
