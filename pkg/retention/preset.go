package retention

// Preset is a named set of system defaults the operator picks; tenants
// override it. Months are converted at 30.4 days (6 months = 183 days,
// 24 months = 730 days).
type Preset struct {
	Name        string
	Description string
	Defaults    map[Kind]Policy
}

func days(n int) Retention { return Retention{Days: n} }

var unlimited = Retention{Unlimited: true}

// shared holds the kinds both source platforms agree on.
func shared() map[Kind]Policy {
	return map[Kind]Policy{
		CDR:         {MinStorageDays: 730, Retention: days(730)},
		Voicemail:   {MinStorageDays: 0, Retention: unlimited, Cap: &Cap{Limit: 500, Action: Refuse, Scope: PerBox}},
		FaxReceived: {MinStorageDays: 0, Retention: unlimited, Cap: &Cap{Limit: 500, Action: Refuse, Scope: PerBox}},
		FaxSent:     {MinStorageDays: 30, Retention: days(30)},
		FaxOutbox:   {MinStorageDays: 0, Retention: days(0)},
		SMS:         {MinStorageDays: 30, Retention: unlimited, Cap: &Cap{Limit: 5000, Action: EvictOldest, Scope: PerUserFolder}},
		Analytics:   {MinStorageDays: 90, Retention: days(90)},
		Backup:      {MinStorageDays: 0, Retention: unlimited, Cap: &Cap{Limit: 7, Action: EvictOldest, Scope: PerBox}},
	}
}

func preset(name, desc string, auto, onDemand Policy) Preset {
	d := shared()
	auto.Cap = &Cap{Limit: 100_000, Action: Refuse, Scope: PerAccountMonth}
	d[RecordingAutomatic], d[RecordingOnDemand] = auto, onDemand
	for k, p := range d {
		p.Kind, p.Preset = k, name
		d[k] = p
	}
	return Preset{Name: name, Description: desc, Defaults: d}
}

// Presets shipped with callvault. They differ on recordings: one keeps
// them 90 days by default (more can be bought, up to two years); the
// other guarantees six months for automatic and 90 days for on-demand
// recordings and keeps them up to two years, culling under pressure only.
var Presets = map[string]Preset{
	"keep-90-days": preset("keep-90-days",
		"recordings kept 90 days by default; purchased blocks extend that up to 2 years; CDRs 24 months",
		Policy{MinStorageDays: 90, Retention: days(90)},
		Policy{MinStorageDays: 90, Retention: days(90)}),
	"guarantee-6-months": preset("guarantee-6-months",
		"automatic recordings guaranteed 6 months, on-demand 90 days, both kept up to 2 years unless culled under pressure; CDRs 24 months",
		Policy{MinStorageDays: 183, Retention: days(730)},
		Policy{MinStorageDays: 90, Retention: days(730)}),
}

// DefaultPreset is used until an operator picks one.
const DefaultPreset = "guarantee-6-months"
