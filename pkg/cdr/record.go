package cdr

import (
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
)

// Record is a CDR as the HTTP API reads and writes it (JSON and NDJSON
// bodies, JSON exports). Times are RFC 3339; an unanswered call has no
// answered_at.
type Record struct {
	ID           string     `json:"id"`
	CallID       string     `json:"call_id"`
	Reseller     string     `json:"reseller"`
	Domain       string     `json:"domain"`
	User         string     `json:"user,omitempty"`
	Direction    string     `json:"direction"`
	From         string     `json:"from"`
	To           string     `json:"to"`
	StartedAt    *time.Time `json:"started_at"`
	AnsweredAt   *time.Time `json:"answered_at,omitempty"`
	EndedAt      *time.Time `json:"ended_at"`
	DurationS    uint32     `json:"duration_s"`
	BillableS    uint32     `json:"billable_s"`
	Disposition  string     `json:"disposition"`
	RecordingIDs []string   `json:"recording_ids"`
	AcceptedAt   *time.Time `json:"accepted_at,omitempty"`
}

// ToRecord is the API form of c.
func ToRecord(c *cdrv1.Cdr) Record {
	ids := c.GetRecordingIds()
	if ids == nil {
		ids = []string{}
	}
	return Record{
		ID: c.GetId(), CallID: c.GetCallId(), Reseller: c.GetReseller(), Domain: c.GetDomain(), User: c.GetUser(),
		Direction: c.GetDirection(), From: c.GetFrom(), To: c.GetTo(),
		StartedAt: tm(c.GetStartedAt()), AnsweredAt: tm(c.GetAnsweredAt()), EndedAt: tm(c.GetEndedAt()),
		DurationS: c.GetDurationS(), BillableS: c.GetBillableS(), Disposition: c.GetDisposition(),
		RecordingIDs: ids, AcceptedAt: tm(c.GetAcceptedAt()),
	}
}

// FromRecord is the CDR r describes. accepted_at is not taken from the
// client: ingest sets it.
func FromRecord(r Record) *cdrv1.Cdr {
	return &cdrv1.Cdr{
		Id: r.ID, CallId: r.CallID, Reseller: r.Reseller, Domain: r.Domain, User: r.User,
		Direction: r.Direction, From: r.From, To: r.To,
		StartedAt: ts(r.StartedAt), AnsweredAt: ts(r.AnsweredAt), EndedAt: ts(r.EndedAt),
		DurationS: r.DurationS, BillableS: r.BillableS, Disposition: r.Disposition,
		RecordingIds: r.RecordingIDs,
	}
}

func tm(t *timestamppb.Timestamp) *time.Time {
	if t == nil {
		return nil
	}
	u := t.AsTime().UTC()
	return &u
}

func ts(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return timestamppb.New(*t)
}

// StateName is how the API names an export's state.
func StateName(s cdrv1.ExportState) string {
	switch s {
	case cdrv1.ExportState_EXPORT_STATE_QUEUED:
		return "queued"
	case cdrv1.ExportState_EXPORT_STATE_RUNNING:
		return "running"
	case cdrv1.ExportState_EXPORT_STATE_DONE:
		return "done"
	case cdrv1.ExportState_EXPORT_STATE_FAILED:
		return "failed"
	}
	return "unknown"
}

// SameContent reports whether a and b are one CDR, whenever each was
// accepted.
func SameContent(a, b *cdrv1.Cdr) bool {
	x, y := proto.Clone(a).(*cdrv1.Cdr), proto.Clone(b).(*cdrv1.Cdr)
	x.AcceptedAt, y.AcceptedAt = nil, nil
	return proto.Equal(x, y)
}
