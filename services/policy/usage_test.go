package policy_test

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
)

// TestUsageAndThreshold: usage by category against the bundle's capacity,
// the forecast at the last 30 days' rate, and the 95 % event firing once
// per crossing, not once per write.
func TestUsageAndThreshold(t *testing.T) {
	t.Parallel()
	d, svc := setup(t)
	ctx := context.Background()
	at := time.Now().Add(-time.Hour)
	const gb = int64(1_000_000_000)
	n := 0
	admitRec := func(size int64) {
		t.Helper()
		n++
		env := recordingEvent("u-rec-"+string(rune('a'+n)), size, at)
		if err := svc.Admit(ctx, env, 1); err != nil {
			t.Fatal(err)
		}
	}
	admitRec(2 * gb)
	vm := messageEvent("u-vm", "a.example", "101", eventv1.DataKind_DATA_KIND_VOICEMAIL, 0, at)
	vm.GetMessage().Media.SizeBytes = gb
	sms := messageEvent("u-sms", "a.example", "101", eventv1.DataKind_DATA_KIND_SMS, eventv1.MessageFolder_MESSAGE_FOLDER_INBOX, at)
	sms.GetMessage().Media.SizeBytes = gb / 2
	for _, e := range []*eventv1.Envelope{vm, sms} {
		if err := svc.Admit(ctx, e, 1); err != nil {
			t.Fatal(err)
		}
	}
	u, err := svc.GetUsage(ctx, system, "a.example")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, c := range u.GetCategories() {
		got[c.GetCategory()] = c.GetBytes()
	}
	if len(u.GetCategories()) != 7 || got["recordings"] != 2*gb || got["voicemail"] != gb || got["messages"] != gb/2 || got["backups"] != 0 {
		t.Fatalf("categories %v", u.GetCategories())
	}
	if u.GetUsedBytes() != 3500*gb/1000 || u.GetCapacityBytes() != 5*gb || u.GetFreeBytes() != 1500*gb/1000 {
		t.Fatalf("used %d capacity %d free %d", u.GetUsedBytes(), u.GetCapacityBytes(), u.GetFreeBytes())
	}
	if math.Abs(u.GetForecastMonths()-1.5/3.5) > 1e-9 {
		t.Fatalf("forecast %f months, want %f", u.GetForecastMonths(), 1.5/3.5)
	}
	if c := subjectCount(t, d, d.Names.UsageSubject()); c != 0 {
		t.Fatalf("%d alerts at 70 %%", c)
	}

	admitRec(1300 * gb / 1000) // 96 %
	admitRec(100 * gb / 1000)  // 98 %: still over, no second alert
	if c := subjectCount(t, d, d.Names.UsageSubject()); c != 1 {
		t.Fatalf("%d alerts after crossing 95 %% once, want 1", c)
	}
	// A bigger bundle brings usage back under; the next crossing alerts again.
	if _, _, err := svc.AssignBundle(ctx, system, "a.example", "CDS-10", 12); err != nil {
		t.Fatal(err)
	}
	admitRec(gb / 1000)
	if _, _, err := svc.AssignBundle(ctx, system, "a.example", "default", 12); err != nil {
		t.Fatal(err)
	}
	admitRec(gb / 1000)
	if c := subjectCount(t, d, d.Names.UsageSubject()); c != 2 {
		t.Fatalf("%d alerts after a second crossing, want 2", c)
	}

	other := auth.Principal{Name: "b-admin", Level: auth.LevelDomain, Reseller: "r1", Domain: "b.example"}
	if _, err := svc.GetUsage(ctx, other, "a.example"); !errors.Is(err, apierr.ErrForbidden) {
		t.Fatalf("another domain read the usage: %v", err)
	}
}
