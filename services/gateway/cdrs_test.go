package gateway_test

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/cdr"
	"github.com/callvault/callvault/pkg/obs"
	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/pkg/testenv"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
	"github.com/callvault/callvault/services/gateway"
)

// The CDR routes read nothing of the gateway's own: a fake ledger and a
// fixed set of tokens stand in for the policy service.

// principals are the tokens the fixed authenticator knows.
var principals = map[string]auth.Principal{
	"system": {Name: "system", Level: auth.LevelSystem},
	"dom-a":  {Name: "dom-a", Level: auth.LevelDomain, Reseller: "r1", Domain: "a.example"},
	"user-a": {Name: "user-a", Level: auth.LevelUser, Reseller: "r1", Domain: "a.example", User: "alice"},
	"dom-b":  {Name: "dom-b", Level: auth.LevelDomain, Reseller: "r2", Domain: "b.example"},
}

type fixedTokens struct{}

func (fixedTokens) Authenticate(_ context.Context, token string) (auth.Principal, error) {
	p, ok := principals[token]
	if !ok {
		return auth.Principal{}, apierr.ErrUnauthenticated
	}
	return p, nil
}

// serveCdrs serves the gateway's REST API with l as its ledger (none
// when l is nil).
func serveCdrs(t *testing.T, l cdr.Ledger) *httptest.Server {
	t.Helper()
	log := testenv.Logger()
	names, err := bus.NewNames("cdrtest")
	if err != nil {
		t.Fatal(err)
	}
	svc := gateway.New(&platform.Deps{Log: log, Names: names, Registry: prometheus.NewRegistry(), Health: obs.NewHealth(log)}, nil)
	if l != nil {
		svc.SetCdrs(l)
	}
	mux := http.NewServeMux()
	svc.RegisterHTTP(mux, fixedTokens{})
	hs := httptest.NewServer(platform.NewHTTPHandler(mux, log))
	t.Cleanup(hs.Close)
	return hs
}

func call(t *testing.T, hs *httptest.Server, method, path, token, body string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, hs.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return string(b)
}

// problem checks resp is a problem document with status and returns the
// parameters it names.
func problem(t *testing.T, resp *http.Response, status int) []string {
	t.Helper()
	body := readAll(t, resp)
	if resp.StatusCode != status || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("got %d %s, want %d problem+json: %s", resp.StatusCode, resp.Header.Get("Content-Type"), status, body)
	}
	var p apierr.Problem
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		t.Fatalf("problem document: %v: %s", err, body)
	}
	var names []string
	for _, v := range p.InvalidParams {
		names = append(names, v.Field)
	}
	return names
}

func ids(rs []cdr.Record) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

const twoDays = "/api/v1/cdrs?domain=a.example&from=2026-11-01&to=2026-11-03"

