package apierr_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/callvault/callvault/pkg/apierr"
)

// Validation and domain errors reach the client as they are; internal and
// unavailable ones reach it as a generic message with a correlation id,
// their text only the log.
func TestOnlyInternalErrorsAreConcealed(t *testing.T) {
	t.Parallel()
	internal := errors.New("dial tcp 10.9.8.7:6379: i/o timeout")
	for _, tc := range []struct {
		name      string
		err       error
		status    int
		code      codes.Code
		shows     string
		concealed bool
	}{
		{"validation", apierr.Invalid("metadata.started_at", "must be an RFC 3339 time"), 400, codes.InvalidArgument, "metadata.started_at", false},
		{"not found", fmt.Errorf("%w: recording rec-1", apierr.ErrNotFound), 404, codes.NotFound, "recording rec-1", false},
		{"unavailable", fmt.Errorf("%w: %w", apierr.ErrUnavailable, internal), 503, codes.Unavailable, apierr.UnavailableMessage, true},
		{"internal", fmt.Errorf("catalog list: %w", internal), 500, codes.Internal, apierr.InternalMessage, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&logs, nil))
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodGet, "/x", nil)
			apierr.Middleware(log, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { apierr.HTTP(w, r, tc.err) })).ServeHTTP(rec, req)
			body := rec.Body.String()
			if rec.Code != tc.status || !strings.Contains(body, tc.shows) {
				t.Errorf("HTTP %d %s", rec.Code, body)
			}
			unary := apierr.UnaryServerInterceptor(log)
			_, err := unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/x/Y"},
				func(context.Context, any) (any, error) { return nil, apierr.GRPC(tc.err) })
			st, _ := status.FromError(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.shows) {
				t.Errorf("gRPC %v", err)
			}
			leaked := strings.Contains(body, "10.9.8.7") || strings.Contains(st.Message(), "10.9.8.7")
			logged := strings.Count(logs.String(), "10.9.8.7") == 2 && strings.Count(logs.String(), "correlation_id") == 2
			if tc.concealed && (leaked || !logged || !strings.Contains(st.Message(), "correlation id")) {
				t.Errorf("concealed: leaked %v, logged %v\nHTTP %s\ngRPC %s\nlog %s", leaked, logged, body, st.Message(), logs.String())
			}
		})
	}
}
