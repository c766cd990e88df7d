// Package meta validates recording metadata. It is pure: the same checks
// serve the HTTP and the gRPC front doors, and every bad field is reported
// with its own reason.
package meta

import (
	"regexp"
	"time"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/tenant"
)

// Recording is the metadata of an uploaded recording.
type Recording struct {
	ID          string
	CallID      string
	Reseller    string
	Domain      string
	User        string
	Mode        string
	StartedAt   time.Time
	DurationS   uint32
	ContentType string
}

// Modes a recording may have.
const (
	ModeAutomatic = "automatic"
	ModeOnDemand  = "on_demand"
)

// MaxDurationS is the longest recording accepted: one day.
const MaxDurationS = 24 * 60 * 60

// clockSkew is how far in the future a start time may be.
const clockSkew = 5 * time.Minute

var contentTypeRE = regexp.MustCompile(`^audio/[a-z0-9][a-z0-9.+-]{0,63}$`)

// earliest is the oldest start time accepted.
var earliest = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Validate returns a ValidationError naming every bad field of r, with
// names prefixed by prefix (e.g. "metadata.").
func Validate(r Recording, now time.Time, prefix string) error {
	v := &apierr.ValidationError{}
	field := func(name string, err error) {
		if err != nil {
			v.Add(prefix+name, "%v", err)
		}
	}
	field("id", tenant.CheckID(r.ID))
	field("call_id", tenant.CheckCallID(r.CallID))
	field("reseller", tenant.CheckName(r.Reseller))
	field("domain", tenant.CheckDomain(r.Domain))
	if r.User != "" {
		field("user", tenant.CheckName(r.User))
	}
	switch r.Mode {
	case ModeAutomatic, ModeOnDemand:
	case "":
		v.Add(prefix+"mode", "is required: automatic or on_demand")
	default:
		v.Add(prefix+"mode", "must be automatic or on_demand, not %q", r.Mode)
	}
	switch {
	case r.StartedAt.IsZero():
		v.Add(prefix+"started_at", "is required (RFC 3339, e.g. 2026-11-02T10:00:00Z)")
	case r.StartedAt.Before(earliest):
		v.Add(prefix+"started_at", "must not be before 2000-01-01")
	case r.StartedAt.After(now.Add(clockSkew)):
		v.Add(prefix+"started_at", "must not be in the future")
	}
	if r.DurationS > MaxDurationS {
		v.Add(prefix+"duration_s", "must be at most %d seconds", MaxDurationS)
	}
	switch {
	case r.ContentType == "":
		v.Add(prefix+"content_type", "is required, e.g. audio/wav")
	case !contentTypeRE.MatchString(r.ContentType):
		v.Add(prefix+"content_type", "must be an audio/* media type, not %q", r.ContentType)
	}
	return v.Err()
}