func TestCdrsInEachFormat(t *testing.T) {
	t.Parallel()
	newest := []string{"cdr-5", "cdr-4", "cdr-3", "cdr-2", "cdr-1"}
	for _, tc := range []struct {
		format, contentType string
		parse               func(t *testing.T, body string) []cdr.Record
	}{
		{"", "application/json", parseJSON},
		{"json", "application/json", parseJSON},
		{"ndjson", "application/x-ndjson", parseNDJSON},
		{"csv", "text/csv; charset=utf-8; header=present", parseCSV},
	} {
		t.Run("format="+tc.format, func(t *testing.T) {
			t.Parallel()
			hs := serveCdrs(t, newFakeLedger())
			path := twoDays
			if tc.format != "" {
				path += "&format=" + tc.format
			}
			resp := call(t, hs, http.MethodGet, path, "dom-a", "")
			body := readAll(t, resp)
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != tc.contentType {
				t.Fatalf("%d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
			got := tc.parse(t, body)
			if !slices.Equal(ids(got), newest) {
				t.Errorf("ids %v, want %v (newest first)", ids(got), newest)
			}
			want := map[string]cdr.Record{}
			for _, c := range sampleCdrs() {
				want[c.GetId()] = cdr.ToRecord(c)
			}
			for _, r := range got {
				if w := want[r.ID]; !recordsEqual(r, w) {
					t.Errorf("row %s:\n got %+v\nwant %+v", r.ID, r, w)
				}
			}
			disp := resp.Header.Get("Content-Disposition")
			if tc.format == "csv" && disp != `attachment; filename="cdrs-a.example-20261101-20261103.csv"` {
				t.Errorf("Content-Disposition %q", disp)
			}
		})
	}
}

func recordsEqual(a, b cdr.Record) bool {
	at := func(x, y *time.Time) bool { return (x == nil) == (y == nil) && (x == nil || x.Equal(*y)) }
	return a.ID == b.ID && a.CallID == b.CallID && a.Reseller == b.Reseller && a.Domain == b.Domain && a.User == b.User &&
		a.Direction == b.Direction && a.From == b.From && a.To == b.To && at(a.StartedAt, b.StartedAt) &&
		at(a.AnsweredAt, b.AnsweredAt) && at(a.EndedAt, b.EndedAt) && a.DurationS == b.DurationS && a.BillableS == b.BillableS &&
		a.Disposition == b.Disposition && slices.Equal(a.RecordingIDs, b.RecordingIDs) && at(a.AcceptedAt, b.AcceptedAt)
}

func parseJSON(t *testing.T, body string) []cdr.Record {
	t.Helper()
	var out []cdr.Record
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatalf("json: %v: %s", err, body)
	}
	return out
}

func parseNDJSON(t *testing.T, body string) []cdr.Record {
	t.Helper()
	var out []cdr.Record
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		var r cdr.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("ndjson line %d: %v: %s", len(out)+1, err, sc.Text())
		}
		out = append(out, r)
	}
	return out
}

func parseCSV(t *testing.T, body string) []cdr.Record {
	t.Helper()
	rows, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	if err != nil {
		t.Fatalf("csv: %v: %s", err, body)
	}
	if len(rows) == 0 || !slices.Equal(rows[0], cdr.CSVHeader()) {
		t.Fatalf("csv header %v, want %v", rows, cdr.CSVHeader())
	}
	var out []cdr.Record
	for _, row := range rows[1:] {
		col := map[string]string{}
		for i, h := range rows[0] {
			col[h] = row[i]
		}
		at := func(name string) *time.Time {
			if col[name] == "" {
				return nil
			}
			v, err := time.Parse(time.RFC3339Nano, col[name])
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			return &v
		}
		var dur, bill uint32
		if err := json.Unmarshal([]byte(col["duration_s"]), &dur); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(col["billable_s"]), &bill); err != nil {
			t.Fatal(err)
		}
		out = append(out, cdr.Record{
			ID: col["id"], CallID: col["call_id"], Reseller: col["reseller"], Domain: col["domain"], User: col["user"],
			Direction: col["direction"], From: col["from"], To: col["to"], StartedAt: at("started_at"),
			AnsweredAt: at("answered_at"), EndedAt: at("ended_at"), DurationS: dur, BillableS: bill,
			Disposition: col["disposition"], RecordingIDs: strings.Split(col["recording_ids"], ";"), AcceptedAt: at("accepted_at"),
		})
	}
	return out
}

func TestCdrsEmptyResult(t *testing.T) {
	t.Parallel()
	hs := serveCdrs(t, newFakeLedger())
	for format, want := range map[string]string{"json": "[]\n", "ndjson": "", "csv": strings.Join(cdr.CSVHeader(), ",") + "\n"} {
		resp := call(t, hs, http.MethodGet, "/api/v1/cdrs?domain=a.example&from=2025-01-01&to=2025-01-02&format="+format, "dom-a", "")
		if body := readAll(t, resp); resp.StatusCode != http.StatusOK || body != want {
			t.Errorf("%s: %d %q, want %q", format, resp.StatusCode, body, want)
		}
	}
}

