// Package cdr holds what every service agrees on about call detail
// records: how one is validated and normalised, how it travels in the
// event envelope, which UTC day partition it belongs to, the segment
// format the ledger stores CDRs in, and the JSON and CSV rows exports
// write.
package cdr

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/tenant"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
)

// EventType is the type of the envelope ingest publishes for a CDR.
const EventType = "cdr.recorded"

// Limits of one CDR and one batch.
const (
	// MaxBatch is the most CDRs one request may carry.
	MaxBatch = 10000
	// MaxRecordings is the most recordings one CDR may reference.
	MaxRecordings = 32
	// MaxCallSeconds is the longest call accepted: one day.
	MaxCallSeconds = 24 * 60 * 60
	// maxParty bounds a number or extension.
	maxParty = 64
	// futureSkew is how far in the future a call may end (clock skew).
	futureSkew = 24 * time.Hour
)

// Directions and dispositions a CDR may carry.
var (
	Directions   = []string{"inbound", "outbound", "internal"}
	Dispositions = []string{"answered", "no_answer", "busy", "failed", "cancelled", "voicemail"}
)

// earliest is the oldest call accepted.
var earliest = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// EventID is a CDR's Nats-Msg-Id and envelope id. It names the domain, so
// two domains' CDRs with one id are never taken for each other.
func EventID(domain, id string) string { return "cdr:" + domain + "/" + id }

// Day is the partition day of t: its UTC date, YYYY-MM-DD.
func Day(t time.Time) string { return t.UTC().Format(time.DateOnly) }

// DayNumber is the day's count since 1970-01-01 (the index score).
func DayNumber(t time.Time) int64 {
	u := t.UTC()
	return time.Date(u.Year(), u.Month(), u.Day(), 0, 0, 0, 0, time.UTC).Unix() / 86400
}

// ParseDay parses YYYY-MM-DD as the start of that UTC day.
func ParseDay(day string) (time.Time, error) {
	t, err := time.Parse(time.DateOnly, day)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not a day (YYYY-MM-DD)", day)
	}
	return t, nil
}

// Normalize fixes what has one meaning in place: surrounding space, an
// upper-case domain, direction or disposition, and missing durations
// (computed from the times). It never changes a value that is wrong.
func Normalize(c *cdrv1.Cdr) {
	c.Id = strings.TrimSpace(c.GetId())
	c.CallId = strings.TrimSpace(c.GetCallId())
	c.Reseller = strings.TrimSpace(c.GetReseller())
	c.Domain = strings.ToLower(strings.TrimSpace(c.GetDomain()))
	c.User = strings.TrimSpace(c.GetUser())
	c.Direction = strings.ToLower(strings.TrimSpace(c.GetDirection()))
	c.Disposition = strings.ToLower(strings.TrimSpace(c.GetDisposition()))
	c.From = strings.TrimSpace(c.GetFrom())
	c.To = strings.TrimSpace(c.GetTo())
	for i, id := range c.GetRecordingIds() {
		c.RecordingIds[i] = strings.TrimSpace(id)
	}
	if c.GetStartedAt() == nil || c.GetEndedAt() == nil {
		return
	}
	start, end := c.GetStartedAt().AsTime(), c.GetEndedAt().AsTime()
	if c.GetDurationS() == 0 && !end.Before(start) {
		c.DurationS = seconds(end.Sub(start))
	}
	if c.GetBillableS() == 0 && c.GetAnsweredAt() != nil {
		if ans := c.GetAnsweredAt().AsTime(); !end.Before(ans) {
			c.BillableS = seconds(end.Sub(ans))
		}
	}
}

func seconds(d time.Duration) uint32 {
	s := d.Round(time.Second) / time.Second
	if s > MaxCallSeconds*2 {
		return MaxCallSeconds * 2
	}
	return uint32(s)
}

