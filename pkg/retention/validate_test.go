package retention

import (
	"errors"
	"testing"

	"github.com/callvault/callvault/pkg/apierr"
)

func TestValidateFields(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		kind  Kind
		f     Fields
		field string
	}{
		{"negative minimum", SMS, Fields{MinStorageDays: ptr(-1)}, "fields.min_storage_days"},
		{"absurd minimum", SMS, Fields{MinStorageDays: ptr(MaxDays + 1)}, "fields.min_storage_days"},
		{"negative retention", SMS, Fields{Retention: &Retention{Days: -5}}, "fields.retention_days"},
		{"absurd retention", SMS, Fields{Retention: &Retention{Days: 100000}}, "fields.retention_days"},
		{"cap without action", SMS, Fields{Cap: &Cap{Limit: 10, Scope: PerUserFolder}}, "fields.cap.action"},
		{"cap without scope", SMS, Fields{Cap: &Cap{Limit: 10, Action: Refuse}}, "fields.cap.scope"},
		{"cap of zero", SMS, Fields{Cap: &Cap{Limit: 0, Action: Refuse, Scope: PerBox}}, "fields.cap.limit"},
		{"cap and no cap", SMS, Fields{NoCap: true, Cap: &Cap{Limit: 1, Action: Refuse, Scope: PerBox}}, "fields.cap"},
		{"purchase for CDRs", CDR, Fields{PurchasedDays: ptr(90)}, "fields.purchased_days"},
		{"purchase past the ceiling", RecordingAutomatic, Fields{PurchasedDays: ptr(CeilingDays + 1)}, "fields.purchased_days"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := ValidateFields(tc.kind, tc.f, "fields.")
			var ve *apierr.ValidationError
			if !errors.As(err, &ve) || len(ve.Violations) != 1 || ve.Violations[0].Field != tc.field {
				t.Fatalf("got %v, want one violation on %s", err, tc.field)
			}
		})
	}
	if err := ValidateFields(RecordingAutomatic, Fields{MinStorageDays: ptr(90), Retention: &Retention{Unlimited: true}, PurchasedDays: ptr(90),
		Cap: &Cap{Limit: 5, Action: EvictOldest, Scope: PerUserFolder}}, ""); err != nil {
		t.Fatalf("valid fields refused: %v", err)
	}
}

func TestValidateEffectiveRefusesRetentionUnderMinimum(t *testing.T) {
	t.Parallel()
	p, err := Resolve(Presets["guarantee-6-months"], RecordingAutomatic, []Override{{LevelDomain, Fields{Retention: &Retention{Days: 100}}}})
	if err != nil {
		t.Fatal(err)
	}
	err = ValidateEffective(p, "override.fields.")
	var ve *apierr.ValidationError
	if !errors.As(err, &ve) || ve.Violations[0].Field != "override.fields.retention_days" {
		t.Fatalf("retention 100 < minimum 183 accepted: %v", err)
	}
	ok, _ := Resolve(Presets["guarantee-6-months"], RecordingAutomatic, []Override{{LevelDomain, Fields{Retention: &Retention{Days: 200}}}})
	if err := ValidateEffective(ok, ""); err != nil {
		t.Fatalf("retention 200 >= 183 refused: %v", err)
	}
	if _, err := ParseKind("telex"); err == nil {
		t.Fatal("unknown kind parsed")
	}
}