// The filters and the order reach the ledger as the client gave them;
// a narrow token that names no domain means its own.
func TestCdrsQueryReachesTheLedger(t *testing.T) {
	t.Parallel()
	day := func(d int) time.Time { return time.Date(2026, 11, d, 0, 0, 0, 0, time.UTC) }
	for _, tc := range []struct {
		name, token, path string
		want              *cdrv1.Query
		rows              []string
	}{
		{"defaults", "dom-a", "/api/v1/cdrs?from=2026-11-01&to=2026-11-02", &cdrv1.Query{Domain: "a.example", NewestFirst: true},
			[]string{"cdr-3", "cdr-2", "cdr-1"}},
		{"oldest", "dom-a", "/api/v1/cdrs?domain=a.example&from=2026-11-01&to=2026-11-03&order=oldest&user=alice",
			&cdrv1.Query{Domain: "a.example", User: "alice"}, []string{"cdr-1", "cdr-3"}},
		{"number", "system", "/api/v1/cdrs?domain=a.example&from=2026-11-01&to=2026-11-03&number=%2B15550000001&order=newest",
			&cdrv1.Query{Domain: "a.example", Number: "+15550000001", NewestFirst: true}, []string{"cdr-5", "cdr-3", "cdr-1"}},
		{"call id", "dom-a", "/api/v1/cdrs?domain=a.example&from=2026-11-01&to=2026-11-03&call_id=" + url.QueryEscape(`c"2,x;y`),
			&cdrv1.Query{Domain: "a.example", CallId: `c"2,x;y`, NewestFirst: true}, []string{"cdr-2"}},
		{"user token", "user-a", "/api/v1/cdrs?from=2026-11-01&to=2026-11-03", &cdrv1.Query{Domain: "a.example", NewestFirst: true},
			[]string{"cdr-3", "cdr-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := newFakeLedger()
			hs := serveCdrs(t, l)
			resp := call(t, hs, http.MethodGet, tc.path, tc.token, "")
			body := readAll(t, resp)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%d: %s", resp.StatusCode, body)
			}
			if got := ids(parseJSON(t, body)); !slices.Equal(got, tc.rows) {
				t.Errorf("rows %v, want %v", got, tc.rows)
			}
			qs := l.seenQueries()
			if len(qs) != 1 {
				t.Fatalf("%d queries reached the ledger", len(qs))
			}
			q := qs[0]
			to := day(2)
			if strings.Contains(tc.path, "to=2026-11-03") {
				to = day(3)
			}
			if !q.GetFrom().AsTime().Equal(day(1)) || !q.GetTo().AsTime().Equal(to) {
				t.Errorf("range %v to %v, want %v to %v", q.GetFrom().AsTime(), q.GetTo().AsTime(), day(1), to)
			}
			q.From, q.To = nil, nil
			if !proto.Equal(q, tc.want) {
				t.Errorf("query %v, want %v", q, tc.want)
			}
		})
	}
}

func TestCdrsRFC3339Bounds(t *testing.T) {
	t.Parallel()
	l := newFakeLedger()
	hs := serveCdrs(t, l)
	// The offset's + arrives unescaped, as a space.
	resp := call(t, hs, http.MethodGet, "/api/v1/cdrs?domain=a.example&from=2026-11-01T10:30:00+01:00&to=2026-11-01T12:00:00.5Z", "dom-a", "")
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d: %s", resp.StatusCode, body)
	}
	q := l.seenQueries()[0]
	from, to := time.Date(2026, 11, 1, 9, 30, 0, 0, time.UTC), time.Date(2026, 11, 1, 12, 0, 0, 5e8, time.UTC)
	if !q.GetFrom().AsTime().Equal(from) || !q.GetTo().AsTime().Equal(to) {
		t.Errorf("range %v to %v, want %v to %v", q.GetFrom().AsTime(), q.GetTo().AsTime(), from, to)
	}
	if got := ids(parseJSON(t, body)); !slices.Equal(got, []string{"cdr-3", "cdr-2"}) {
		t.Errorf("rows %v", got)
	}
}

