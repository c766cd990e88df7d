package catalog

import (
	"errors"
	"fmt"
	"time"
)

// ErrUnstorable: an artifact the catalog cannot hold as given. Retrying
// cannot help: admission dead-letters its event with the reason.
var ErrUnstorable = errors.New("catalog: the artifact cannot be catalogued")

// The time range a record may fall in: the id claim counts hours from
// 1970 in 25 bits (to October 5797). Ingest refuses recordings before 2000, but
// messages from a PBX with an unset clock are dated 1970, and earlier
// versions admitted them.
var (
	earliest = time.Unix(0, 0).UTC()
	latest   = time.Unix((1<<25)*3600, 0).UTC()
)

// maxSize bounds an artifact's size: the scripts add sizes up as Lua
// numbers (doubles), exact to 2^53, and a batch of 2,048 artifacts of at
// most 2^40 bytes each stays below that.
const maxSize = 1 << 40

// maxField bounds every text of a record far above any real one (a group
// MMS's recipients run to a few KiB), so one event cannot put megabytes
// into a bucket.
const maxField = 256 << 10

// CheckArtifact says why a cannot be catalogued, or nil.
func CheckArtifact(a Artifact) error {
	at := time.UnixMilli(a.Score)
	switch {
	case a.ID == "" || a.Domain == "":
		return fmt.Errorf("%w: %s has no id or domain", ErrUnstorable, a.ID)
	case at.Before(earliest) || !at.Before(latest):
		return fmt.Errorf("%w: %s is dated %s, outside 1970-01-01 to %s", ErrUnstorable, a.ID, at.UTC().Format(time.RFC3339), latest.Format("2006-01-02"))
	case a.Size < 0 || a.Size > maxSize:
		return fmt.Errorf("%w: %s has a size of %d bytes, outside 0 to 1 TiB", ErrUnstorable, a.ID, a.Size)
	case a.rec.Seq >= 1<<53:
		return fmt.Errorf("%w: %s has stream sequence %d, over 2^53", ErrUnstorable, a.ID, a.rec.Seq)
	case kindCode(a.rec.Kind, a.rec.Mode) == 0:
		return fmt.Errorf("%w: %s is of kind %q (mode %q), which the catalog does not know", ErrUnstorable, a.ID, a.rec.Kind, a.rec.Mode)
	}
	s := a.rec
	for _, f := range [...]struct{ name, v string }{{"id", s.ID}, {"user", s.User}, {"call_id", s.CallID}, {"folder", s.Folder},
		{"sha256", s.SHA256}, {"object key", s.ObjectKey}, {"from", s.From}, {"to", s.To}, {"content type", s.ContentType}} {
		if len(f.v) > maxField {
			return fmt.Errorf("%w: %s: the %s is %d bytes, over %d", ErrUnstorable, a.ID, f.name, len(f.v), maxField)
		}
	}
	return nil
}
