package retention

import (
	"fmt"

	"github.com/callvault/callvault/pkg/apierr"
)

// Bounds of a sane policy: nothing is kept longer than 20 years, which is
// also the longest data rotation a bundle allows (240 months).
const (
	MaxDays          = 7300
	MaxPurchasedDays = CeilingDays
	MaxCap           = 10_000_000
)

// ParseKind checks a kind name.
func ParseKind(s string) (Kind, error) {
	for _, k := range Kinds {
		if string(k) == s {
			return k, nil
		}
	}
	return "", fmt.Errorf("unknown kind %q", s)
}

// ValidateFields checks an override's fields on their own, naming each bad
// one under prefix.
func ValidateFields(kind Kind, f Fields, prefix string) error {
	v := &apierr.ValidationError{}
	if f.MinStorageDays != nil && (*f.MinStorageDays < 0 || *f.MinStorageDays > MaxDays) {
		v.Add(prefix+"min_storage_days", "must be from 0 to %d days", MaxDays)
	}
	if r := f.Retention; r != nil && !r.Unlimited && (r.Days < 0 || r.Days > MaxDays) {
		v.Add(prefix+"retention_days", "must be from 0 to %d days, or unlimited", MaxDays)
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
		switch {
		case !kind.IsRecording():
			v.Add(prefix+"purchased_days", "applies to recordings only")
		case *p < 0 || *p > MaxPurchasedDays:
			v.Add(prefix+"purchased_days", "must be from 0 to %d days", MaxPurchasedDays)
		}
	}
	return v.Err()
}

// ValidateEffective checks what an override would resolve to: retention
// may never be shorter than the guaranteed minimum.
func ValidateEffective(p Policy, prefix string) error {
	if !p.Retention.Unlimited && p.Retention.Days < p.MinStorageDays {
		return apierr.Invalid(prefix+"retention_days", "resolves to %d days, shorter than the minimum storage duration of %d days (set at %s level)",
			p.Retention.Days, p.MinStorageDays, p.MinStorageFrom)
	}
	return nil
}
