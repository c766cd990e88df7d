package retention

import (
	"testing"
	"time"
)

func ptr[T any](v T) *T { return &v }

func TestPresetsCoverEveryKindAndDiffer(t *testing.T) {
	t.Parallel()
	for name, p := range Presets {
		for _, k := range Kinds {
			d, ok := p.Defaults[k]
			if !ok {
				t.Fatalf("preset %s lacks %s", name, k)
			}
			if !d.Retention.Unlimited && d.Retention.Days < d.MinStorageDays {
				t.Errorf("preset %s %s: retention %d < minimum %d", name, k, d.Retention.Days, d.MinStorageDays)
			}
		}
	}
	a, b := Presets["keep-90-days"].Defaults[RecordingAutomatic], Presets["guarantee-6-months"].Defaults[RecordingAutomatic]
	if a.MinStorageDays != 90 || a.Retention.Days != 90 || b.MinStorageDays != 183 || b.Retention.Days != 730 {
		t.Fatalf("recording presets: %+v / %+v", a, b)
	}
	if _, ok := Presets[DefaultPreset]; !ok {
		t.Fatal("default preset missing")
	}
}

func TestResolvePrecedence(t *testing.T) {
	t.Parallel()
	p := Presets["guarantee-6-months"]
	cases := []struct {
		name      string
		overrides []Override
		wantMin   int
		wantRet   Retention
		minFrom   Level
		retFrom   Level
		capFrom   Level
		wantCap   int64
	}{
		{"preset only", nil, 30, Retention{Unlimited: true}, LevelPreset, LevelPreset, LevelPreset, 5000},
		{"system overrides preset", []Override{{LevelSystem, Fields{MinStorageDays: ptr(40)}}}, 40, Retention{Unlimited: true}, LevelSystem, LevelPreset, LevelPreset, 5000},
		{"domain beats reseller, field by field",
			[]Override{
				{LevelDomain, Fields{MinStorageDays: ptr(60)}},
				{LevelReseller, Fields{MinStorageDays: ptr(50), Retention: &Retention{Days: 400}}},
			}, 60, Retention{Days: 400}, LevelDomain, LevelReseller, LevelPreset, 5000},
		{"user beats all",
			[]Override{
				{LevelUser, Fields{Retention: &Retention{Days: 90}, Cap: &Cap{Limit: 100, Action: EvictOldest, Scope: PerUserFolder}}},
				{LevelDomain, Fields{Retention: &Retention{Days: 365}}},
				{LevelSystem, Fields{Retention: &Retention{Days: 700}}},
			}, 30, Retention{Days: 90}, LevelPreset, LevelUser, LevelUser, 100},
		{"a level removes an inherited cap",
			[]Override{{LevelDomain, Fields{NoCap: true}}}, 30, Retention{Unlimited: true}, LevelPreset, LevelPreset, LevelDomain, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := Resolve(p, SMS, tc.overrides)
			if err != nil {
				t.Fatal(err)
			}
			capLimit := int64(0)
			if got.Cap != nil {
				capLimit = got.Cap.Limit
			}
			if got.MinStorageDays != tc.wantMin || got.Retention != tc.wantRet || capLimit != tc.wantCap ||
				got.MinStorageFrom != tc.minFrom || got.RetentionFrom != tc.retFrom || got.CapFrom != tc.capFrom {
				t.Fatalf("got %+v (cap %d), want min %d from %s, retention %+v from %s, cap %d from %s",
					got, capLimit, tc.wantMin, tc.minFrom, tc.wantRet, tc.retFrom, tc.wantCap, tc.capFrom)
			}
		})
	}
}

func TestPurchasedBlocks(t *testing.T) {
	t.Parallel()
	p := Presets["keep-90-days"]
	cases := []struct {
		name      string
		kind      Kind
		retention *Retention
		purchased int
		wantDays  int
		wantAdded int
		unlimited bool
	}{
		{"no purchase", RecordingAutomatic, nil, 0, 90, 0, false},
		{"one 90-day block", RecordingAutomatic, nil, 90, 180, 90, false},
		{"capped at two years", RecordingAutomatic, nil, 900, 730, 640, false},
		{"on-demand too", RecordingOnDemand, nil, 90, 180, 90, false},
		{"never for CDRs", CDR, nil, 90, 730, 0, false},
		{"a longer override is not shortened", RecordingAutomatic, &Retention{Days: 1000}, 90, 1000, 0, false},
		{"unlimited stays unlimited", RecordingAutomatic, &Retention{Unlimited: true}, 90, 0, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ov := []Override{{LevelDomain, Fields{Retention: tc.retention, PurchasedDays: ptr(tc.purchased)}}}
			got, err := Resolve(p, tc.kind, ov)
			if err != nil {
				t.Fatal(err)
			}
			if got.Retention.Days != tc.wantDays || got.PurchasedDays != tc.wantAdded || got.Retention.Unlimited != tc.unlimited {
				t.Fatalf("got %+v, want %d days (%d purchased), unlimited=%v", got, tc.wantDays, tc.wantAdded, tc.unlimited)
			}
		})
	}
}

func TestDates(t *testing.T) {
	t.Parallel()
	stored := time.Date(2026, 1, 31, 12, 0, 0, 0, time.UTC)
	p, err := Resolve(Presets["guarantee-6-months"], RecordingAutomatic, nil)
	if err != nil {
		t.Fatal(err)
	}
	cull, del := p.Dates(stored)
	if !cull.Equal(stored.AddDate(0, 0, 183)) || !del.Equal(stored.AddDate(0, 0, 730)) {
		t.Fatalf("dates %v %v", cull, del)
	}
	vm, _ := Resolve(Presets["guarantee-6-months"], Voicemail, nil)
	if _, del := vm.Dates(stored); !del.IsZero() {
		t.Fatalf("voicemail has a delete date %v, want none", del)
	}
}

func TestResolveUnknownKind(t *testing.T) {
	t.Parallel()
	if _, err := Resolve(Presets[DefaultPreset], Kind("telex"), nil); err == nil {
		t.Fatal("unknown kind resolved")
	}
}