// Validate reports every bad field of c (after Normalize), with names
// prefixed by prefix, as an *apierr.ValidationError; nil when c is good.
// now bounds how far in the future a call may lie.
func Validate(c *cdrv1.Cdr, now time.Time, prefix string) error {
	v := &apierr.ValidationError{}
	field := func(name string, err error) {
		if err != nil {
			v.Add(prefix+name, "%v", err)
		}
	}
	field("id", tenant.CheckID(c.GetId()))
	field("call_id", tenant.CheckCallID(c.GetCallId()))
	field("reseller", tenant.CheckName(c.GetReseller()))
	field("domain", tenant.CheckDomain(c.GetDomain()))
	if c.GetUser() != "" {
		field("user", tenant.CheckName(c.GetUser()))
	}
	switch d := c.GetDirection(); {
	case d == "":
		v.Add(prefix+"direction", "is required: %s", strings.Join(Directions, ", "))
	case !slices.Contains(Directions, d):
		v.Add(prefix+"direction", "must be one of %s, not %q", strings.Join(Directions, ", "), d)
	}
	field("from", checkParty(c.GetFrom()))
	field("to", checkParty(c.GetTo()))
	disp := c.GetDisposition()
	switch {
	case disp == "":
		v.Add(prefix+"disposition", "is required: %s", strings.Join(Dispositions, ", "))
	case !slices.Contains(Dispositions, disp):
		v.Add(prefix+"disposition", "must be one of %s, not %q", strings.Join(Dispositions, ", "), disp)
	}
	validateTimes(c, now, prefix, v)
	ids := c.GetRecordingIds()
	if len(ids) > MaxRecordings {
		v.Add(prefix+"recording_ids", "must name at most %d recordings, not %d", MaxRecordings, len(ids))
	} else {
		seen := make(map[string]bool, len(ids))
		for i, id := range ids {
			name := fmt.Sprintf("%srecording_ids[%d]", prefix, i)
			if err := tenant.CheckID(id); err != nil {
				v.Add(name, "%v", err)
			} else if seen[id] {
				v.Add(name, "names recording %q twice", id)
			}
			seen[id] = true
		}
	}
	return v.Err()
}

func validateTimes(c *cdrv1.Cdr, now time.Time, prefix string, v *apierr.ValidationError) {
	at := func(name string, ts *timestamppb.Timestamp, required bool) (time.Time, bool) {
		switch {
		case ts == nil:
			if required {
				v.Add(prefix+name, "is required (RFC 3339, e.g. 2026-11-02T10:00:00Z)")
			}
			return time.Time{}, false
		case ts.CheckValid() != nil:
			v.Add(prefix+name, "is not a valid time")
			return time.Time{}, false
		}
		t := ts.AsTime()
		switch {
		case t.Before(earliest):
			v.Add(prefix+name, "must not be before 2000-01-01")
			return time.Time{}, false
		case t.After(now.Add(futureSkew)):
			v.Add(prefix+name, "must not be more than a day in the future")
			return time.Time{}, false
		}
		return t, true
	}
	start, okStart := at("started_at", c.GetStartedAt(), true)
	answer, okAnswer := at("answered_at", c.GetAnsweredAt(), false)
	end, okEnd := at("ended_at", c.GetEndedAt(), true)
	disp := c.GetDisposition()
	switch {
	case disp == "answered" && c.GetAnsweredAt() == nil:
		v.Add(prefix+"answered_at", "is required when the disposition is answered")
	case c.GetAnsweredAt() != nil && disp != "answered" && disp != "voicemail" && slices.Contains(Dispositions, disp):
		v.Add(prefix+"answered_at", "must be empty when the disposition is %s", disp)
	}
	if okStart && okAnswer && answer.Before(start) {
		v.Add(prefix+"answered_at", "must not be before started_at")
	}
	if okStart && okEnd {
		switch {
		case end.Before(start):
			v.Add(prefix+"ended_at", "must not be before started_at")
		case end.Sub(start) > MaxCallSeconds*time.Second:
			v.Add(prefix+"ended_at", "is more than %d seconds after started_at", MaxCallSeconds)
		case !near(c.GetDurationS(), end.Sub(start)):
			v.Add(prefix+"duration_s", "is %d but the call lasted %d s from started_at to ended_at", c.GetDurationS(), seconds(end.Sub(start)))
		}
	}
	if okAnswer && okEnd {
		switch {
		case end.Before(answer):
			v.Add(prefix+"ended_at", "must not be before answered_at")
		case !near(c.GetBillableS(), end.Sub(answer)):
			v.Add(prefix+"billable_s", "is %d but the call was answered for %d s", c.GetBillableS(), seconds(end.Sub(answer)))
		}
	}
	if c.GetAnsweredAt() == nil && c.GetBillableS() != 0 {
		v.Add(prefix+"billable_s", "must be 0 for a call that was not answered")
	}
}

// near accepts a whole-second duration given for d, rounded either way.
func near(given uint32, d time.Duration) bool {
	diff := time.Duration(given)*time.Second - d
	return diff > -time.Second && diff < time.Second
}

func checkParty(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("is required: a number or an extension")
	case len(s) > maxParty:
		return fmt.Errorf("must be at most %d characters", maxParty)
	}
	for i, r := range s {
		ok := r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' ||
			strings.ContainsRune("*#._-@", r) || (r == '+' && i == 0)
		if !ok {
			return fmt.Errorf("must be a number or an extension ([+]digits, letters, * # . _ - @), not %q", s)
		}
	}
	return nil
}

// NumberKey is what number matching compares: the party without a
// leading + and without separators, so +1 555 and 1555 meet.
func NumberKey(s string) string {
	s = strings.TrimPrefix(strings.TrimSpace(s), "+")
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '-' || r == '.' || r == '(' || r == ')' {
			return -1
		}
		return r
	}, s)
}

