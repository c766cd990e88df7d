package retention

import (
	"testing"
	"time"
)

func ptr[T any](v T) *T { return &v }

func ret(d Duration) *Retention { return &Retention{Duration: d} }

func TestPresetsCoverEveryKindAndDiffer(t *testing.T) {
	t.Parallel()
	for name, p := range Presets {
		for _, k := range Kinds {
			d, ok := p.Defaults[k]
			if !ok {
				t.Fatalf("preset %s lacks %s", name, k)
			}
			if !d.Retention.Unlimited && !d.Retention.AtLeast(d.MinStorage) {
				t.Errorf("preset %s %s: retention %s < minimum %s", name, k, d.Retention.Duration, d.MinStorage)
			}
		}
	}
	a, b := Presets["keep-90-days"].Defaults[RecordingAutomatic], Presets["guarantee-6-months"].Defaults[RecordingAutomatic]
	if a.MinStorage != Days(90) || a.Retention.Duration != Days(90) || b.MinStorage != Months(6) || b.Retention.Duration != Months(24) {
		t.Fatalf("recording presets: %+v / %+v", a, b)
	}
	cdr := Presets[DefaultPreset].Defaults[CDR]
	if cdr.MinStorage != Months(24) || cdr.Retention.Duration != Months(24) || Presets[DefaultPreset].Defaults[Analytics].MinStorage != Months(3) {
		t.Fatalf("CDR and analytics are in months: %+v", cdr)
	}
	if _, ok := Presets[DefaultPreset]; !ok {
		t.Fatal("default preset missing")
	}
}

// TestCalendarDates: months are calendar months, days are days.
func TestCalendarDates(t *testing.T) {
	t.Parallel()
	day := func(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }
	cases := []struct {
		name  string
		d     Duration
		start time.Time
		want  time.Time
	}{
		{"6 months from 1 March end on 1 September", Months(6), day(2027, 3, 1), day(2027, 9, 1)},
		{"24 months from 1 March 2027 end on 1 March 2029", Months(24), day(2027, 3, 1), day(2029, 3, 1)},
		{"24 months across a leap day", Months(24), day(2028, 2, 29), day(2030, 3, 1)},
		{"3 months of analytics", Months(3), day(2027, 1, 15), day(2027, 4, 15)},
		{"90 days are days", Days(90), day(2027, 3, 1), day(2027, 5, 30)},
		{"30 days are days", Days(30), day(2027, 2, 1), day(2027, 3, 3)},
		{"months and days", Duration{Months: 1, Days: 1}, day(2027, 1, 31), day(2027, 3, 4)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := tc.d.From(tc.start); !got.Equal(tc.want) {
				t.Fatalf("%s from %s = %s, want %s", tc.d, tc.start.Format(time.DateOnly), got.Format(time.DateOnly), tc.want.Format(time.DateOnly))
			}
		})
	}
}

