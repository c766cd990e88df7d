package catalog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func brkInternal(t *testing.T) (*Catalog, redis.UniversalClient, string) {
	t.Helper()
	url := os.Getenv("CALLVAULT_TEST_REDIS_URL")
	if url == "" {
		t.Skip("CALLVAULT_TEST_REDIS_URL unset")
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	ns := "tbrk" + hex.EncodeToString(b)
	t.Cleanup(func() {
		ctx := context.Background()
		if keys, err := rdb.Keys(ctx, ns+":*").Result(); err == nil && len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
		rdb.Close()
	})
	return New(rdb, ns), rdb, ns
}

// TestBreakCollisionLeavesClaim crafts a 64-bit field collision in one
// bucket: another id's record sits at the new id's field. Decide reports
// ErrHashCollision (the event is not decided: it reaches the dead letters
// with its media kept), and the collided record is neither reachable nor
// deletable as the new id. The claim written before the script stays: the
// domain's durably published event names the id, and a redrive after a
// fix decides it there, so another domain's reuse stays a conflict.
func TestBreakCollisionLeavesClaim(t *testing.T) {
	t.Parallel()
	c, rdb, _ := brkInternal(t)
	ctx := context.Background()
	at := time.Date(2026, 11, 1, 9, 30, 0, 0, time.UTC)
	if _, err := c.ApplyDomain(ctx, Domain{Domain: "a.example", Reseller: "r1"}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ApplyDomain(ctx, Domain{Domain: "b.example", Reseller: "r1"}, 0); err != nil {
		t.Fatal(err)
	}
	mk := func(domain, id string) Artifact {
		return c.RecordingArtifact(Recording{ID: id, Domain: domain, User: "u", CallID: "c", Mode: "automatic", StartedAt: at, Size: 1, AcceptedAt: at})
	}
	x, y := mk("a.example", "rec-x"), mk("a.example", "rec-y")
	// rec-y's record, as if its hash equalled rec-x's.
	p := c.place(x, 0)
	if err := rdb.HSet(ctx, p.bucket, p.field, y.packed(StateAdmitted, "", 0)).Err(); err != nil {
		t.Fatal(err)
	}
	_, err := c.Decide(ctx, x, CapCheck{})
	if !errors.Is(err, ErrHashCollision) {
		t.Fatalf("Decide = %v, want ErrHashCollision", err)
	}
	if d, err := c.DomainOf(ctx, "rec-x"); err != nil || d != "a.example" {
		t.Errorf("DomainOf(rec-x) after an undecided collision = %q, %v; want a.example, whose event names it", d, err)
	}
	if d, err := c.Decide(ctx, mk("b.example", "rec-x"), CapCheck{}); err != nil || d.Reason != ErrIDConflict {
		t.Errorf("b.example's rec-x = %+v, %v; want id_conflict", d, err)
	}
	// The collided record is not reachable or deletable as rec-x.
	if _, err := c.GetRecording(ctx, "a.example", "rec-x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetRecording(rec-x) = %v", err)
	}
	if res, err := c.Delete(ctx, DeleteRequest{Domain: "a.example", ID: "rec-x", Now: at}); err != nil || res.Outcome != Absent {
		t.Errorf("Delete(rec-x) = %+v, %v", res, err)
	}
}
