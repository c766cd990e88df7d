// Package tenant validates the names of the tenant hierarchy (reseller >
// domain > user) and artifact ids. Every one of them ends up inside Redis
// keys and object keys, so the rules are strict: no separators, no hash-tag
// braces, no path elements.
package tenant

import (
	"fmt"
	"regexp"
	"strings"
)

var (
	domainRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$`)
	idRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
)

// CheckDomain reports why d is not a valid domain name, or nil.
func CheckDomain(d string) error {
	switch {
	case d == "":
		return fmt.Errorf("is required")
	case len(d) > 253:
		return fmt.Errorf("must be at most 253 characters")
	case !domainRE.MatchString(d):
		return fmt.Errorf("must be a lower-case DNS name such as a.example")
	}
	return nil
}

// CheckName validates a reseller or user name.
func CheckName(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("is required")
	case !nameRE.MatchString(s) || strings.Contains(s, ".."):
		return fmt.Errorf("must be 1-64 of [A-Za-z0-9._@+-], starting with a letter or digit")
	}
	return nil
}

// CheckID validates an artifact id.
func CheckID(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("is required")
	case !idRE.MatchString(s) || strings.Contains(s, ".."):
		return fmt.Errorf("must be 1-128 of [A-Za-z0-9._-], starting with a letter or digit")
	}
	return nil
}

// CheckCallID validates a SIP-style call id: printable ASCII, no spaces.
func CheckCallID(s string) error {
	if s == "" {
		return fmt.Errorf("is required")
	}
	if len(s) > 256 {
		return fmt.Errorf("must be at most 256 characters")
	}
	for _, c := range s {
		if c <= ' ' || c > '~' {
			return fmt.Errorf("must be printable ASCII without spaces")
		}
	}
	return nil
}
