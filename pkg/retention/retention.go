// Package retention decides how long an artifact is kept. Resolve is a
// pure function: the effective policy of a kind for a tenant is, field by
// field, the most specific override among user > domain > reseller >
// system, over the defaults of the operator's chosen preset. It also says
// which level set each field, so "why is this kept?" has an answer.
package retention

import (
	"fmt"
	"time"
)

// Kind is a retention class; the names match callvault.event.v1.DataKind.
type Kind string

// The kinds of the product brief.
const (
	RecordingAutomatic Kind = "recording_automatic"
	RecordingOnDemand  Kind = "recording_on_demand"
	CDR                Kind = "cdr"
	Voicemail          Kind = "voicemail"
	FaxReceived        Kind = "fax_received"
	FaxSent            Kind = "fax_sent"
	FaxOutbox          Kind = "fax_outbox"
	SMS                Kind = "sms"
	Analytics          Kind = "analytics"
	Backup             Kind = "backup"
)

// Kinds lists every kind.
var Kinds = []Kind{RecordingAutomatic, RecordingOnDemand, CDR, Voicemail, FaxReceived, FaxSent, FaxOutbox, SMS, Analytics, Backup}

// IsRecording reports whether purchased retention applies to k.
func (k Kind) IsRecording() bool { return k == RecordingAutomatic || k == RecordingOnDemand }

// Level is where a setting comes from, least specific first.
type Level int

// Levels; LevelPreset is the shipped default under every override.
const (
	LevelPreset Level = iota
	LevelSystem
	LevelReseller
	LevelDomain
	LevelUser
)

func (l Level) String() string {
	return [...]string{"preset", "system", "reseller", "domain", "user"}[l]
}

// CapAction is what happens at a cap.
type CapAction string

// Cap actions.
const (
	Refuse      CapAction = "refuse"
	EvictOldest CapAction = "evict_oldest"
)

// CapScope is what a cap counts.
type CapScope string

// Cap scopes.
const (
	PerAccountMonth CapScope = "account_month"
	PerBox          CapScope = "box"
	PerUserFolder   CapScope = "user_folder"
)

// Cap limits how many artifacts a scope holds.
type Cap struct {
	Limit  int64
	Action CapAction
	Scope  CapScope
}

// Retention is when an artifact must be deleted: after Days, or never.
type Retention struct {
	Days      int
	Unlimited bool
}

// Fields are the settable parts of a policy; nil means "inherit".
type Fields struct {
	MinStorageDays *int
	Retention      *Retention
	Cap            *Cap
	// NoCap, when true, removes an inherited cap.
	NoCap bool
	// PurchasedDays are retention blocks bought for recordings.
	PurchasedDays *int
}

// Override sets some fields of one kind at one level.
type Override struct {
	Level  Level
	Fields Fields
}

// Policy is an effective policy.
type Policy struct {
	Kind           Kind
	MinStorageDays int
	Retention      Retention
	Cap            *Cap
	// PurchasedDays were added to the retention (recordings only).
	PurchasedDays                          int
	MinStorageFrom, RetentionFrom, CapFrom Level
	Preset                                 string
}

// CeilingDays is the longest purchased retention reaches: two years.
const CeilingDays = 730

// Resolve applies overrides (any order; at most one per level) over the
// preset's default for kind, then adds the purchased days (the most
// specific level that sets them) to recordings, up to CeilingDays.
func Resolve(p Preset, kind Kind, overrides []Override) (Policy, error) {
	base, ok := p.Defaults[kind]
	if !ok {
		return Policy{}, fmt.Errorf("preset %s has no default for kind %q", p.Name, kind)
	}
	out := Policy{Kind: kind, MinStorageDays: base.MinStorageDays, Retention: base.Retention, Cap: base.Cap, Preset: p.Name}
	purchasedDays := 0
	for lvl := LevelSystem; lvl <= LevelUser; lvl++ {
		for _, o := range overrides {
			if o.Level != lvl {
				continue
			}
			if o.Fields.MinStorageDays != nil {
				out.MinStorageDays, out.MinStorageFrom = *o.Fields.MinStorageDays, lvl
			}
			if o.Fields.Retention != nil {
				out.Retention, out.RetentionFrom = *o.Fields.Retention, lvl
			}
			if o.Fields.NoCap {
				out.Cap, out.CapFrom = nil, lvl
			} else if o.Fields.Cap != nil {
				c := *o.Fields.Cap
				out.Cap, out.CapFrom = &c, lvl
			}
			if o.Fields.PurchasedDays != nil {
				purchasedDays = *o.Fields.PurchasedDays
			}
		}
	}
	if kind.IsRecording() && purchasedDays > 0 && !out.Retention.Unlimited {
		extended := min(out.Retention.Days+purchasedDays, max(out.Retention.Days, CeilingDays))
		out.PurchasedDays = extended - out.Retention.Days
		out.Retention.Days = extended
	}
	return out, nil
}

// Dates are when an artifact stored at t becomes cullable and when it must
// be deleted (zero for never).
func (p Policy) Dates(stored time.Time) (cullable, deleteBy time.Time) {
	cullable = stored.AddDate(0, 0, p.MinStorageDays)
	if !p.Retention.Unlimited {
		deleteBy = stored.AddDate(0, 0, p.Retention.Days)
	}
	return cullable, deleteBy
}
