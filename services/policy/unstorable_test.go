package policy_test

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/testenv"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
)

// TestUnstorableMessagesAreDeadLettered publishes messages the catalog
// cannot hold (received before 1970, after 5797, a 300,000-byte sender):
// each becomes one dead letter naming why, nothing is claimed or
// catalogued, and a good message after them is admitted.
func TestUnstorableMessagesAreDeadLettered(t *testing.T) {
	t.Parallel()
	d, svc := setup(t)
	runService(t, svc)
	vm := func(id string, at time.Time, from string) *eventv1.Envelope {
		return &eventv1.Envelope{
			Id: id, ArtifactId: id, AcceptedAt: timestamppb.Now(), Source: "test",
			Tenant: &eventv1.Tenant{Reseller: "r1", Domain: "a.example", User: "101"},
			Body: &eventv1.Envelope_Message{Message: &eventv1.MessageStored{
				Kind: eventv1.DataKind_DATA_KIND_VOICEMAIL, ReceivedAt: timestamppb.New(at), From: from, To: "+15550199",
				Media: &eventv1.MediaObject{Key: "voicemail/a.example/" + id, SizeBytes: 10, Sha256: "ab12", ContentType: "audio/wav"},
			}},
		}
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	for _, env := range []*eventv1.Envelope{
		vm("vm-1969", time.Date(1969, 12, 31, 23, 0, 0, 0, time.UTC), "+15550100"),
		vm("vm-6000", time.Date(6000, 1, 1, 0, 0, 0, 0, time.UTC), "+15550100"),
		vm("vm-long", now, strings.Repeat("9", 300_000)),
		vm("vm-good", now, "+15550100"),
	} {
		if _, err := bus.PublishEnvelope(context.Background(), d.JS, d.Names.MessageSubject(), env.GetId(), env); err != nil {
			t.Fatal(err)
		}
	}
	cat := catalog.New(d.Redis, d.Names.Namespace())
	testenv.WaitFor(t, "vm-good admitted", func() bool {
		r, err := cat.Record(context.Background(), "a.example", "vm-good")
		return err == nil && r.State == catalog.StateAdmitted
	})
	// The good message can be admitted before the batch it came in has
	// finished dead-lettering the others, so wait for all three.
	var dls []bus.DeadLetter
	testenv.WaitFor(t, "three dead letters", func() bool {
		var err error
		dls, err = bus.ListDeadLetters(context.Background(), d.JS, d.Names, 1, 10)
		return err == nil && len(dls) >= 3
	})
	if len(dls) != 3 {
		t.Fatalf("dead letters = %+v, want the three unstorable messages", dls)
	}
	sort.Slice(dls, func(i, j int) bool {
		a, _ := strconv.Atoi(dls[i].SourceSequence)
		b, _ := strconv.Atoi(dls[j].SourceSequence)
		return a < b
	})
	for i, want := range []string{"outside 1970-01-01 to 5797", "outside 1970-01-01 to 5797", "the from is 300000 bytes"} {
		if !strings.Contains(dls[i].Reason, want) {
			t.Errorf("dead letter %d reason %q, want it to say %q", i, dls[i].Reason, want)
		}
	}
	for _, id := range []string{"vm-1969", "vm-6000", "vm-long"} {
		if dom, err := cat.DomainOf(context.Background(), id); err == nil {
			t.Errorf("%s is claimed by %s", id, dom)
		}
	}
}
