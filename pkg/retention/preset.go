package retention

import "fmt"

// Preset is a named set of system defaults the operator picks; tenants
// override it. Durations the brief gives in months are calendar months,
// those it gives in days are days.
type Preset struct {
	Name        string
	Description string
	Defaults    map[Kind]Policy
	// RecordingCeiling is the longest recording retention (the operator's;
	// DefaultCeiling when zero).
	RecordingCeiling Duration
}

func (p Preset) ceiling() Duration {
	if p.RecordingCeiling.IsZero() {
		return DefaultCeiling
	}
	return p.RecordingCeiling
}

// WithCeiling returns p with the operator's recording ceiling. A recording
// default longer than the ceiling is cut to it; a ceiling shorter than a
// recording minimum is an error.
func (p Preset) WithCeiling(c Duration) (Preset, error) {
	out := p
	out.RecordingCeiling = c
	out.Defaults = make(map[Kind]Policy, len(p.Defaults))
	for k, d := range p.Defaults {
		if k.IsRecording() {
			if !c.AtLeast(d.MinStorage) {
				return Preset{}, fmt.Errorf("recording ceiling %s is shorter than the %s minimum of %s in preset %s", c, k, d.MinStorage, p.Name)
			}
			if d.Retention.Unlimited || !c.AtLeast(d.Retention.Duration) {
				d.Retention = Retention{Duration: c}
			}
		}
		out.Defaults[k] = d
	}
	return out, nil
}

func days(n int) Retention   { return Retention{Duration: Days(n)} }
func months(n int) Retention { return Retention{Duration: Months(n)} }

var unlimited = Retention{Unlimited: true}

// shared holds the kinds both source platforms agree on.
func shared() map[Kind]Policy {
	return map[Kind]Policy{
		CDR:         {MinStorage: Months(24), Retention: months(24)},
		Voicemail:   {Retention: unlimited, Cap: &Cap{Limit: 500, Action: Refuse, Scope: PerBox}},
		FaxReceived: {Retention: unlimited, Cap: &Cap{Limit: 500, Action: Refuse, Scope: PerBox}},
		FaxSent:     {MinStorage: Days(30), Retention: days(30)},
		FaxOutbox:   {Retention: days(0)},
		SMS:         {MinStorage: Days(30), Retention: unlimited, Cap: &Cap{Limit: 5000, Action: EvictOldest, Scope: PerUserFolder}},
		Analytics:   {MinStorage: Months(3), Retention: months(3)},
		Backup:      {Retention: unlimited, Cap: &Cap{Limit: 7, Action: EvictOldest, Scope: PerBox}},
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
		Policy{MinStorage: Days(90), Retention: days(90)},
		Policy{MinStorage: Days(90), Retention: days(90)}),
	"guarantee-6-months": preset("guarantee-6-months",
		"automatic recordings guaranteed 6 months, on-demand 90 days, both kept up to 2 years unless culled under pressure; CDRs 24 months",
		Policy{MinStorage: Months(6), Retention: months(24)},
		Policy{MinStorage: Days(90), Retention: months(24)}),
}

// DefaultPreset is used until an operator picks one.
const DefaultPreset = "guarantee-6-months"