// Each bad parameter is a 400 naming it, and never reaches the ledger.
func TestCdrsBadParams(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, token, query, field string
	}{
		{"bad domain", "dom-a", "domain=A..example&from=2026-11-01&to=2026-11-02", "domain"},
		{"no domain for a system token", "system", "from=2026-11-01&to=2026-11-02", "domain"},
		{"from after to", "dom-a", "domain=a.example&from=2026-11-03&to=2026-11-02", "to"},
		{"missing from", "dom-a", "domain=a.example&to=2026-11-02", "from"},
		{"missing to", "dom-a", "domain=a.example&from=2026-11-02", "to"},
		{"bad from", "dom-a", "domain=a.example&from=yesterday&to=2026-11-02", "from"},
		{"bad day", "dom-a", "domain=a.example&from=2026-13-01&to=2027-01-02", "from"},
		{"unknown format", "dom-a", "domain=a.example&from=2026-11-01&to=2026-11-02&format=xml", "format"},
		{"bad order", "dom-a", "domain=a.example&from=2026-11-01&to=2026-11-02&order=sideways", "order"},
		{"bad user", "dom-a", "domain=a.example&from=2026-11-01&to=2026-11-02&user=%2Fetc", "user"},
		{"bad number", "dom-a", "domain=a.example&from=2026-11-01&to=2026-11-02&number=5%2F5", "number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := newFakeLedger()
			hs := serveCdrs(t, l)
			names := problem(t, call(t, hs, http.MethodGet, "/api/v1/cdrs?"+tc.query, tc.token, ""), http.StatusBadRequest)
			if !slices.Equal(names, []string{tc.field}) {
				t.Errorf("names %v, want [%s]", names, tc.field)
			}
			if n := len(l.seenQueries()); n != 0 {
				t.Errorf("%d queries reached the ledger", n)
			}
		})
	}
}

// Another tenant's domain is not found, as the ledger says.
func TestCdrsOtherTenant(t *testing.T) {
	t.Parallel()
	hs := serveCdrs(t, newFakeLedger())
	for _, token := range []string{"dom-b", "user-a"} {
		domain := "a.example"
		if token == "user-a" {
			domain = "b.example"
		}
		problem(t, call(t, hs, http.MethodGet, "/api/v1/cdrs?domain="+domain+"&from=2026-11-01&to=2026-11-03", token, ""), http.StatusNotFound)
	}
	problem(t, call(t, hs, http.MethodGet, twoDays, "nobody", ""), http.StatusUnauthorized)
}

func TestCdrsWithoutLedger(t *testing.T) {
	t.Parallel()
	hs := serveCdrs(t, nil)
	for _, r := range []struct{ method, path, body string }{
		{http.MethodGet, twoDays, ""},
		{http.MethodPost, "/api/v1/cdrs/exports", `{"domain":"a.example","from":"2026-11-01","to":"2026-11-03"}`},
		{http.MethodGet, "/api/v1/cdrs/exports/exp-1", ""},
		{http.MethodGet, "/api/v1/cdrs/exports/exp-1/download", ""},
	} {
		problem(t, call(t, hs, r.method, r.path, "dom-a", r.body), http.StatusServiceUnavailable)
	}
}