// ToEvent wraps a validated CDR in the envelope ingest publishes.
func ToEvent(c *cdrv1.Cdr, acceptedAt time.Time, source string) *eventv1.Envelope {
	return &eventv1.Envelope{
		Id:            EventID(c.GetDomain(), c.GetId()),
		ArtifactId:    c.GetId(),
		Type:          EventType,
		SchemaVersion: 2,
		AcceptedAt:    timestamppb.New(acceptedAt),
		Source:        source,
		Tenant:        &eventv1.Tenant{Reseller: c.GetReseller(), Domain: c.GetDomain(), User: c.GetUser()},
		Body: &eventv1.Envelope_Cdr{Cdr: &eventv1.CdrRecorded{
			CallId:       c.GetCallId(),
			StartedAt:    c.GetStartedAt(),
			DurationS:    c.GetDurationS(),
			From:         c.GetFrom(),
			To:           c.GetTo(),
			Direction:    c.GetDirection(),
			Disposition:  c.GetDisposition(),
			AnsweredAt:   c.GetAnsweredAt(),
			EndedAt:      c.GetEndedAt(),
			BillableS:    c.GetBillableS(),
			RecordingIds: c.GetRecordingIds(),
		}},
	}
}

// FromEvent takes the CDR out of an envelope; an envelope without one, or
// whose CDR fails validation, is an error (poison for the writer).
func FromEvent(env *eventv1.Envelope) (*cdrv1.Cdr, error) {
	b := env.GetCdr()
	if b == nil {
		return nil, fmt.Errorf("event %s carries no CDR", env.GetId())
	}
	c := &cdrv1.Cdr{
		Id:           env.GetArtifactId(),
		CallId:       b.GetCallId(),
		Reseller:     env.GetTenant().GetReseller(),
		Domain:       env.GetTenant().GetDomain(),
		User:         env.GetTenant().GetUser(),
		Direction:    b.GetDirection(),
		From:         b.GetFrom(),
		To:           b.GetTo(),
		StartedAt:    b.GetStartedAt(),
		AnsweredAt:   b.GetAnsweredAt(),
		EndedAt:      b.GetEndedAt(),
		DurationS:    b.GetDurationS(),
		BillableS:    b.GetBillableS(),
		Disposition:  b.GetDisposition(),
		RecordingIds: b.GetRecordingIds(),
		AcceptedAt:   env.GetAcceptedAt(),
	}
	if env.GetId() != EventID(c.GetDomain(), c.GetId()) {
		return nil, fmt.Errorf("event id %q does not name CDR %s of %s", env.GetId(), c.GetId(), c.GetDomain())
	}
	// Validated against its own acceptance time: a CDR that was good when
	// ingest took it stays good however late the writer reads it.
	now := time.Now()
	if env.GetAcceptedAt() != nil {
		now = env.GetAcceptedAt().AsTime()
	}
	if err := Validate(c, now, ""); err != nil {
		return nil, err
	}
	return c, nil
}

// Matches reports whether c passes the query's filters other than the
// domain and the time range.
func Matches(c *cdrv1.Cdr, q *cdrv1.Query) bool {
	if u := q.GetUser(); u != "" && c.GetUser() != u {
		return false
	}
	if id := q.GetCallId(); id != "" && c.GetCallId() != id {
		return false
	}
	if n := q.GetNumber(); n != "" {
		k := NumberKey(n)
		if NumberKey(c.GetFrom()) != k && NumberKey(c.GetTo()) != k {
			return false
		}
	}
	return true
}

// ValidateQuery names every bad field of q (prefixed by prefix). It does
// not check tenancy.
func ValidateQuery(q *cdrv1.Query, prefix string) error {
	v := &apierr.ValidationError{}
	if err := tenant.CheckDomain(q.GetDomain()); err != nil {
		v.Add(prefix+"domain", "%v", err)
	}
	from, to := q.GetFrom(), q.GetTo()
	switch {
	case from == nil:
		v.Add(prefix+"from", "is required (RFC 3339)")
	case from.CheckValid() != nil:
		v.Add(prefix+"from", "is not a valid time")
	}
	switch {
	case to == nil:
		v.Add(prefix+"to", "is required (RFC 3339)")
	case to.CheckValid() != nil:
		v.Add(prefix+"to", "is not a valid time")
	case from != nil && from.CheckValid() == nil && !to.AsTime().After(from.AsTime()):
		v.Add(prefix+"to", "must be after from")
	}
	if u := q.GetUser(); u != "" {
		if err := tenant.CheckName(u); err != nil {
			v.Add(prefix+"user", "%v", err)
		}
	}
	if n := q.GetNumber(); n != "" {
		if err := checkParty(strings.TrimSpace(n)); err != nil {
			v.Add(prefix+"number", "%v", err)
		}
	}
	if id := q.GetCallId(); id != "" {
		if err := tenant.CheckCallID(id); err != nil {
			v.Add(prefix+"call_id", "%v", err)
		}
	}
	return v.Err()
}
