package catalog

import (
	"errors"
	"fmt"
	"time"
)

// ErrUnstorable: an artifact the catalog cannot hold as given. Retrying
// cannot help: admission dead-letters its event with the reason.
var ErrUnstorable = errors.New("catalog: the artifact cannot be catalogued")

// The time range a record may fall in: ingest refuses recordings started
// before 2000, and the id claim counts hours from 2000 in 25 bits.
var (
	earliest = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	latest   = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
)

// maxField bounds every text of a record: the longest a valid one has is
// a 256-character SIP call id or a ~300-character object key.
const maxField = 1024

// CheckArtifact says why a cannot be catalogued, or nil.
func CheckArtifact(a Artifact) error {
	at := time.UnixMilli(a.Score)
	switch {
	case a.ID == "" || a.Domain == "":
		return fmt.Errorf("%w: %s has no id or domain", ErrUnstorable, a.ID)
	case at.Before(earliest) || !at.Before(latest):
		return fmt.Errorf("%w: %s is dated %s, outside 2000-2099", ErrUnstorable, a.ID, at.UTC().Format(time.RFC3339))
	case a.Size < 0:
		return fmt.Errorf("%w: %s has a negative size", ErrUnstorable, a.ID)
	}
	s := a.rec
	for name, v := range map[string]string{"id": s.ID, "user": s.User, "call_id": s.CallID, "folder": s.Folder, "sha256": s.SHA256,
		"object key": s.ObjectKey, "from": s.From, "to": s.To, "content type": s.ContentType} {
		if len(v) > maxField {
			return fmt.Errorf("%w: %s: the %s is %d bytes, over %d", ErrUnstorable, a.ID, name, len(v), maxField)
		}
	}
	return nil
}
