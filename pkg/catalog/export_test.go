package catalog

import (
	"context"
	"time"
)

// ClaimID runs admission's id claim and returns the domain on record.
func ClaimID(c *Catalog, ctx context.Context, id, domain string) (string, error) {
	now := time.Now()
	a := c.RecordingArtifact(Recording{ID: id, Domain: domain, Mode: "automatic", StartedAt: now, AcceptedAt: now})
	if cl := c.claimAll(ctx, []Pending{{Artifact: a}})[0]; cl.err != nil {
		return "", cl.err
	}
	return c.DomainOf(ctx, id)
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

// LockRebuildFor takes the rebuild lock with a lease of its own.
func LockRebuildFor(c *Catalog, ctx context.Context, lease time.Duration) (context.Context, func(), error) {
	return c.lockRebuild(ctx, lease)
}
