package retention

import (
	"fmt"

	"github.com/callvault/callvault/pkg/apierr"
)

// Bounds of a sane policy: nothing is kept longer than 20 years, which is
// also the longest data rotation a bundle allows (240 months).
const (
	MaxMonths = 240
	MaxDays   = 7300
	MaxCap    = 10_000_000
)

// MaxDuration is the longest duration a policy may name.
var MaxDuration = Months(MaxMonths)

// ParseKind checks a kind name.
func ParseKind(s string) (Kind, error) {
	for _, k := range Kinds {
		if string(k) == s {
			return k, nil
		}
	}
	return "", fmt.Errorf("unknown kind %q", s)
}

// FieldName names a duration field on the wire: base_months when d is
// given in months only, base_days otherwise.
func FieldName(base string, d Duration) string {
	if d.Months != 0 && d.Days == 0 {
		return base + "_months"
	}
	return base + "_days"
}

func checkDuration(v *apierr.ValidationError, prefix, base string, d Duration) {
	switch {
	case d.Months < 0 || d.Months > MaxMonths:
		v.Add(prefix+base+"_months", "must be from 0 to %d months", MaxMonths)
	case d.Days < 0 || d.Days > MaxDays:
		v.Add(prefix+base+"_days", "must be from 0 to %d days", MaxDays)
	case !MaxDuration.AtLeast(d):
		v.Add(prefix+FieldName(base, d), "%s is longer than the %d-month limit", d, MaxMonths)
	}
}

// ValidateFields checks an override's fields on their own, naming each bad
// one under prefix. ceiling is the operator's recording ceiling: recording
// retention never goes past it, and purchases never reach beyond it.
func ValidateFields(kind Kind, f Fields, prefix string, ceiling Duration) error {
	v := &apierr.ValidationError{}
	if m := f.MinStorage; m != nil {
		checkDuration(v, prefix, "min_storage", *m)
	}
	bad := len(v.Violations)
	if r := f.Retention; r != nil && !r.Unlimited {
		checkDuration(v, prefix, "retention", r.Duration)
	}
	if r := f.Retention; r != nil && kind.IsRecording() && len(v.Violations) == bad {
		switch {
		case r.Unlimited:
			v.Add(prefix+"retention_unlimited", "recordings are kept at most the recording ceiling of %s", ceiling)
		case !ceiling.AtLeast(r.Duration):
			v.Add(prefix+FieldName("retention", r.Duration), "%s is longer than the recording ceiling of %s", r.Duration, ceiling)
		}
	}
	if c := f.Cap; c != nil {
		if f.NoCap {
			v.Add(prefix+"cap", "cannot be set together with no_cap")
		}
		if c.Limit <= 0 || c.Limit > MaxCap {
			v.Add(prefix+"cap.limit", "must be from 1 to %d", MaxCap)
		}
		switch c.Action {
		case Refuse, EvictOldest:
		default:
			v.Add(prefix+"cap.action", "is required: refuse or evict_oldest")
		}
		switch c.Scope {
		case PerAccountMonth, PerBox, PerUserFolder:
		default:
			v.Add(prefix+"cap.scope", "is required: account_month, box or user_folder")
		}
	}
	if p := f.PurchasedDays; p != nil {
		maxDays, _ := monthSpan(ceiling.Months)
		maxDays += ceiling.Days
		switch {
		case !kind.IsRecording():
			v.Add(prefix+"purchased_days", "applies to recordings only")
		case *p < 0 || *p > maxDays:
			v.Add(prefix+"purchased_days", "must be from 0 to %d days (the recording ceiling of %s)", maxDays, ceiling)
		}
	}
	return v.Err()
}

// Conflict says why a resolved policy is not allowed, or is "" when it is:
// retention may never be shorter than the guaranteed minimum.
func Conflict(p Policy) string {
	if !p.RetentionClamped {
		return ""
	}
	return fmt.Sprintf("retention resolves to %s (set at %s level), shorter than the minimum storage duration of %s (set at %s level)",
		p.asked.Duration, p.askedFrom, p.MinStorage, p.MinStorageFrom)
}
