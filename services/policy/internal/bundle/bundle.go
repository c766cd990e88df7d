// Package bundle is the storage bundle catalogue and the round-up strategy
// that moves existing PBXs onto it. The catalogue is data (catalogue.json,
// replaceable at start); the decisions are pure functions.
package bundle

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
)

// GB is the unit capacities are sold in (decimal, as storage is sold).
const GB = int64(1_000_000_000)

// Bundle is one entry of the catalogue.
type Bundle struct {
	Name                     string `json:"name"`
	CapacityGB               int64  `json:"capacity_gb"`
	AnalyticsRetentionMonths int    `json:"analytics_retention_months"`
	StaticIPs                int    `json:"static_ips"`
	// MaxNetworkPBXs is the largest multi-PBX network the bundle may serve:
	// 1 means standalone PBXs only, 0 means no limit.
	MaxNetworkPBXs int `json:"max_network_pbxs"`
	// RoundUpTarget marks the bundles existing licence holders are moved to.
	RoundUpTarget bool `json:"round_up_target"`
}

// CapacityBytes is the bundle's capacity in bytes.
func (b Bundle) CapacityBytes() int64 { return b.CapacityGB * GB }

// AllowsNetwork reports whether a network of n PBXs may use the bundle.
func (b Bundle) AllowsNetwork(n int) bool {
	return n <= 1 || b.MaxNetworkPBXs == 0 || n <= b.MaxNetworkPBXs
}

// Catalogue is every bundle on sale plus the no-licence default.
type Catalogue struct {
	// LicenceGB is what one legacy storage licence stood for.
	LicenceGB int64    `json:"licence_gb"`
	Default   Bundle   `json:"default"`
	Bundles   []Bundle `json:"bundles"`
}

//go:embed catalogue.json
var builtin []byte

// Builtin returns the catalogue shipped with callvault.
func Builtin() Catalogue {
	c, err := Parse(bytes.NewReader(builtin))
	if err != nil {
		panic(fmt.Sprintf("bundle: the shipped catalogue is invalid: %v", err)) // caught by the tests
	}
	return c
}

// Parse reads and validates a catalogue; bundles are ordered by capacity.
func Parse(r io.Reader) (Catalogue, error) {
	var c Catalogue
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Catalogue{}, fmt.Errorf("bundle catalogue: %w", err)
	}
	if c.LicenceGB <= 0 {
		return Catalogue{}, errors.New("bundle catalogue: licence_gb must be positive")
	}
	if c.Default.CapacityGB <= 0 || c.Default.Name == "" {
		return Catalogue{}, errors.New("bundle catalogue: default needs a name and a positive capacity")
	}
	seen := map[string]bool{c.Default.Name: true}
	for _, b := range c.Bundles {
		switch {
		case b.Name == "" || seen[b.Name]:
			return Catalogue{}, fmt.Errorf("bundle catalogue: bundle name %q is empty or repeated", b.Name)
		case b.CapacityGB <= 0:
			return Catalogue{}, fmt.Errorf("bundle catalogue: %s: capacity_gb must be positive", b.Name)
		case b.MaxNetworkPBXs < 0 || b.AnalyticsRetentionMonths < 0 || b.StaticIPs < 0:
			return Catalogue{}, fmt.Errorf("bundle catalogue: %s: negative limit", b.Name)
		}
		seen[b.Name] = true
	}
	slices.SortStableFunc(c.Bundles, func(a, b Bundle) int { return int(a.CapacityGB - b.CapacityGB) })
	return c, nil
}

// Lookup finds a bundle (or the default) by name.
func (c Catalogue) Lookup(name string) (Bundle, bool) {
	if name == c.Default.Name {
		return c.Default, true
	}
	for _, b := range c.Bundles {
		if b.Name == name {
			return b, true
		}
	}
	return Bundle{}, false
}

// ErrNoBundle means no bundle in the catalogue covers the need.
var ErrNoBundle = errors.New("no bundle covers the need")

// RoundUp places an existing PBX (or network) on the smallest bundle that
// covers it, and says why. No licences means the default, whatever the
// network's size. A network is placed by its PBX count among the bundles
// that may serve a network that large; a standalone PBX by the capacity
// its licences stood for. Only round-up targets are offered.
func (c Catalogue) RoundUp(pbxCount, licences int) (Bundle, string, error) {
	switch {
	case pbxCount < 1:
		return Bundle{}, "", errors.New("pbx_count must be at least 1")
	case licences < 0:
		return Bundle{}, "", errors.New("storage_licences must not be negative")
	case licences == 0:
		return c.Default, fmt.Sprintf("no storage licences: the %d GB default", c.Default.CapacityGB), nil
	}
	need := int64(licences) * c.LicenceGB
	for _, b := range c.Bundles {
		if !b.RoundUpTarget {
			continue
		}
		if pbxCount > 1 {
			if b.MaxNetworkPBXs > 1 || b.MaxNetworkPBXs == 0 {
				if b.AllowsNetwork(pbxCount) {
					return b, fmt.Sprintf("network of %d PBXs: smallest bundle for networks of that size", pbxCount), nil
				}
			}
			continue
		}
		if b.CapacityGB >= need {
			return b, fmt.Sprintf("standalone PBX with %d licences (%d GB): smallest bundle that covers it", licences, need), nil
		}
	}
	return Bundle{}, "", fmt.Errorf("%w: %d PBXs, %d licences", ErrNoBundle, pbxCount, licences)
}
