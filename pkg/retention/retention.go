// Package retention decides how long an artifact is kept. Resolve is a
// pure function: the effective policy of a kind for a tenant is, field by
// field, the most specific override among user > domain > reseller >
// system, over the defaults of the operator's chosen preset. It also says
// which level set each field, so "why is this kept?" has an answer.
package retention

import (
	"encoding/json"
	"fmt"
	"reflect"
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

// Retention is when an artifact must be deleted: after the duration, or
// never. Its JSON keeps the old {"Days": n} form readable.
type Retention struct {
	Duration
	Unlimited bool
}

// Fields are the settable parts of a policy; nil means "inherit".
type Fields struct {
	MinStorage *Duration
	Retention  *Retention
	Cap        *Cap
	// NoCap, when true, removes an inherited cap.
	NoCap bool
	// PurchasedDays are retention blocks bought for recordings.
	PurchasedDays *int
}

// UnmarshalJSON also reads the MinStorageDays of overrides stored before
// durations had months.
func (f *Fields) UnmarshalJSON(b []byte) error {
	type plain Fields
	var aux struct {
		plain
		MinStorageDays *int
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*f = Fields(aux.plain)
	if f.MinStorage == nil && aux.MinStorageDays != nil {
		f.MinStorage = &Duration{Days: *aux.MinStorageDays}
	}
	return nil
}

// CommercialChanges reports the fields the provider sells or enforces (minimum,
// cap, purchased retention) that differ between f and o, by name.
func (f Fields) CommercialChanges(o Fields) []string {
	var out []string
	if !reflect.DeepEqual(f.MinStorage, o.MinStorage) {
		out = append(out, "min_storage")
	}
	if !reflect.DeepEqual(f.Cap, o.Cap) {
		out = append(out, "cap")
	}
	if f.NoCap != o.NoCap {
		out = append(out, "no_cap")
	}
	if !reflect.DeepEqual(f.PurchasedDays, o.PurchasedDays) {
		out = append(out, "purchased_days")
	}
	return out
}

// Override sets some fields of one kind at one level.
type Override struct {
	Level  Level
	Fields Fields
}

// Policy is an effective policy.
type Policy struct {
	Kind       Kind
	MinStorage Duration
	Retention  Retention
	Cap        *Cap
	// PurchasedDays were added to the retention (recordings only).
	PurchasedDays int
	// PurchaseCapped: the purchase reached the recording ceiling and was cut.
	PurchaseCapped bool
	// RetentionClamped: the overrides resolve to a retention shorter than
	// the minimum (stored before that was refused); the minimum wins.
	RetentionClamped bool
	// Ceiling is the longest recording retention the operator allows.
	Ceiling                                Duration
	MinStorageFrom, RetentionFrom, CapFrom Level
	Preset                                 string

	asked     Retention // before the clamp
	askedFrom Level
}

// DefaultCeiling is the shipped recording ceiling: two years.
var DefaultCeiling = Months(24)

// Resolve applies overrides (any order; at most one per level) over the
// preset's default for kind, then adds the purchased days (the most
// specific level that sets them) to recordings, up to the preset's
// recording ceiling. A retention shorter than the minimum is raised to it
// and flagged, so no date it gives deletes inside the guarantee.
func Resolve(p Preset, kind Kind, overrides []Override) (Policy, error) {
	base, ok := p.Defaults[kind]
	if !ok {
		return Policy{}, fmt.Errorf("preset %s has no default for kind %q", p.Name, kind)
	}
	out := Policy{Kind: kind, MinStorage: base.MinStorage, Retention: base.Retention, Cap: base.Cap, Preset: p.Name, Ceiling: p.ceiling()}
	purchasedDays := 0
	for lvl := LevelSystem; lvl <= LevelUser; lvl++ {
		for _, o := range overrides {
			if o.Level != lvl {
				continue
			}
			if o.Fields.MinStorage != nil {
				out.MinStorage, out.MinStorageFrom = *o.Fields.MinStorage, lvl
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
	if kind.IsRecording() && purchasedDays > 0 && !out.Retention.Unlimited && out.Ceiling.AtLeast(out.Retention.Duration) {
		extended := out.Retention.Plus(Days(purchasedDays))
		out.PurchasedDays = purchasedDays
		if !out.Ceiling.AtLeast(extended) {
			extended, out.PurchaseCapped = out.Ceiling, true
		}
		out.Retention.Duration = extended
	}
	out.asked, out.askedFrom = out.Retention, out.RetentionFrom
	if !out.Retention.Unlimited && !out.Retention.AtLeast(out.MinStorage) {
		out.Retention.Duration, out.RetentionFrom, out.RetentionClamped = out.MinStorage, out.MinStorageFrom, true
	}
	return out, nil
}

// CullableAt is when the minimum storage duration of an artifact stored
// at t ends: it is never culled before.
func (p Policy) CullableAt(stored time.Time) time.Time { return p.MinStorage.From(stored) }

// MinimumCutoff is the latest start time whose minimum has ended at at:
// an artifact that started at or before it may be culled or evicted at at.
func (p Policy) MinimumCutoff(at time.Time) time.Time { return p.MinStorage.startCutoff(at) }

// Dates are when an artifact stored at t becomes cullable and when it must
// be deleted (zero for never). deleteBy is never before cullable.
func (p Policy) Dates(stored time.Time) (cullable, deleteBy time.Time) {
	cullable = p.CullableAt(stored)
	if !p.Retention.Unlimited {
		deleteBy = p.Retention.From(stored)
		if deleteBy.Before(cullable) {
			deleteBy = cullable
		}
	}
	return cullable, deleteBy
}