func TestAtLeast(t *testing.T) {
	t.Parallel()
	cases := []struct {
		a, b Duration
		want bool
	}{
		{Months(6), Days(180), true},
		{Months(6), Days(181), true},
		{Months(6), Days(182), false}, // 1 February to 1 August is 181 days
		{Months(6), Days(183), false},
		{Days(184), Months(6), true},
		{Days(183), Months(6), false},
		{Months(24), Days(730), true},
		{Months(24), Days(731), false},
		{Days(731), Months(24), true},
		{Days(730), Months(24), false}, // 1 March 2027 to 1 March 2029 is 731 days
		{Months(6), Months(6), true},
		{Months(6), Months(7), false},
		{Months(7), Months(6), true},
		{Duration{Months: 6, Days: 1}, Months(6), true},
		{Months(6), Duration{Months: 5, Days: 28}, true},
		{Months(6), Duration{Months: 5, Days: 29}, false},
		{Days(0), Days(0), true},
		{Months(1), Days(0), true},
	}
	for _, tc := range cases {
		if got := tc.a.AtLeast(tc.b); got != tc.want {
			t.Errorf("%s.AtLeast(%s) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

// TestMinimumCutoff: every artifact that started at or before the cutoff
// is past its minimum, and one a millisecond later is not, including where
// AddDate is not monotone (31 August + 6 months is 3 March).
func TestMinimumCutoff(t *testing.T) {
	t.Parallel()
	ats := []time.Time{
		time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2027, 3, 2, 12, 0, 0, 0, time.UTC),
		time.Date(2027, 3, 3, 0, 0, 0, 0, time.UTC),
		time.Date(2028, 2, 29, 23, 0, 0, 0, time.UTC),
		time.Date(2027, 10, 31, 5, 0, 0, 0, time.UTC),
	}
	for _, d := range []Duration{Months(6), Months(1), Days(30), Months(24), {Months: 2, Days: 3}, {}} {
		for _, at := range ats {
			p := Policy{MinStorage: d}
			cut := p.MinimumCutoff(at)
			for s := cut.Add(-8 * 24 * time.Hour); !s.After(cut); s = s.Add(time.Hour) {
				if p.CullableAt(s).After(at) {
					t.Fatalf("%s at %s: started %s (before the cutoff %s) is inside its minimum until %s", d, at, s, cut, p.CullableAt(s))
				}
			}
			if p.CullableAt(cut).After(at) {
				t.Fatalf("%s at %s: the cutoff %s itself is inside its minimum", d, at, cut)
			}
			if next := cut.Add(time.Millisecond); !p.CullableAt(next).After(at) {
				t.Fatalf("%s at %s: cutoff %s is not the latest (%s is also past)", d, at, cut, next)
			}
		}
	}
}

func TestResolvePrecedence(t *testing.T) {
	t.Parallel()
	p := Presets["guarantee-6-months"]
	unl := Retention{Unlimited: true}
	cases := []struct {
		name      string
		overrides []Override
		wantMin   Duration
		wantRet   Retention
		minFrom   Level
		retFrom   Level
		capFrom   Level
		wantCap   int64
	}{
		{"preset only", nil, Days(30), unl, LevelPreset, LevelPreset, LevelPreset, 5000},
		{"system overrides preset", []Override{{LevelSystem, Fields{MinStorage: ptr(Days(40))}}}, Days(40), unl, LevelSystem, LevelPreset, LevelPreset, 5000},
		{"domain beats reseller, field by field",
			[]Override{
				{LevelDomain, Fields{MinStorage: ptr(Days(60))}},
				{LevelReseller, Fields{MinStorage: ptr(Days(50)), Retention: ret(Days(400))}},
			}, Days(60), *ret(Days(400)), LevelDomain, LevelReseller, LevelPreset, 5000},
		{"user beats all",
			[]Override{
				{LevelUser, Fields{Retention: ret(Days(90)), Cap: &Cap{Limit: 100, Action: EvictOldest, Scope: PerUserFolder}}},
				{LevelDomain, Fields{Retention: ret(Days(365))}},
				{LevelSystem, Fields{Retention: ret(Days(700))}},
			}, Days(30), *ret(Days(90)), LevelPreset, LevelUser, LevelUser, 100},
		{"a level removes an inherited cap",
			[]Override{{LevelDomain, Fields{NoCap: true}}}, Days(30), unl, LevelPreset, LevelPreset, LevelDomain, 0},
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
			if got.MinStorage != tc.wantMin || got.Retention != tc.wantRet || capLimit != tc.wantCap ||
				got.MinStorageFrom != tc.minFrom || got.RetentionFrom != tc.retFrom || got.CapFrom != tc.capFrom || got.RetentionClamped {
				t.Fatalf("got %+v (cap %d), want min %s from %s, retention %+v from %s, cap %d from %s",
					got, capLimit, tc.wantMin, tc.minFrom, tc.wantRet, tc.retFrom, tc.wantCap, tc.capFrom)
			}
		})
	}
}

// TestResolveClampsRetentionToTheMinimum: overrides stored before the
// check (a reseller minimum of 400 days over a domain retention of 365)
// never resolve to a deletion inside the guarantee.
func TestResolveClampsRetentionToTheMinimum(t *testing.T) {
	t.Parallel()
	got, err := Resolve(Presets[DefaultPreset], RecordingAutomatic, []Override{
		{LevelReseller, Fields{MinStorage: ptr(Days(400))}},
		{LevelDomain, Fields{Retention: ret(Days(365))}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !got.RetentionClamped || got.Retention.Duration != Days(400) || got.RetentionFrom != LevelReseller || Conflict(got) == "" {
		t.Fatalf("not clamped: %+v", got)
	}
	stored := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)
	cull, del := got.Dates(stored)
	if del.Before(cull) || !cull.Equal(stored.AddDate(0, 0, 400)) {
		t.Fatalf("dates %s, %s", cull, del)
	}
	// Mixed units: 183 days of retention over a 6-month minimum is short
	// for some starts, so it is clamped too.
	mixed, _ := Resolve(Presets[DefaultPreset], RecordingAutomatic, []Override{{LevelDomain, Fields{Retention: ret(Days(183))}}})
	if !mixed.RetentionClamped || mixed.Retention.Duration != Months(6) {
		t.Fatalf("183 days over 6 months: %+v", mixed)
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
		ceiling   Duration
		wantRet   Retention
		wantAdded int
		capped    bool
	}{
		{"no purchase", RecordingAutomatic, nil, 0, Duration{}, *ret(Days(90)), 0, false},
		{"one 90-day block", RecordingAutomatic, nil, 90, Duration{}, *ret(Days(180)), 90, false},
		{"capped at the two-year ceiling", RecordingAutomatic, nil, 900, Duration{}, *ret(Months(24)), 900, true},
		{"an operator's 10-year ceiling", RecordingAutomatic, nil, 900, Months(120), *ret(Days(990)), 900, false},
		{"on-demand too", RecordingOnDemand, nil, 90, Duration{}, *ret(Days(180)), 90, false},
		{"never for CDRs", CDR, nil, 90, Duration{}, *ret(Months(24)), 0, false},
		{"a longer override is not shortened", RecordingAutomatic, ret(Days(1000)), 90, Duration{}, *ret(Days(1000)), 0, false},
		{"unlimited stays unlimited", RecordingAutomatic, &Retention{Unlimited: true}, 90, Duration{}, Retention{Unlimited: true}, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pr := p
			pr.RecordingCeiling = tc.ceiling
			ov := []Override{{LevelDomain, Fields{Retention: tc.retention, PurchasedDays: ptr(tc.purchased)}}}
			got, err := Resolve(pr, tc.kind, ov)
			if err != nil {
				t.Fatal(err)
			}
			if got.Retention != tc.wantRet || got.PurchasedDays != tc.wantAdded || got.PurchaseCapped != tc.capped {
				t.Fatalf("got %+v, want %+v (%d purchased, capped %v)", got, tc.wantRet, tc.wantAdded, tc.capped)
			}
		})
	}
}

func TestWithCeiling(t *testing.T) {
	t.Parallel()
	p, err := Presets["guarantee-6-months"].WithCeiling(Months(12))
	if err != nil {
		t.Fatal(err)
	}
	if r := p.Defaults[RecordingAutomatic].Retention.Duration; r != Months(12) {
		t.Fatalf("a 12-month ceiling leaves the recording default at %s", r)
	}
	if r := Presets["guarantee-6-months"].Defaults[RecordingAutomatic].Retention.Duration; r != Months(24) {
		t.Fatalf("WithCeiling changed the shared preset: %s", r)
	}
	if _, err := Presets["guarantee-6-months"].WithCeiling(Months(5)); err == nil {
		t.Fatal("a ceiling under the 6-month minimum accepted")
	}
}

func TestDates(t *testing.T) {
	t.Parallel()
	stored := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	p, err := Resolve(Presets["guarantee-6-months"], RecordingAutomatic, nil)
	if err != nil {
		t.Fatal(err)
	}
	cull, del := p.Dates(stored)
	if !cull.Equal(time.Date(2027, 9, 1, 12, 0, 0, 0, time.UTC)) || !del.Equal(time.Date(2029, 3, 1, 12, 0, 0, 0, time.UTC)) {
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

// TestFieldsReadOldJSON: overrides stored with MinStorageDays and
// {"Days": n} retention still read.
func TestFieldsReadOldJSON(t *testing.T) {
	t.Parallel()
	var f Fields
	if err := f.UnmarshalJSON([]byte(`{"MinStorageDays":200,"Retention":{"Days":400,"Unlimited":false},"Cap":null,"NoCap":false,"PurchasedDays":30}`)); err != nil {
		t.Fatal(err)
	}
	if f.MinStorage == nil || *f.MinStorage != Days(200) || f.Retention == nil || f.Retention.Duration != Days(400) || *f.PurchasedDays != 30 {
		t.Fatalf("old JSON read as %+v", f)
	}
}
