package router_test

// The tests of this file document properties that were attacked and held
// at the time of writing; they pass.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
)

// Holds: after Redis lost the router's state, two instances restoring at
// once give every archive record back once, with exact counts, and the
// "not archived" records stay as they were.
func TestCountsExactAfterTwoInstancesRestore(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	D := rg.createPair(aDomain)(s3Config(t, "D", "domain", "a.example", "s3", rg.bucket(false)))
	const n = 5
	for i := range n {
		rg.admit(recording{id: fmt.Sprintf("rec-%d", i), domain: "a.example", reseller: "r1", body: randomBytes(1000 + i)})
	}
	rg.admit(recording{id: "rec-c", domain: "c.example", reseller: "r2", body: randomBytes(1000)}) // nothing matches
	for i := range n {
		rg.waitState("a.example", fmt.Sprintf("rec-%d", i), "archived")
	}
	rg.waitState("c.example", "rec-c", "not_archived")
	rg.stop()
	rg.loseRouterState()
	a, b := rg.secondService(false), rg.secondService(false)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, svc := range []interface{ Restore(context.Context) error }{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = svc.Restore(context.Background()) }()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	rg.start()
	st := rg.status(D.GetId())
	if st.GetArchived() != n || st.GetWaiting() != 0 || st.GetState() != "active" {
		t.Errorf("D after two restores = %s, %d archived, %d waiting; want active, %d, 0", st.GetState(), st.GetArchived(), st.GetWaiting(), n)
	}
	if got := rg.state("c.example", "rec-c").GetState(); got != "not_archived" {
		t.Errorf("rec-c after the restores = %s, want not_archived", got)
	}
	for id, k := range rg.archivedEvents() {
		if k != 1 {
			t.Errorf("%s has %d archive records", id, k)
		}
	}
}

// Holds: plain http is accepted only for loopback addresses, whatever the
// scheme's case or a trailing dot.
func TestPlainHTTPOnlyToLoopback(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	for i, tc := range []struct {
		endpoint string
		ok       bool
	}{
		{"HTTP://s3.eu-central-1.amazonaws.com", false}, {"Http://s3.us-east-2.wasabisys.com", false},
		{"http://localhost.", false}, {"http://127.0.0.1.nip.io:9000", false}, {"http://[::ffff:8.8.8.8]", false},
		{"http://0x7f000001", false}, {"http://2130706433", false}, {"http:/127.0.0.1", false},
		{"http://[::1]:9000", true}, {"http://127.0.0.2:9000", true}, {"http://localhost:9000", true}, {"HTTPS://s3.example.com", true},
	} {
		c, s := s3Config(t, fmt.Sprintf("e%d", i), "domain", "a.example", "s3", "plain-bucket")
		c.Endpoint, c.Enabled = tc.endpoint, false
		_, _, err := rg.svc.CreateConfig(context.Background(), aDomain, c, s)
		if (err == nil) != tc.ok {
			t.Errorf("endpoint %s: err = %v, want accepted %v", tc.endpoint, err, tc.ok)
		}
	}
}

// Holds: a harmless change (a rename, disabling) does not stop playback
// from the archive.
func TestPlaybackAfterARename(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	ctx := context.Background()
	c, s := s3Config(t, "C", "domain", "a.example", "s3", rg.bucket(false))
	C := rg.create(aDomain, c, s)
	body := randomBytes(4000)
	rg.admit(recording{id: "rec-1", domain: "a.example", reseller: "r1", body: body})
	rg.waitState("a.example", "rec-1", "archived")
	c.Id, c.Name, c.Enabled = C.GetId(), "C renamed", false
	if _, _, err := rg.svc.UpdateConfig(ctx, aDomain, c, nil); err != nil {
		t.Fatal(err)
	}
	rc, err := rg.svc.OpenArchived(ctx, aDomain, "a.example", "rec-1", 100, 50)
	if err != nil {
		t.Fatalf("playback after a rename: %v", err)
	}
	got, _ := io.ReadAll(rc)
	_ = rc.Close()
	if !bytes.Equal(got, body[100:150]) {
		t.Errorf("playback after a rename streamed %d bytes, want bytes 100-149 of the recording", len(got))
	}
}