// Each batch reaches the client as it arrives: the first rows are read
// while the ledger still holds the rest.
func TestCdrsStreamPerBatch(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"json", "ndjson", "csv"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			l := newFakeLedger()
			l.batch, l.gate = 1, make(chan struct{})
			hs := serveCdrs(t, l)
			resp := call(t, hs, http.MethodGet, twoDays+"&format="+format, "dom-a", "")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			first := make(chan string, 1)
			var seen strings.Builder
			go func() {
				buf := make([]byte, 4096)
				for !strings.Contains(seen.String(), "cdr-5") {
					n, err := resp.Body.Read(buf)
					seen.Write(buf[:n])
					if err != nil {
						break
					}
				}
				first <- seen.String()
			}()
			var head string
			select {
			case head = <-first:
			case <-time.After(10 * time.Second):
				close(l.gate)
				t.Fatal("the first batch was not flushed while the ledger held the rest")
			}
			if strings.Contains(head, "cdr-4") {
				t.Fatalf("read past the first batch before the ledger released it: %s", head)
			}
			close(l.gate)
			rest := readAll(t, resp)
			var got []cdr.Record
			switch format {
			case "json":
				got = parseJSON(t, head+rest)
			case "ndjson":
				got = parseNDJSON(t, head+rest)
			case "csv":
				got = parseCSV(t, head+rest)
			}
			if len(got) != 5 {
				t.Errorf("%d rows, want 5", len(got))
			}
		})
	}
}

// A ledger failure before the first row is a problem document; after it,
// the response is cut off: the client's read fails, and the JSON it has
// does not parse.
func TestCdrsLedgerFailure(t *testing.T) {
	t.Parallel()
	l := newFakeLedger()
	l.failAfter = 0
	problem(t, call(t, serveCdrs(t, l), http.MethodGet, twoDays, "dom-a", ""), http.StatusServiceUnavailable)

	for _, format := range []string{"json", "ndjson", "csv"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			l := newFakeLedger()
			l.failAfter = 2
			resp := call(t, serveCdrs(t, l), http.MethodGet, twoDays+"&format="+format, "dom-a", "")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			body, err := io.ReadAll(resp.Body)
			if err == nil || errors.Is(err, io.EOF) {
				t.Errorf("a cut-off stream read to a clean end (%v): %s", err, body)
			}
			if !strings.Contains(string(body), "cdr-4") {
				t.Errorf("the rows sent before the failure are missing: %s", body)
			}
			var v []cdr.Record
			if format == "json" && json.Unmarshal(body, &v) == nil {
				t.Errorf("a cut-off JSON array parsed: %s", body)
			}
		})
	}
}

type exportAnswer struct {
	ID              string `json:"id"`
	State           string `json:"state"`
	Format          string `json:"format"`
	PartitionsDone  uint32 `json:"partitions_done"`
	PartitionsTotal uint32 `json:"partitions_total"`
	Rows            int64  `json:"rows"`
	CreatedAt       string `json:"created_at"`
	FinishedAt      string `json:"finished_at"`
	URL             string `json:"url"`
	DownloadURL     string `json:"download_url"`
	Query           struct {
		Domain string `json:"domain"`
		From   string `json:"from"`
		To     string `json:"to"`
		User   string `json:"user"`
		Order  string `json:"order"`
	} `json:"query"`
}

func exportOf(t *testing.T, resp *http.Response, status int) exportAnswer {
	t.Helper()
	body := readAll(t, resp)
	if resp.StatusCode != status || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("got %d %s, want %d: %s", resp.StatusCode, resp.Header.Get("Content-Type"), status, body)
	}
	var e exportAnswer
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("export: %v: %s", err, body)
	}
	return e
}

