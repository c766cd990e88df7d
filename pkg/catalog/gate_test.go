package catalog_test

import (
	"context"
	"testing"
	"time"

	"github.com/callvault/callvault/pkg/catalog"
)

// TestGateDeletesWithoutUserOrCall: the deletion gate removes a voicemail
// (no call) and a recording with neither user nor call, and their usage
// goes with them. The scripts once got the artifact's own hash in place
// of the missing user index or call set and failed with WRONGTYPE.
func TestGateDeletesWithoutUserOrCall(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCatalog(t)
	at := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	vm := c.MessageArtifact(catalog.Message{ID: "vm-1", Reseller: "r1", Domain: "a.example", User: "101", Kind: "voicemail",
		ReceivedAt: at, Size: 10, SHA256: "ab", ObjectKey: "messages/a.example/vm-1", AcceptedAt: at})
	if d, err := c.Decide(ctx, vm, catalog.CapCheck{}); err != nil || !d.Admitted() {
		t.Fatalf("voicemail: %+v, %v", d, err)
	}
	// Its admission is published before anything may delete it.
	if err := c.Done(ctx, "a.example", "vm-1", catalog.EffectPublish); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.AdmitRecording(ctx, rec("a.example", "rec-1", "", "", at, 20)); err != nil || !ok {
		t.Fatalf("recording without user or call: %v, %v", ok, err)
	}
	if err := c.Done(ctx, "a.example", "rec-1", catalog.EffectPublish); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"vm-1", "rec-1"} {
		res, err := c.Delete(ctx, catalog.DeleteRequest{Domain: "a.example", ID: id, Now: at.Add(time.Hour), Reason: "admin", Actor: "ops"})
		if err != nil || res.Outcome != catalog.Deleted {
			t.Fatalf("delete %s: %+v, %v", id, res, err)
		}
	}
	u, err := c.Usage(ctx, "a.example")
	if err != nil {
		t.Fatal(err)
	}
	if u["voicemail"].Count != 0 || u["voicemail"].Bytes != 0 || u[catalog.KindRecording].Count != 0 || u[catalog.KindRecording].Bytes != 0 {
		t.Fatalf("usage after the deletions: %+v", u)
	}
}
