package apierr

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Internal errors (a Redis, NATS or S3 failure, a bug) can name hosts,
// keys, buckets and stream names. A client gets a generic message and a
// correlation id; the log gets the text under the same id.

// Generic messages a client sees instead of internal error text.
const (
	InternalMessage    = "internal error"
	UnavailableMessage = "a backing service did not answer; retry later"
)

type loggerKey struct{}

// WithLogger returns ctx carrying log for the internal errors of a request.
func WithLogger(ctx context.Context, log *slog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, log)
}

func loggerFrom(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok && l != nil {
		return l
	}
	return slog.Default()
}

// Middleware puts log into every request's context, where HTTP finds it.
func Middleware(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(WithLogger(r.Context(), log)))
	})
}

// NewCorrelationID returns a random id that ties a client's error to a log
// line.
func NewCorrelationID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// concealed logs text under a new correlation id and returns the id.
func concealed(ctx context.Context, log *slog.Logger, where, text string) string {
	id := NewCorrelationID()
	log.Error("internal error", "correlation_id", id, "where", where, "err", text)
	return id
}

// conceal replaces the message of an internal status with a generic one,
// after logging it. Statuses a client can act on (validation, not found,
// permission) pass unchanged.
func conceal(ctx context.Context, log *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		st = status.New(codes.Unknown, err.Error())
	}
	var msg string
	code := st.Code()
	switch code {
	case codes.Unknown, codes.Internal, codes.DataLoss:
		code, msg = codes.Internal, InternalMessage
	case codes.Unavailable:
		msg = UnavailableMessage
	default:
		return err
	}
	id := concealed(ctx, log, method, st.Message())
	return status.Errorf(code, "%s (correlation id %s)", msg, id)
}

// UnaryServerInterceptor conceals the internal errors of unary calls. It
// belongs first in the chain so that it sees every other interceptor's
// errors too.
func UnaryServerInterceptor(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(WithLogger(ctx, log), req)
		if err != nil {
			return nil, conceal(ctx, log, info.FullMethod, err)
		}
		return resp, nil
	}
}

// StreamServerInterceptor conceals the internal errors of streaming calls.
func StreamServerInterceptor(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return conceal(ss.Context(), log, info.FullMethod, h(srv, ss))
	}
}
