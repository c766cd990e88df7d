// Package match picks the one remote storage configuration an artifact is
// archived to: the enabled domain match, else the enabled reseller match,
// else the enabled system configuration, else none. It is pure: the
// router feeds it the configurations it holds and records the answer.
package match

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Level is which artifacts a configuration takes.
type Level int

// The levels, most specific last.
const (
	LevelSystem Level = iota + 1
	LevelReseller
	LevelDomain
)

func (l Level) String() string {
	switch l {
	case LevelSystem:
		return "system"
	case LevelReseller:
		return "reseller"
	case LevelDomain:
		return "domain"
	default:
		return fmt.Sprintf("level(%d)", int(l))
	}
}

// Kind is what is sent.
type Kind int

// The kinds a configuration can send.
const (
	KindRecording Kind = iota + 1
	KindCDR
)

func (k Kind) String() string {
	if k == KindCDR {
		return "CDRs"
	}
	return "recordings"
}

// Config is what matching needs of a configuration.
type Config struct {
	ID      string
	Name    string
	Level   Level
	Match   string // reseller id or domain; empty at system level
	Enabled bool
	// What the configuration takes.
	Recordings bool
	CDRs       bool
}

func (c Config) takes(k Kind) bool {
	if k == KindCDR {
		return c.CDRs
	}
	return c.Recordings
}

// Item is the artifact to place.
type Item struct {
	Reseller string
	Domain   string
	Kind     Kind
}

// Result is the choice, or the reason there is none.
type Result struct {
	Config Config
	OK     bool
	// Reason says why nothing was chosen ("not archived"); empty when OK.
	Reason string
}

// Best returns the single configuration it is archived to. A disabled
// configuration is skipped; an enabled one is chosen whatever its status,
// so a failing target keeps its work instead of passing it to another
// level. A configuration that does not take the item's kind does not
// match it. Two enabled configurations of one level and match are refused
// when made; should a history hold two, the lower id wins, so the answer
// never depends on the order of the input.
func Best(configs []Config, it Item) Result {
	var best *Config
	var skipped []string
	for i := range configs {
		c := &configs[i]
		if !c.takes(it.Kind) || !c.matches(it) {
			continue
		}
		if !c.Enabled {
			skipped = append(skipped, c.Level.String())
			continue
		}
		if best == nil || c.Level > best.Level || (c.Level == best.Level && c.ID < best.ID) {
			best = c
		}
	}
	if best != nil {
		return Result{Config: *best, OK: true}
	}
	reason := fmt.Sprintf("no enabled configuration takes %s of domain %s, reseller %s or the system", it.Kind, it.Domain, it.Reseller)
	if len(skipped) > 0 {
		// The levels only: the reason is shown to the domain's users, who
		// need not learn other tenants' configuration names.
		sort.Strings(skipped)
		reason += "; disabled at " + strings.Join(slices.Compact(skipped), ", ") + " level"
	}
	return Result{Reason: reason}
}

func (c *Config) matches(it Item) bool {
	switch c.Level {
	case LevelSystem:
		return true
	case LevelReseller:
		return c.Match != "" && c.Match == it.Reseller
	case LevelDomain:
		return c.Match != "" && c.Match == it.Domain
	default:
		return false
	}
}
