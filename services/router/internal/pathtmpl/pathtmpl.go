// Package pathtmpl parses and renders the object path template of an
// archive configuration, e.g. "{domain}/{yyyy}/{mm}/{dd}/{recording_id}.{ext}".
// A template is checked when the configuration is saved (no "..", no
// absolute path, no unknown field, a recording id in it), and every value
// is escaped when it is rendered, so no input reaches outside the
// configuration's prefix.
package pathtmpl

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// Default is the template of a configuration that names none.
const Default = "{domain}/{yyyy}/{mm}/{dd}/{call_id}/{recording_id}.{ext}"

// MaxLen bounds a template.
const MaxLen = 512

// Fields a template may name.
var Fields = []string{"reseller", "domain", "user", "call_id", "recording_id", "yyyy", "mm", "dd", "ext"}

// Template is a parsed template.
type Template struct {
	src   string
	parts []part
}

type part struct {
	lit   string
	field string // set for a field, lit empty
}

// Values fill a template.
type Values struct {
	Reseller, Domain, User, CallID, RecordingID string
	// Time gives yyyy, mm and dd (UTC).
	Time time.Time
	// Ext is the file extension without the dot.
	Ext string
}

// Parse checks src and returns the template; the error says what is wrong.
func Parse(src string) (*Template, error) {
	switch {
	case src == "":
		return nil, fmt.Errorf("is required")
	case len(src) > MaxLen:
		return nil, fmt.Errorf("must be at most %d characters", MaxLen)
	case strings.HasPrefix(src, "/"):
		return nil, fmt.Errorf("must be relative: %q starts with /", src)
	case strings.HasSuffix(src, "/"):
		return nil, fmt.Errorf("must name an object, not end with /")
	}
	t := &Template{src: src}
	rest := src
	for rest != "" {
		i := strings.IndexAny(rest, "{}")
		if i < 0 {
			t.parts = append(t.parts, part{lit: rest})
			break
		}
		if rest[i] == '}' {
			return nil, fmt.Errorf("has a } without its {")
		}
		if i > 0 {
			t.parts = append(t.parts, part{lit: rest[:i]})
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return nil, fmt.Errorf("has a { without its }")
		}
		name := rest[i+1 : i+j]
		if !known(name) {
			return nil, fmt.Errorf("names unknown field {%s}; the fields are %s", name, strings.Join(braced(), ", "))
		}
		t.parts = append(t.parts, part{field: name})
		rest = rest[i+j+1:]
	}
	for _, p := range t.parts {
		for _, c := range p.lit {
			if !safeLiteral(c) {
				return nil, fmt.Errorf("has %q: literal text may hold only letters, digits and . _ - /", c)
			}
		}
	}
	hasID := false
	for _, seg := range strings.Split(src, "/") {
		switch seg {
		case "":
			return nil, fmt.Errorf("has an empty path segment (//)")
		case ".", "..":
			return nil, fmt.Errorf("must not contain %q segments", seg)
		}
		if strings.Contains(seg, "{recording_id}") {
			hasID = true
		}
	}
	if !hasID {
		return nil, fmt.Errorf("must contain {recording_id}: without it two recordings would map to one object")
	}
	// In the segment of {recording_id} no other field but {ext} (from a
	// fixed set): "{call_id}_{recording_id}" renders call c1 recording
	// leg_2 and call c1_leg recording 2 alike. Values cannot hold "/", so
	// fields in other segments never run into it.
	for _, seg := range strings.Split(src, "/") {
		if !strings.Contains(seg, "{recording_id}") {
			continue
		}
		rest := strings.ReplaceAll(strings.ReplaceAll(seg, "{recording_id}", ""), "{ext}", "")
		if strings.Contains(rest, "{") {
			return nil, fmt.Errorf("must give {recording_id} a path segment of its own (with {ext} and fixed text only): other fields beside it can render two recordings alike")
		}
	}
	return t, nil
}

// String is the source text.
func (t *Template) String() string { return t.src }

// Render fills the template. Each value is escaped so it stays inside its
// own path segment: "/" and every byte outside [A-Za-z0-9._@+-] become
// %XX, a value of "." or ".." is escaped whole, and an empty value is "_".
// An escaped value longer than MaxValueLen keeps its first bytes and ends
// in "~" and 16 hex digits of its SHA-256, so it stays distinct and short
// enough for a file name.
func (t *Template) Render(v Values) string {
	var b strings.Builder
	at := v.Time.UTC()
	for _, p := range t.parts {
		if p.field == "" {
			b.WriteString(p.lit)
			continue
		}
		var s string
		switch p.field {
		case "reseller":
			s = escape(v.Reseller)
		case "domain":
			s = escape(v.Domain)
		case "user":
			s = escape(v.User)
		case "call_id":
			s = escape(v.CallID)
		case "recording_id":
			s = escape(v.RecordingID)
		case "ext":
			s = escape(v.Ext)
		case "yyyy":
			s = fmt.Sprintf("%04d", at.Year())
		case "mm":
			s = fmt.Sprintf("%02d", int(at.Month()))
		case "dd":
			s = fmt.Sprintf("%02d", at.Day())
		}
		b.WriteString(s)
	}
	return b.String()
}

// MaxValueLen bounds one rendered value (a SIP call id may be 256
// characters, more once escaped; a file name holds 255 bytes).
const MaxValueLen = 120

func escape(s string) string {
	e := escapeAll(s)
	if len(e) <= MaxValueLen {
		return e
	}
	cut := MaxValueLen - 17
	// Never cut inside a %XX.
	if i := strings.LastIndexByte(e[:cut], '%'); i >= 0 && i > cut-3 {
		cut = i
	}
	sum := sha256.Sum256([]byte(s))
	return e[:cut] + "~" + hex.EncodeToString(sum[:8])
}

func escapeAll(s string) string {
	switch s {
	case "":
		return "_"
	case ".":
		return "%2E"
	case "..":
		return "%2E%2E"
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x80 && (safeLiteral(rune(c)) || c == '@' || c == '+') && c != '/' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

func safeLiteral(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '/'
}

func known(name string) bool {
	for _, f := range Fields {
		if f == name {
			return true
		}
	}
	return false
}

func braced() []string {
	out := make([]string, len(Fields))
	for i, f := range Fields {
		out[i] = "{" + f + "}"
	}
	return out
}

// ExtFor is the extension for a media content type.
func ExtFor(contentType string) string {
	ct, _, _ := strings.Cut(strings.ToLower(contentType), ";")
	switch strings.TrimSpace(ct) {
	case "audio/wav", "audio/x-wav", "audio/wave":
		return "wav"
	case "audio/mpeg":
		return "mp3"
	case "audio/ogg":
		return "ogg"
	case "audio/opus":
		return "opus"
	case "application/x-ndjson":
		return "ndjson"
	default:
		return "bin"
	}
}
