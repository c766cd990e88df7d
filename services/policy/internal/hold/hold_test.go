package hold

import "testing"

func TestCovers(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		hold       Hold
		user, call string
		want       bool
	}{
		{"domain hold covers all", Hold{Domain: "a.example"}, "101", "c1", true},
		{"domain hold covers domain-wide artifacts", Hold{Domain: "a.example"}, "", "c1", true},
		{"user hold covers the user", Hold{Domain: "a.example", User: "101"}, "101", "c1", true},
		{"user hold spares others", Hold{Domain: "a.example", User: "101"}, "102", "c1", false},
		{"call hold covers the call", Hold{Domain: "a.example", CallID: "c1"}, "102", "c1", true},
		{"call hold spares other calls", Hold{Domain: "a.example", CallID: "c1"}, "101", "c2", false},
		{"user+call hold needs both", Hold{Domain: "a.example", User: "101", CallID: "c1"}, "102", "c1", false},
		{"user+call hold covers both", Hold{Domain: "a.example", User: "101", CallID: "c1"}, "101", "c1", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := tc.hold.Covers(tc.user, tc.call); got != tc.want {
				t.Fatalf("Covers(%q, %q) = %v, want %v", tc.user, tc.call, got, tc.want)
			}
		})
	}
}
