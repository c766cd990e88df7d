// Package apierr turns validation and domain errors into the two wire forms
// callvault speaks: gRPC status with error details, and HTTP problem+json
// (RFC 9457). Both name each bad field and say why.
package apierr

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel errors callers branch on. Wrap them with %w to add context.
var (
	ErrNotFound        = errors.New("not found")
	ErrUnauthenticated = errors.New("unauthenticated")
	ErrForbidden       = errors.New("permission denied")
	ErrConflict        = errors.New("conflict")
	ErrUnavailable     = errors.New("unavailable")
	ErrTooLarge        = errors.New("too large")
)

// FieldViolation says which field is wrong and why.
type FieldViolation struct {
	Field  string `json:"name"`
	Reason string `json:"reason"`
}

// ValidationError collects every field violation of one request so a client
// learns about all of them at once.
type ValidationError struct {
	Violations []FieldViolation
}

// Add records a violation.
func (v *ValidationError) Add(field, format string, args ...any) {
	v.Violations = append(v.Violations, FieldViolation{Field: field, Reason: fmt.Sprintf(format, args...)})
}

// Err returns v when it holds violations and nil otherwise.
func (v *ValidationError) Err() error {
	if v == nil || len(v.Violations) == 0 {
		return nil
	}
	return v
}

func (v *ValidationError) Error() string {
	parts := make([]string, 0, len(v.Violations))
	for _, f := range v.Violations {
		parts = append(parts, f.Field+": "+f.Reason)
	}
	return "invalid request: " + strings.Join(parts, "; ")
}

// Invalid is a one-violation ValidationError.
func Invalid(field, format string, args ...any) error {
	v := &ValidationError{}
	v.Add(field, format, args...)
	return v
}

// GRPC converts err into a gRPC status error. Errors that already carry a
// status pass through.
func GRPC(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var ve *ValidationError
	if errors.As(err, &ve) {
		br := &errdetails.BadRequest{}
		for _, f := range ve.Violations {
			br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: f.Field, Description: f.Reason})
		}
		st := status.New(codes.InvalidArgument, ve.Error())
		if withDetails, derr := st.WithDetails(br); derr == nil {
			st = withDetails
		}
		return st.Err()
	}
	return status.Error(grpcCode(err), err.Error())
}

func grpcCode(err error) codes.Code {
	switch {
	case errors.Is(err, ErrNotFound):
		return codes.NotFound
	case errors.Is(err, ErrUnauthenticated):
		return codes.Unauthenticated
	case errors.Is(err, ErrForbidden):
		return codes.PermissionDenied
	case errors.Is(err, ErrConflict):
		return codes.AlreadyExists
	case errors.Is(err, ErrTooLarge):
		return codes.ResourceExhausted
	case errors.Is(err, ErrUnavailable):
		return codes.Unavailable
	default:
		return codes.Internal
	}
}

// Problem is an RFC 9457 problem document.
type Problem struct {
	Type          string           `json:"type"`
	Title         string           `json:"title"`
	Status        int              `json:"status"`
	Detail        string           `json:"detail,omitempty"`
	Instance      string           `json:"instance,omitempty"`
	InvalidParams []FieldViolation `json:"invalid_params,omitempty"`
	// CorrelationID names the server's log line of an internal error.
	CorrelationID string `json:"correlation_id,omitempty"`
}

// WriteProblem writes p as application/problem+json.
func WriteProblem(w http.ResponseWriter, p Problem) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

// HTTP writes err as a problem document with the matching status code.
// Internal and unavailable errors are reported without their text, which
// may name internals: the text is logged (with the logger Middleware put
// in the request's context) under a correlation id the client receives.
func HTTP(w http.ResponseWriter, r *http.Request, err error) {
	p := Problem{Instance: r.URL.Path}
	var ve *ValidationError
	switch {
	case errors.As(err, &ve):
		p.Type, p.Title, p.Status = "urn:callvault:problem:validation", "Invalid request", http.StatusBadRequest
		p.Detail, p.InvalidParams = ve.Error(), ve.Violations
	case errors.Is(err, ErrUnauthenticated):
		w.Header().Set("WWW-Authenticate", `Bearer realm="callvault"`)
		p.Type, p.Title, p.Status = "urn:callvault:problem:unauthenticated", "Unauthenticated", http.StatusUnauthorized
		p.Detail = "a valid bearer token is required"
	case errors.Is(err, ErrForbidden):
		p.Type, p.Title, p.Status, p.Detail = "urn:callvault:problem:forbidden", "Forbidden", http.StatusForbidden, err.Error()
	case errors.Is(err, ErrNotFound):
		p.Type, p.Title, p.Status, p.Detail = "urn:callvault:problem:not-found", "Not found", http.StatusNotFound, err.Error()
	case errors.Is(err, ErrConflict):
		p.Type, p.Title, p.Status, p.Detail = "urn:callvault:problem:conflict", "Conflict", http.StatusConflict, err.Error()
	case errors.Is(err, ErrTooLarge):
		p.Type, p.Title, p.Status, p.Detail = "urn:callvault:problem:too-large", "Request too large", http.StatusRequestEntityTooLarge, err.Error()
	case errors.Is(err, ErrUnavailable):
		w.Header().Set("Retry-After", "5")
		p.Type, p.Title, p.Status = "urn:callvault:problem:unavailable", "Temporarily unavailable", http.StatusServiceUnavailable
		p.CorrelationID = concealed(r.Context(), loggerFrom(r.Context()), r.Method+" "+r.URL.Path, err.Error())
		p.Detail = UnavailableMessage + " (correlation id " + p.CorrelationID + ")"
	default:
		p.Type, p.Title, p.Status = "urn:callvault:problem:internal", "Internal error", http.StatusInternalServerError
		p.CorrelationID = concealed(r.Context(), loggerFrom(r.Context()), r.Method+" "+r.URL.Path, err.Error())
		p.Detail = InternalMessage + " (correlation id " + p.CorrelationID + ")"
	}
	WriteProblem(w, p)
}
