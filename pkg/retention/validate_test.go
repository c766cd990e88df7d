package retention

import (
	"errors"
	"testing"

	"github.com/callvault/callvault/pkg/apierr"
)

func TestValidateFields(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		kind    Kind
		f       Fields
		ceiling Duration
		field   string
	}{
		{"negative minimum", SMS, Fields{MinStorage: ptr(Days(-1))}, DefaultCeiling, "fields.min_storage_days"},
		{"absurd minimum", SMS, Fields{MinStorage: ptr(Days(MaxDays + 1))}, DefaultCeiling, "fields.min_storage_days"},
		{"absurd minimum in months", SMS, Fields{MinStorage: ptr(Months(MaxMonths + 1))}, DefaultCeiling, "fields.min_storage_months"},
		{"negative retention", SMS, Fields{Retention: ret(Days(-5))}, DefaultCeiling, "fields.retention_days"},
		{"absurd retention", SMS, Fields{Retention: ret(Days(100000))}, DefaultCeiling, "fields.retention_days"},
		{"months and days past 20 years", SMS, Fields{Retention: ret(Duration{Months: 240, Days: 1})}, DefaultCeiling, "fields.retention_days"},
		{"recordings past the ceiling", RecordingAutomatic, Fields{Retention: ret(Months(84))}, DefaultCeiling, "fields.retention_months"},
		{"recordings past the ceiling in days", RecordingAutomatic, Fields{Retention: ret(Days(731))}, DefaultCeiling, "fields.retention_days"},
		{"recordings kept forever", RecordingOnDemand, Fields{Retention: &Retention{Unlimited: true}}, DefaultCeiling, "fields.retention_unlimited"},
		{"cap without action", SMS, Fields{Cap: &Cap{Limit: 10, Scope: PerUserFolder}}, DefaultCeiling, "fields.cap.action"},
		{"cap without scope", SMS, Fields{Cap: &Cap{Limit: 10, Action: Refuse}}, DefaultCeiling, "fields.cap.scope"},
		{"cap of zero", SMS, Fields{Cap: &Cap{Limit: 0, Action: Refuse, Scope: PerBox}}, DefaultCeiling, "fields.cap.limit"},
		{"cap and no cap", SMS, Fields{NoCap: true, Cap: &Cap{Limit: 1, Action: Refuse, Scope: PerBox}}, DefaultCeiling, "fields.cap"},
		{"purchase for CDRs", CDR, Fields{PurchasedDays: ptr(90)}, DefaultCeiling, "fields.purchased_days"},
		{"purchase past the ceiling", RecordingAutomatic, Fields{PurchasedDays: ptr(731)}, DefaultCeiling, "fields.purchased_days"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := ValidateFields(tc.kind, tc.f, "fields.", tc.ceiling)
			var ve *apierr.ValidationError
			if !errors.As(err, &ve) || len(ve.Violations) != 1 || ve.Violations[0].Field != tc.field {
				t.Fatalf("got %v, want one violation on %s", err, tc.field)
			}
		})
	}
	valid := []struct {
		name    string
		kind    Kind
		f       Fields
		ceiling Duration
	}{
		{"everything in bounds", RecordingAutomatic, Fields{MinStorage: ptr(Days(90)), Retention: ret(Months(24)), PurchasedDays: ptr(90)}, DefaultCeiling},
		{"an SMS cap", SMS, Fields{Retention: &Retention{Unlimited: true}, Cap: &Cap{Limit: 5, Action: EvictOldest, Scope: PerUserFolder}}, DefaultCeiling},
		{"7 years under a 10-year ceiling", RecordingAutomatic, Fields{Retention: ret(Months(84))}, Months(120)},
		{"730 days under 24 months", RecordingAutomatic, Fields{Retention: ret(Days(730))}, DefaultCeiling},
	}
	for _, tc := range valid {
		if err := ValidateFields(tc.kind, tc.f, "", tc.ceiling); err != nil {
			t.Errorf("%s: refused: %v", tc.name, err)
		}
	}
	if _, err := ParseKind("telex"); err == nil {
		t.Fatal("unknown kind parsed")
	}
}
