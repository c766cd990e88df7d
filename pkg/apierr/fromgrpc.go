package apierr

import (
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// FromGRPC turns another callvault service's gRPC answer back into the
// error the caller's own API reports: a bad field stays a bad field, a
// refusal a refusal, and anything else (the service down, a timeout) is
// unavailable. service names the other side in the unavailable case.
func FromGRPC(service string, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, service, err)
	}
	msg := st.Message()
	switch st.Code() {
	case codes.InvalidArgument:
		var v ValidationError
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok {
				for _, f := range br.GetFieldViolations() {
					v.Add(f.GetField(), "%s", f.GetDescription())
				}
			}
		}
		if len(v.Violations) == 0 {
			return Invalid("request", "%s", msg)
		}
		return &v
	case codes.NotFound:
		return remoteError{ErrNotFound, msg}
	case codes.Unauthenticated:
		return remoteError{ErrUnauthenticated, msg}
	case codes.PermissionDenied:
		return remoteError{ErrForbidden, msg}
	case codes.AlreadyExists:
		return remoteError{ErrConflict, msg}
	case codes.ResourceExhausted:
		return remoteError{ErrTooLarge, msg}
	}
	return fmt.Errorf("%w: %s answered %s", ErrUnavailable, service, st.Code())
}

// remoteError is the other service's answer as it worded it (its message
// already names the kind of refusal), matching the sentinel it stands for.
type remoteError struct {
	kind error
	msg  string
}

func (e remoteError) Error() string { return e.msg }
func (e remoteError) Unwrap() error { return e.kind }
