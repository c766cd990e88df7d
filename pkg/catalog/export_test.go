package catalog

import (
	"context"
	"time"
)

// ClaimID runs admission's id claim and returns the domain on record.
func ClaimID(c *Catalog, ctx context.Context, id, domain string) (string, error) {
	_, cl, _, err := c.claim(ctx, id, domain, classRecording, hourOf(time.Now()))
	if err != nil {
		return "", err
	}
	return c.domainNamed(ctx, cl.num)
}

// The record codec, for the codec tests.
type Stored = stored

func (s stored) Pack(domain string) string { return s.pack(domain, false) }

var (
	UnpackStored = unpackStored
	EncodeID     = encodeID
	HourOf       = hourOf
	RecLua       = recLua
)

// CursorAt is the page token of the position after (t, id).
func CursorAt(t time.Time, id string) string { return cursor{score: t.UnixMilli(), id: id}.encode() }
