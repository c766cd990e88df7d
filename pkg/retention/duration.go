package retention

import (
	"fmt"
	"strings"
	"sync"
	"time"
)

// Duration is a calendar duration: whole months plus days. Where the brief
// says months it means calendar months, so 6 months from 1 March ends on
// 1 September and 24 months from 1 March 2027 on 1 March 2029; dates are
// computed with time.AddDate, never with an average month length.
type Duration struct {
	Months int `json:"Months,omitempty"`
	Days   int `json:"Days,omitempty"`
}

// Months returns a duration of n calendar months.
func Months(n int) Duration { return Duration{Months: n} }

// Days returns a duration of n days.
func Days(n int) Duration { return Duration{Days: n} }

// From returns t plus d.
func (d Duration) From(t time.Time) time.Time { return t.AddDate(0, d.Months, d.Days) }

// Before returns t minus d.
func (d Duration) Before(t time.Time) time.Time { return t.AddDate(0, -d.Months, -d.Days) }

// IsZero reports whether d is no time at all.
func (d Duration) IsZero() bool { return d.Months == 0 && d.Days == 0 }

// Plus adds two durations field by field (exact: AddDate is linear in
// each field).
func (d Duration) Plus(o Duration) Duration {
	return Duration{Months: d.Months + o.Months, Days: d.Days + o.Days}
}

func (d Duration) String() string {
	var parts []string
	plural := func(n int, unit string) string {
		if n == 1 || n == -1 {
			return fmt.Sprintf("%d %s", n, unit)
		}
		return fmt.Sprintf("%d %ss", n, unit)
	}
	if d.Months != 0 {
		parts = append(parts, plural(d.Months, "month"))
	}
	if d.Days != 0 || d.Months == 0 {
		parts = append(parts, plural(d.Days, "day"))
	}
	return strings.Join(parts, " ")
}

// AtLeast reports whether d is at least as long as o from every start
// date: 6 months is at least 180 days, but not at least 183 (1 September
// to 1 March is 181 days), and 24 months is at least 730 days but not 731.
// A guarantee compared this way holds for every artifact.
func (d Duration) AtLeast(o Duration) bool {
	// t+{m,d} is the first of the month m months after t's, plus t's day
	// of the month minus one, plus d days; so the difference of two
	// durations from the same t is the span of Δm whole calendar months
	// plus Δd days.
	dm, dd := d.Months-o.Months, d.Days-o.Days
	if dm >= 0 {
		shortest, _ := monthSpan(dm)
		return shortest+dd >= 0
	}
	_, longest := monthSpan(-dm)
	return dd-longest >= 0
}

// cycleMonths is the Gregorian calendar's full cycle: 400 years.
const cycleMonths = 4800

var spans sync.Map // int -> [2]int

// monthSpan returns the fewest and the most days k consecutive calendar
// months can span.
func monthSpan(k int) (shortest, longest int) {
	if k == 0 {
		return 0, 0
	}
	if v, ok := spans.Load(k); ok {
		s := v.([2]int)
		return s[0], s[1]
	}
	// prefix[i] = days from January 2000 to the first of month i.
	prefix := make([]int, cycleMonths+k+1)
	for i := 1; i < len(prefix); i++ {
		y, m := 2000+(i-1)/12, time.Month((i-1)%12+1)
		prefix[i] = prefix[i-1] + daysIn(y, m)
	}
	shortest, longest = prefix[k], prefix[k]
	for i := 1; i < cycleMonths; i++ {
		n := prefix[i+k] - prefix[i]
		shortest, longest = min(shortest, n), max(longest, n)
	}
	spans.Store(k, [2]int{shortest, longest})
	return shortest, longest
}

func daysIn(y int, m time.Month) int {
	return time.Date(y, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// startCutoff returns the latest start time whose d has fully passed at
// at: every artifact that started at or before it is past d by at. AddDate
// is not monotone across month ends (31 August + 6 months is 3 March, 1
// September + 6 months is 1 March), so the cutoff is found month by
// month: within one month, start + d is start plus a constant.
func (d Duration) startCutoff(at time.Time) time.Time {
	if d.IsZero() {
		return at
	}
	at = at.UTC()
	guess := d.Before(at)
	first := time.Date(guess.Year(), guess.Month(), 1, 0, 0, 0, 0, time.UTC)
	cutoff := first.AddDate(0, 3, 0).Add(-time.Nanosecond)
	for i := -2; i <= 2; i++ {
		start, end := first.AddDate(0, i, 0), first.AddDate(0, i+1, 0)
		offset := d.From(start).Sub(start)
		// A start s in [start, end) is past d at "at" iff s <= at-offset.
		x := at.Add(-offset)
		switch {
		case !x.Before(end):
			continue // the whole month is past d
		case x.Before(start):
			x = start.Add(-time.Nanosecond) // none of this month is
		}
		if x.Before(cutoff) {
			cutoff = x
		}
	}
	return cutoff
}
