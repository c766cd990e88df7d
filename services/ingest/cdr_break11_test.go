package ingest_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/services/ingest"
)

// NDJSON with bad lines, bad dates, ids and domains that climb paths,
// and an over-limit body: each bad CDR by its index and field, the good
// ones stored, the whole request refused as problem+json naming body.
func TestBreak11IngestBadInputs(t *testing.T) {
	r := newCdrRig(t, rigOptions{limits: ingest.Limits{MaxCdrBodyBytes: 64 << 10}})
	tok := r.token(t, auth.Principal{Name: "a", Level: auth.LevelDomain, Reseller: "r1", Domain: "a.example"})
	good, _ := json.Marshal(map[string]any{"id": "ok-1", "call_id": "c", "reseller": "r1", "domain": "a.example", "user": "101",
		"direction": "inbound", "from": "+15551230000", "to": "101", "started_at": callStart.Format("2006-01-02T15:04:05Z07:00"),
		"ended_at": callStart.Add(60e9).Format("2006-01-02T15:04:05Z07:00"), "duration_s": 60, "billable_s": 0, "disposition": "no_answer"})
	mod := func(k string, v any) string {
		var m map[string]any
		_ = json.Unmarshal(good, &m)
		m["id"] = "bad-" + k
		m[k] = v
		b, _ := json.Marshal(m)
		return string(b)
	}
	lines := []string{
		string(good),
		`{"id": "x", "domain": `,
		mod("started_at", "2026-02-30T10:00:00Z"),
		mod("domain", "../b.example"),
		mod("id", "../../etc/passwd"),
		mod("ended_at", "yesterday"),
		`[1,2]`,
	}
	code, _, out := r.post(t, tok, "application/x-ndjson", []byte(strings.Join(lines, "\n")))
	var res ingest.CdrResult
	if err := json.Unmarshal(out, &res); err != nil || code != http.StatusOK {
		t.Fatalf("%d %s", code, out)
	}
	want := map[int]string{1: "record", 2: "started_at", 3: "domain", 4: "id", 5: "ended_at", 6: "record"}
	got := map[int]string{}
	for _, rj := range res.Rejected {
		got[rj.Index] = rj.Field
	}
	for i, f := range want {
		if got[i] != f {
			t.Errorf("line %d: rejected as %q, want %q (%s)", i+1, got[i], f, out)
		}
	}
	if res.Accepted != 1 || len(res.Rejected) != len(want) {
		t.Errorf("answer %s", out)
	}
	if ids := r.storedIDs(t); strings.Join(ids, ",") != "ok-1" {
		t.Errorf("stored %v", ids)
	}

	big := strings.Repeat(string(good)+"\n", (64<<10)/len(good)+2)
	code, h, out := r.post(t, tok, "application/x-ndjson", []byte(big))
	if code != http.StatusRequestEntityTooLarge || h.Get("Content-Type") != "application/problem+json" || !strings.Contains(string(out), `"body"`) {
		t.Errorf("over-limit body: %d %q %s", code, h.Get("Content-Type"), out)
	}
}

// The same CDR id with other content in a later request is not answered
// as a duplicate of what was stored.
func TestBreak11IngestSameIDOtherContent(t *testing.T) {
	r := newCdrRig(t, rigOptions{})
	tok := r.token(t, auth.Principal{Name: "a", Level: auth.LevelDomain, Reseller: "r1", Domain: "a.example"})
	a1, err := r.unary(t, tok, clones(goodCdrs("same", 1)))
	if err != nil || a1.Accepted != 1 {
		t.Fatalf("first: %+v %v", a1, err)
	}
	other := clones(goodCdrs("same", 1))
	other[0].From = "+19998887777"
	a2, err := r.unary(t, tok, other)
	if err != nil {
		t.Fatal(err)
	}
	stored := r.stored(t)
	if a2.Duplicates == 1 && len(stored) == 1 && stored[0].cdr.GetFrom() != other[0].GetFrom() {
		t.Errorf("a CDR resent with another From was answered %+v: counted stored, yet the stream keeps From %s", a2, stored[0].cdr.GetFrom())
	}
}
