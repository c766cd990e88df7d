package match

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// The domain brief's worked example: S (system), R1 (reseller r1), D1
// (domain a.example), D2 (domain b.example, disabled).
var example = []Config{
	{ID: "S", Level: LevelSystem, Enabled: true, Recordings: true},
	{ID: "R1", Level: LevelReseller, Match: "r1", Enabled: true, Recordings: true},
	{ID: "D1", Level: LevelDomain, Match: "a.example", Enabled: true, Recordings: true},
	{ID: "D2", Level: LevelDomain, Match: "b.example", Enabled: false, Recordings: true},
}

func TestBest(t *testing.T) {
	withoutS := example[1:]
	cdrOnlyDomain := []Config{{ID: "DC", Level: LevelDomain, Match: "a.example", Enabled: true, CDRs: true}, example[1]}
	for _, tc := range []struct {
		name    string
		configs []Config
		item    Item
		want    string // "" for none
		reason  []string
	}{
		{"a domain match beats the rest", example, Item{"r1", "a.example", KindRecording}, "D1", nil},
		{"a disabled domain match falls to its reseller", example, Item{"r1", "b.example", KindRecording}, "R1", nil},
		{"another reseller's domain goes to system", example, Item{"r2", "c.example", KindRecording}, "S", nil},
		{"a domain of r1 without its own goes to R1", example, Item{"r1", "d.example", KindRecording}, "R1", nil},
		{"no system: not archived, with why", withoutS, Item{"r2", "c.example", KindRecording}, "", []string{"c.example", "r2", "recordings"}},
		{"nothing configured", nil, Item{"r1", "a.example", KindRecording}, "", []string{"no enabled configuration"}},
		{"the reason names the level of what was disabled, not its name", example[3:], Item{"r1", "b.example", KindRecording}, "", []string{"disabled at domain level"}},
		{"a CDR-only domain config leaves recordings to the reseller", cdrOnlyDomain, Item{"r1", "a.example", KindRecording}, "R1", nil},
		{"and takes the CDRs", cdrOnlyDomain, Item{"r1", "a.example", KindCDR}, "DC", nil},
		{"a recordings-only system config takes no CDRs", example[:1], Item{"r9", "z.example", KindCDR}, "", []string{"CDRs"}},
		{"a domain match is by domain, not reseller", []Config{{ID: "X", Level: LevelDomain, Match: "r1", Enabled: true, Recordings: true}}, Item{"r1", "a.example", KindRecording}, "", nil},
		{"an empty match never matches", []Config{{ID: "X", Level: LevelReseller, Enabled: true, Recordings: true}}, Item{"", "a.example", KindRecording}, "", nil},
		{"two of one level: the lower id", []Config{
			{ID: "b", Level: LevelReseller, Match: "r1", Enabled: true, Recordings: true},
			{ID: "a", Level: LevelReseller, Match: "r1", Enabled: true, Recordings: true},
		}, Item{"r1", "a.example", KindRecording}, "a", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Best(tc.configs, tc.item)
			if tc.want == "" {
				if got.OK {
					t.Fatalf("chose %s, want none", got.Config.ID)
				}
				if got.Reason == "" {
					t.Fatal("no reason given for not archiving")
				}
				for _, w := range tc.reason {
					if !strings.Contains(got.Reason, w) {
						t.Errorf("reason %q does not say %q", got.Reason, w)
					}
				}
				return
			}
			if !got.OK || got.Config.ID != tc.want {
				t.Fatalf("chose %+v, want %s", got, tc.want)
			}
			if got.Reason != "" {
				t.Errorf("a choice carries a reason: %q", got.Reason)
			}
		})
	}
}

// TestBestIgnoresOrder: the answer is the same whatever order the
// configurations come in.
func TestBestIgnoresOrder(t *testing.T) {
	items := []Item{{"r1", "a.example", KindRecording}, {"r1", "b.example", KindRecording}, {"r2", "c.example", KindRecording}}
	want := make([]string, len(items))
	for i, it := range items {
		want[i] = Best(example, it).Config.ID
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		cs := append([]Config(nil), example...)
		r.Shuffle(len(cs), func(i, j int) { cs[i], cs[j] = cs[j], cs[i] })
		for i, it := range items {
			if got := Best(cs, it).Config.ID; got != want[i] {
				t.Fatalf("order %v: %+v went to %s, want %s", cs, it, got, want[i])
			}
		}
	}
}

// TestReasonNamesNoConfiguration: the reason is shown to the domain's
// users; it names levels, never another tenant's configuration.
func TestReasonNamesNoConfiguration(t *testing.T) {
	cs := []Config{
		{ID: "cfg-1", Name: "Reseller Secret Bucket", Level: LevelReseller, Match: "r1", Recordings: true},
		{ID: "cfg-2", Name: "Ops Archive", Level: LevelSystem, Recordings: true},
	}
	got := Best(cs, Item{"r1", "a.example", KindRecording})
	if got.OK {
		t.Fatal("a disabled configuration was chosen")
	}
	for _, leak := range []string{"cfg-1", "cfg-2", "Secret Bucket", "Ops Archive"} {
		if strings.Contains(got.Reason, leak) {
			t.Errorf("reason %q names %q", got.Reason, leak)
		}
	}
	if !strings.Contains(got.Reason, "reseller, system level") {
		t.Errorf("reason %q does not say which levels were disabled", got.Reason)
	}
}
