package callvault_test

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/callvault/callvault/pkg/testenv"
)

// cdrRecord is a CDR as the REST API takes and gives it.
type cdrRecord struct {
	ID           string   `json:"id"`
	CallID       string   `json:"call_id"`
	Reseller     string   `json:"reseller"`
	Domain       string   `json:"domain"`
	User         string   `json:"user,omitempty"`
	Direction    string   `json:"direction"`
	From         string   `json:"from"`
	To           string   `json:"to"`
	StartedAt    string   `json:"started_at"`
	AnsweredAt   string   `json:"answered_at,omitempty"`
	EndedAt      string   `json:"ended_at"`
	DurationS    int      `json:"duration_s"`
	BillableS    int      `json:"billable_s"`
	Disposition  string   `json:"disposition"`
	RecordingIDs []string `json:"recording_ids"`
}

// TestCdrsThroughTheWholeStack sends CDRs in over REST, lets the ledger
// write them into segments, and reads them back as JSON, CSV and a
// background export file, each scoped to the caller's tenant.
func TestCdrsThroughTheWholeStack(t *testing.T) {
	s := newStack(t)
	admin := testenv.BootstrapToken
	s.provision(admin, "a.example", "r1")
	s.provision(admin, "b.example", "r2")
	tokA, _ := s.issue(admin, map[string]any{"name": "a", "level": "domain", "reseller": "r1", "domain": "a.example"})
	tokB, _ := s.issue(admin, map[string]any{"name": "b", "level": "domain", "reseller": "r2", "domain": "b.example"})

	base := time.Date(2026, 11, 20, 22, 0, 0, 0, time.UTC)
	var body bytes.Buffer
	var want []cdrRecord
	const bad = 417
	for i := range 1000 {
		start := base.Add(time.Duration(i) * 10 * time.Second) // crosses midnight
		r := cdrRecord{
			ID: fmt.Sprintf("cdr-%04d", i), CallID: fmt.Sprintf("call-%d@pbx", i), Reseller: "r1", Domain: "a.example", User: "101",
			Direction: "outbound", From: "101", To: fmt.Sprintf("+1555%07d", i%7), StartedAt: start.Format(time.RFC3339),
			AnsweredAt: start.Add(2 * time.Second).Format(time.RFC3339), EndedAt: start.Add(62 * time.Second).Format(time.RFC3339),
			DurationS: 62, BillableS: 60, Disposition: "answered", RecordingIDs: []string{fmt.Sprintf("rec-%d", i)},
		}
		if i%5 == 0 {
			r.From = "+15550000"
		}
		if i == bad {
			r.EndedAt = start.Add(-time.Minute).Format(time.RFC3339)
		} else {
			want = append(want, r)
		}
		line, _ := json.Marshal(r)
		body.Write(line)
		body.WriteByte('\n')
	}
	req, _ := http.NewRequest(http.MethodPost, s.url+"/api/v1/ingest/cdrs", &body)
	req.Header.Set("Authorization", "Bearer "+tokA)
	req.Header.Set("Content-Type", "application/x-ndjson")
	code, out := s.send(req)
	var res struct {
		Accepted int `json:"accepted"`
		Rejected []struct {
			Index int    `json:"index"`
			Field string `json:"field"`
		} `json:"rejected"`
	}
	if err := json.Unmarshal(out, &res); err != nil || code != http.StatusOK {
		t.Fatalf("ingest: %d %s", code, out)
	}
	if res.Accepted != 999 || len(res.Rejected) != 1 || res.Rejected[0].Index != bad || res.Rejected[0].Field != "ended_at" {
		t.Fatalf("ingest answered %s", out)
	}

	q := "/api/v1/cdrs?domain=a.example&from=2026-11-20&to=2026-11-22&order=oldest"
	var got []cdrRecord
	testenv.WaitFor(t, "the CDRs in segments", func() bool {
		code, out := s.rest(tokA, http.MethodGet, q+"&format=json", nil)
		got = nil
		return code == http.StatusOK && json.Unmarshal(out, &got) == nil && len(got) == len(want)
	})
	for i := range want {
		if got[i].ID != want[i].ID || got[i].StartedAt != want[i].StartedAt || got[i].From != want[i].From ||
			!slices.Equal(got[i].RecordingIDs, want[i].RecordingIDs) || got[i].BillableS != want[i].BillableS {
			t.Fatalf("row %d: got %+v, want %+v", i, got[i], want[i])
		}
	}

	code, out = s.rest(tokA, http.MethodGet, q+"&format=csv&number=%2B15550000", nil)
	if code != http.StatusOK {
		t.Fatalf("csv: %d %s", code, out)
	}
	rows, err := csv.NewReader(bytes.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatalf("the CSV does not parse: %v", err)
	}
	if len(rows) < 2 || rows[0][0] != "id" {
		t.Fatalf("CSV header %v", rows[0])
	}
	wantNumber := 0
	for _, r := range want {
		if r.From == "+15550000" || r.To == "+15550000" {
			wantNumber++
		}
	}
	if len(rows)-1 != wantNumber {
		t.Errorf("number filter: %d rows, want %d", len(rows)-1, wantNumber)
	}

	if code, _ := s.rest(tokB, http.MethodGet, q, nil); code != http.StatusNotFound {
		t.Errorf("another domain's token reading a.example: %d, want 404", code)
	}

	code, out = s.rest(tokA, http.MethodPost, "/api/v1/cdrs/exports", map[string]string{
		"domain": "a.example", "from": "2026-11-20", "to": "2026-11-22", "format": "csv", "order": "oldest"})
	var exp struct {
		ID    string `json:"id"`
		State string `json:"state"`
		Rows  int    `json:"rows"`
	}
	if err := json.Unmarshal(out, &exp); err != nil || code != http.StatusAccepted {
		t.Fatalf("create export: %d %s", code, out)
	}
	if code, _ := s.rest(tokB, http.MethodGet, "/api/v1/cdrs/exports/"+exp.ID, nil); code != http.StatusNotFound {
		t.Errorf("another tenant reading the export: %d, want 404", code)
	}
	testenv.WaitFor(t, "the export", func() bool {
		_, out := s.rest(tokA, http.MethodGet, "/api/v1/cdrs/exports/"+exp.ID, nil)
		return json.Unmarshal(out, &exp) == nil && exp.State == "done"
	})
	code, out = s.rest(tokA, http.MethodGet, "/api/v1/cdrs/exports/"+exp.ID+"/download", nil)
	if code != http.StatusOK {
		t.Fatalf("download: %d %s", code, out)
	}
	rows, err = csv.NewReader(bytes.NewReader(out)).ReadAll()
	if err != nil || len(rows) != len(want)+1 || exp.Rows != len(want) {
		t.Fatalf("export file: %d rows (%v), export says %d; want %d", len(rows)-1, err, exp.Rows, len(want))
	}
	for i, r := range rows[1:] {
		if r[0] != want[i].ID || !strings.Contains(strings.Join(r, ","), want[i].RecordingIDs[0]) {
			t.Fatalf("export row %d: %v, want %s", i, r, want[i].ID)
		}
	}
}