// An export is created (202 and where to poll it), polled, refused for
// download while it runs, hidden from other tenants, and downloaded once
// done.
func TestCdrExportFlow(t *testing.T) {
	t.Parallel()
	l := newFakeLedger()
	hs := serveCdrs(t, l)
	resp := call(t, hs, http.MethodPost, "/api/v1/cdrs/exports", "dom-a",
		`{"from":"2026-11-01","to":"2026-11-03T00:00:00Z","user":"alice","format":"csv","order":"oldest"}`)
	created := exportOf(t, resp, http.StatusAccepted)
	loc := resp.Header.Get("Location")
	if created.ID == "" || loc != "/api/v1/cdrs/exports/"+created.ID || created.URL != loc {
		t.Fatalf("export %+v at %q", created, loc)
	}
	if created.State != "queued" || created.Format != "csv" || created.Query.Domain != "a.example" || created.Query.User != "alice" ||
		created.Query.Order != "oldest" || created.Query.From != "2026-11-01T00:00:00Z" || created.Query.To != "2026-11-03T00:00:00Z" ||
		created.CreatedAt != "2026-11-05T08:00:00Z" || created.DownloadURL != "" {
		t.Errorf("created %+v", created)
	}
	if got := exportOf(t, call(t, hs, http.MethodGet, loc, "dom-a", ""), http.StatusOK); got.State != "queued" {
		t.Errorf("polled %+v", got)
	}
	problem(t, call(t, hs, http.MethodGet, loc+"/download", "dom-a", ""), http.StatusConflict)
	problem(t, call(t, hs, http.MethodGet, loc, "dom-b", ""), http.StatusNotFound)
	problem(t, call(t, hs, http.MethodGet, loc+"/download", "dom-b", ""), http.StatusNotFound)
	problem(t, call(t, hs, http.MethodGet, "/api/v1/cdrs/exports/exp-404", "dom-a", ""), http.StatusNotFound)

	if err := l.finish(created.ID); err != nil {
		t.Fatal(err)
	}
	done := exportOf(t, call(t, hs, http.MethodGet, loc, "dom-a", ""), http.StatusOK)
	if done.State != "done" || done.Rows != 2 || done.PartitionsDone != 2 || done.DownloadURL != loc+"/download" || done.FinishedAt == "" {
		t.Errorf("done %+v", done)
	}
	resp = call(t, hs, http.MethodGet, done.DownloadURL, "dom-a", "")
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != cdr.ContentType(cdrv1.ExportFormat_EXPORT_FORMAT_CSV) ||
		resp.Header.Get("Content-Disposition") != `attachment; filename="cdrs-`+created.ID+`.csv"` {
		t.Fatalf("download: %d %v: %s", resp.StatusCode, resp.Header, body)
	}
	if got := ids(parseCSV(t, body)); !slices.Equal(got, []string{"cdr-1", "cdr-3"}) {
		t.Errorf("file rows %v", got)
	}
}

// A bad export request names the JSON field; nothing is created.
func TestCdrExportBadRequest(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, body string
		fields     []string
	}{
		{"unknown field", `{"domain":"a.example","from":"2026-11-01","to":"2026-11-02","limit":5}`, []string{"limit"}},
		{"not a string", `{"domain":"a.example","from":20261101,"to":"2026-11-02"}`, []string{"from"}},
		{"bad format", `{"domain":"a.example","from":"2026-11-01","to":"2026-11-02","format":"xlsx"}`, []string{"format"}},
		{"bad order", `{"domain":"a.example","from":"2026-11-01","to":"2026-11-02","order":"up"}`, []string{"order"}},
		{"from after to", `{"domain":"a.example","from":"2026-11-03","to":"2026-11-02"}`, []string{"to"}},
		{"missing both", `{"domain":"a.example"}`, []string{"from", "to"}},
		{"bad domain", `{"domain":"a_example","from":"2026-11-01","to":"2026-11-02"}`, []string{"domain"}},
		{"not an object", `["a.example"]`, []string{"body"}},
		{"two objects", `{"domain":"a.example"} {}`, []string{"body"}},
		{"empty", ``, []string{"body"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := newFakeLedger()
			hs := serveCdrs(t, l)
			names := problem(t, call(t, hs, http.MethodPost, "/api/v1/cdrs/exports", "dom-a", tc.body), http.StatusBadRequest)
			if !slices.Equal(names, tc.fields) {
				t.Errorf("names %v, want %v", names, tc.fields)
			}
			if len(l.exports) != 0 {
				t.Errorf("an export was created")
			}
		})
	}
	hs := serveCdrs(t, newFakeLedger())
	problem(t, call(t, hs, http.MethodPost, "/api/v1/cdrs/exports", "dom-b", `{"domain":"a.example","from":"2026-11-01","to":"2026-11-02"}`), http.StatusNotFound)
}
