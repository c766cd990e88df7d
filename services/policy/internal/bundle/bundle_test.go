package bundle

import (
	"errors"
	"strings"
	"testing"
)

func TestRoundUpSeedExamples(t *testing.T) {
	t.Parallel()
	c := Builtin()
	cases := []struct {
		name     string
		pbxs     int
		licences int
		want     string
	}{
		{"network of 4 PBXs", 4, 3, "CDS-50"},
		{"network of 5 PBXs", 5, 1, "CDS-50"},
		{"network of 6 PBXs", 6, 1, "CDS-500"},
		{"network of 2 never gets CDS-10", 2, 1, "CDS-50"},
		{"standalone, 1 licence", 1, 1, "CDS-50"},
		{"standalone, 3 licences", 1, 3, "CDS-50"},
		{"standalone, 4 licences", 1, 4, "CDS-50"},
		{"standalone, 5 licences", 1, 5, "CDS-50"},
		{"standalone, 6 licences", 1, 6, "CDS-500"},
		{"standalone, 50 licences", 1, 50, "CDS-500"},
		{"standalone, 51 licences", 1, 51, "CDS-5000"},
		{"standalone, no licences", 1, 0, "default"},
		{"network, no licences", 4, 0, "default"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, why, err := c.RoundUp(tc.pbxs, tc.licences)
			if err != nil {
				t.Fatal(err)
			}
			if b.Name != tc.want || why == "" {
				t.Fatalf("RoundUp(%d, %d) = %s (%q), want %s", tc.pbxs, tc.licences, b.Name, why, tc.want)
			}
			if !b.AllowsNetwork(tc.pbxs) {
				t.Fatalf("%s does not allow a network of %d", b.Name, tc.pbxs)
			}
		})
	}
}

func TestRoundUpRefusesBadInput(t *testing.T) {
	t.Parallel()
	c := Builtin()
	if _, _, err := c.RoundUp(0, 1); err == nil {
		t.Error("pbx_count 0 accepted")
	}
	if _, _, err := c.RoundUp(1, -1); err == nil {
		t.Error("negative licences accepted")
	}
	if _, _, err := c.RoundUp(1, 501); !errors.Is(err, ErrNoBundle) {
		t.Errorf("501 licences: %v, want ErrNoBundle", err)
	}
}

func TestBuiltinCatalogue(t *testing.T) {
	t.Parallel()
	c := Builtin()
	want := map[string]struct {
		gb     int64
		months int
		net    int
	}{
		"default":  {5, 3, 0},
		"CDS-10":   {10, 12, 1},
		"CDS-50":   {50, 60, 5},
		"CDS-500":  {500, 120, 0},
		"CDS-5000": {5000, 120, 0},
	}
	for name, w := range want {
		b, ok := c.Lookup(name)
		if !ok || b.CapacityGB != w.gb || b.AnalyticsRetentionMonths != w.months || b.MaxNetworkPBXs != w.net {
			t.Errorf("%s = %+v (found %v), want %d GB, %d months, network %d", name, b, ok, w.gb, w.months, w.net)
		}
	}
	if b, _ := c.Lookup("CDS-10"); b.AllowsNetwork(2) {
		t.Error("CDS-10 must be standalone only")
	}
	if _, ok := c.Lookup("CDS-7"); ok {
		t.Error("unknown bundle found")
	}
}

func TestParseRejectsBadCatalogues(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"unknown field":  `{"licence_gb":10,"default":{"name":"d","capacity_gb":5},"bundles":[],"extra":1}`,
		"no licence":     `{"default":{"name":"d","capacity_gb":5},"bundles":[]}`,
		"no default":     `{"licence_gb":10,"bundles":[]}`,
		"repeated name":  `{"licence_gb":10,"default":{"name":"d","capacity_gb":5},"bundles":[{"name":"A","capacity_gb":1},{"name":"A","capacity_gb":2}]}`,
		"zero capacity":  `{"licence_gb":10,"default":{"name":"d","capacity_gb":5},"bundles":[{"name":"A","capacity_gb":0}]}`,
		"negative limit": `{"licence_gb":10,"default":{"name":"d","capacity_gb":5},"bundles":[{"name":"A","capacity_gb":1,"max_network_pbxs":-1}]}`,
	}
	for name, doc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, err := Parse(strings.NewReader(doc)); err == nil {
				t.Fatalf("accepted %s", doc)
			}
		})
	}
}
