package httprange

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	t.Parallel()
	cases := []struct {
		header  string
		size    int64
		want    Range
		ok      bool
		unsatis bool
	}{
		{"", 100, Range{}, false, false},
		{"bytes=0-9", 100, Range{0, 9}, true, false},
		{"bytes=10-", 100, Range{10, 99}, true, false},
		{"bytes=-10", 100, Range{90, 99}, true, false},
		{"bytes=-1000", 100, Range{0, 99}, true, false},
		{"bytes=90-1000", 100, Range{90, 99}, true, false},
		{"bytes=99-99", 100, Range{99, 99}, true, false},
		{"bytes=100-", 100, Range{}, false, true},
		{"bytes=-0", 100, Range{}, false, true},
		{"bytes=5-1", 100, Range{}, false, false},
		{"bytes=0-1,5-6", 100, Range{}, false, false},
		{"items=0-1", 100, Range{}, false, false},
		{"bytes=a-b", 100, Range{}, false, false},
		{"bytes=0-0", 0, Range{}, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.header, func(t *testing.T) {
			t.Parallel()
			got, ok, err := Parse(tc.header, tc.size)
			if tc.unsatis != errors.Is(err, ErrUnsatisfiable) {
				t.Fatalf("err = %v, want unsatisfiable=%v", err, tc.unsatis)
			}
			if ok != tc.ok || got != tc.want {
				t.Fatalf("Parse(%q, %d) = %+v, %v; want %+v, %v", tc.header, tc.size, got, ok, tc.want, tc.ok)
			}
		})
	}
}
