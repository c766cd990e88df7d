package callvault_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/testenv"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
)

// break11Tenants is a.example (r1) with users 101 and 102, and b.example
// (r2), with a token of every kind.
type break11Tenants struct {
	sys, r1, r2, domA, domB, u101, u102, revoked string
}

func break11Setup(t *testing.T, s *stack) break11Tenants {
	t.Helper()
	admin := testenv.BootstrapToken
	s.provision(admin, "a.example", "r1")
	s.provision(admin, "b.example", "r2")
	var k break11Tenants
	k.sys = admin
	k.r1, _ = s.issue(admin, map[string]any{"name": "r1", "level": "reseller", "reseller": "r1"})
	k.r2, _ = s.issue(admin, map[string]any{"name": "r2", "level": "reseller", "reseller": "r2"})
	k.domA, _ = s.issue(admin, map[string]any{"name": "a", "level": "domain", "reseller": "r1", "domain": "a.example"})
	k.domB, _ = s.issue(admin, map[string]any{"name": "b", "level": "domain", "reseller": "r2", "domain": "b.example"})
	k.u101, _ = s.issue(admin, map[string]any{"name": "u101", "level": "user", "reseller": "r1", "domain": "a.example", "user": "101"})
	k.u102, _ = s.issue(admin, map[string]any{"name": "u102", "level": "user", "reseller": "r1", "domain": "a.example", "user": "102"})
	var rid string
	k.revoked, rid = s.issue(admin, map[string]any{"name": "gone", "level": "domain", "reseller": "r1", "domain": "a.example"})
	if code, body := s.rest(admin, http.MethodDelete, "/api/v1/tokens/"+rid, nil); code/100 != 2 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	return k
}

var break11Day = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

func break11Record(id, domain, reseller, user string, start time.Time) cdrRecord {
	return cdrRecord{ID: id, CallID: "call-" + id, Reseller: reseller, Domain: domain, User: user,
		Direction: "outbound", From: user, To: "+15550001111", StartedAt: start.Format(time.RFC3339),
		AnsweredAt: start.Add(time.Second).Format(time.RFC3339), EndedAt: start.Add(61 * time.Second).Format(time.RFC3339),
		DurationS: 61, BillableS: 60, Disposition: "answered", RecordingIDs: []string{}}
}

func (s *stack) ingestCdrs(token string, rs ...cdrRecord) (int, []byte) {
	s.t.Helper()
	var body bytes.Buffer
	for _, r := range rs {
		line, _ := json.Marshal(r)
		body.Write(line)
		body.WriteByte('\n')
	}
	req, _ := http.NewRequest(http.MethodPost, s.url+"/api/v1/ingest/cdrs", &body)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/x-ndjson")
	return s.send(req)
}

func (s *stack) cdrIDs(token, query string) (int, []string) {
	s.t.Helper()
	code, out := s.rest(token, http.MethodGet, "/api/v1/cdrs?"+query, nil)
	if code != http.StatusOK {
		return code, nil
	}
	var rs []cdrRecord
	if err := json.Unmarshal(out, &rs); err != nil {
		s.t.Fatalf("%s: %v", out, err)
	}
	ids := []string{}
	for _, r := range rs {
		ids = append(ids, r.ID)
	}
	return code, ids
}

const break11Range = "domain=a.example&from=2026-11-20&to=2026-11-21&order=oldest"

// seed ingests three CDRs of a.example (two of user 101, one of 102) and
// one of b.example, and waits until they can be read.
func break11Seed(t *testing.T, s *stack, k break11Tenants) {
	t.Helper()
	if code, out := s.ingestCdrs(k.domA,
		break11Record("a1", "a.example", "r1", "101", break11Day),
		break11Record("a2", "a.example", "r1", "102", break11Day.Add(time.Minute)),
		break11Record("a3", "a.example", "r1", "101", break11Day.Add(2*time.Minute)),
	); code != http.StatusOK || !strings.Contains(string(out), `"accepted":3`) {
		t.Fatalf("ingest a: %d %s", code, out)
	}
	if code, out := s.ingestCdrs(k.domB, break11Record("b1", "b.example", "r2", "201", break11Day)); code != http.StatusOK || !strings.Contains(string(out), `"accepted":1`) {
		t.Fatalf("ingest b: %d %s", code, out)
	}
	testenv.WaitFor(t, "the CDRs in segments", func() bool {
		_, a := s.cdrIDs(k.domA, break11Range)
		_, b := s.cdrIDs(k.domB, "domain=b.example&from=2026-11-20&to=2026-11-21")
		return len(a) == 3 && len(b) == 1
	})
}

func (s *stack) createExport(token string, body map[string]string) (int, string, []byte) {
	s.t.Helper()
	code, out := s.rest(token, http.MethodPost, "/api/v1/cdrs/exports", body)
	var e struct{ ID string }
	_ = json.Unmarshal(out, &e)
	return code, e.ID, out
}

func (s *stack) waitExport(token, id string) map[string]any {
	s.t.Helper()
	var e map[string]any
	testenv.WaitFor(s.t, "export "+id, func() bool {
		_, out := s.rest(token, http.MethodGet, "/api/v1/cdrs/exports/"+id, nil)
		e = nil
		return json.Unmarshal(out, &e) == nil && (e["state"] == "done" || e["state"] == "failed")
	})
	return e
}

// Every CdrService method, over real gRPC with every kind of token, on
// another tenant's CDRs, exports and partitions: not found (or
// unauthenticated for a revoked token), never a row or a byte.
func TestBreak11GRPCCdrServiceTenancy(t *testing.T) {
	s := newStack(t)
	k := break11Setup(t, s)
	break11Seed(t, s, k)
	code, expA, out := s.createExport(k.domA, map[string]string{"from": "2026-11-20", "to": "2026-11-21", "format": "ndjson"})
	if code != http.StatusAccepted {
		t.Fatalf("export: %d %s", code, out)
	}
	code, exp101, out := s.createExport(k.u101, map[string]string{"from": "2026-11-20", "to": "2026-11-21", "format": "ndjson"})
	if code != http.StatusAccepted {
		t.Fatalf("user export: %d %s", code, out)
	}
	s.waitExport(k.domA, expA)
	s.waitExport(k.u101, exp101)

	cli := cdrv1.NewCdrServiceClient(s.conn)
	q := &cdrv1.Query{Domain: "a.example", From: timestamppb.New(break11Day.Truncate(24 * time.Hour)), To: timestamppb.New(break11Day.Truncate(24 * time.Hour).Add(24 * time.Hour))}
	exportRows := func(tok string) ([]string, error) {
		st, err := cli.ExportCdrs(s.ctx(tok), &cdrv1.ExportCdrsRequest{Query: q})
		if err != nil {
			return nil, err
		}
		var ids []string
		for {
			m, err := st.Recv()
			if err == io.EOF {
				return ids, nil
			}
			if err != nil {
				return ids, err
			}
			for _, c := range m.GetCdrs() {
				ids = append(ids, c.GetId()+"/"+c.GetUser())
			}
		}
	}
	openBytes := func(tok, id string) (int, error) {
		st, err := cli.OpenExport(s.ctx(tok), &cdrv1.OpenExportRequest{Id: id})
		if err != nil {
			return 0, err
		}
		n := 0
		for {
			m, err := st.Recv()
			if err == io.EOF {
				return n, nil
			}
			if err != nil {
				return n, err
			}
			n += len(m.GetChunk())
		}
	}
	type want struct {
		rows       string     // ExportCdrs of a.example
		rowsCode   codes.Code // when refused
		export     codes.Code // GetExport/OpenExport of the domain's export
		export101  codes.Code // of user 101's export
		partitions codes.Code
	}
	nf, ok, un := codes.NotFound, codes.OK, codes.Unauthenticated
	cases := map[string]struct {
		tok string
		w   want
	}{
		"system":         {k.sys, want{"a1/101,a2/102,a3/101", ok, ok, ok, ok}},
		"reseller":       {k.r1, want{"a1/101,a2/102,a3/101", ok, ok, ok, ok}},
		"other reseller": {k.r2, want{"", nf, nf, nf, nf}},
		"domain":         {k.domA, want{"a1/101,a2/102,a3/101", ok, ok, ok, ok}},
		"other domain":   {k.domB, want{"", nf, nf, nf, nf}},
		"user 101":       {k.u101, want{"a1/101,a3/101", ok, nf, ok, nf}},
		"user 102":       {k.u102, want{"a2/102", ok, nf, nf, nf}},
		"revoked":        {k.revoked, want{"", un, un, un, un}},
	}
	for name, tc := range cases {
		rows, err := exportRows(tc.tok)
		if got := status.Code(err); got != tc.w.rowsCode || strings.Join(rows, ",") != tc.w.rows {
			t.Errorf("%s: ExportCdrs answered %v %v, want %v %q", name, rows, err, tc.w.rowsCode, tc.w.rows)
		}
		for id, wc := range map[string]codes.Code{expA: tc.w.export, exp101: tc.w.export101} {
			r, err := cli.GetExport(s.ctx(tc.tok), &cdrv1.GetExportRequest{Id: id})
			if status.Code(err) != wc {
				t.Errorf("%s: GetExport %s: %v %v, want %v", name, id, r, err, wc)
			}
			n, err := openBytes(tc.tok, id)
			if status.Code(err) != wc || (wc != ok && n > 0) || (wc == ok && n == 0) {
				t.Errorf("%s: OpenExport %s: %d bytes, %v; want %v", name, id, n, err, wc)
			}
		}
		p, err := cli.ListPartitions(s.ctx(tc.tok), &cdrv1.ListPartitionsRequest{Domain: "a.example"})
		if status.Code(err) != tc.w.partitions || (tc.w.partitions != ok && len(p.GetPartitions()) > 0) {
			t.Errorf("%s: ListPartitions: %v %v, want %v", name, p, err, tc.w.partitions)
		}
		// A domain that does not exist answers as another tenant's does.
		if tc.w.partitions == nf {
			_, e1 := cli.ListPartitions(s.ctx(tc.tok), &cdrv1.ListPartitionsRequest{Domain: "nope.example"})
			_, e2 := cli.ListPartitions(s.ctx(tc.tok), &cdrv1.ListPartitionsRequest{Domain: "a.example"})
			if status.Convert(e1).Message() != strings.ReplaceAll(status.Convert(e2).Message(), "a.example", "nope.example") {
				t.Errorf("%s: ListPartitions tells domains apart: %v vs %v", name, e1, e2)
			}
		}
	}

	// User tokens on the REST side: their own calls only, whatever they ask.
	for tok, wantIDs := range map[string]string{k.u101: "a1,a3", k.u102: "a2"} {
		for _, extra := range []string{"", "&user=101", "&user=102", "&user="} {
			code, ids := s.cdrIDs(tok, break11Range+extra)
			if code == http.StatusOK && strings.Join(ids, ",") != wantIDs {
				t.Errorf("user token %s%s sees %v, want %s", wantIDs, extra, ids, wantIDs)
			}
		}
	}
	// REST export reads of the other tenant.
	for name, tok := range map[string]string{"r2": k.r2, "domB": k.domB, "u102": k.u102} {
		for _, p := range []string{"/api/v1/cdrs/exports/" + exp101, "/api/v1/cdrs/exports/" + exp101 + "/download"} {
			if code, out := s.rest(tok, http.MethodGet, p, nil); code != http.StatusNotFound {
				t.Errorf("%s GET %s: %d %s", name, p, code, out)
			}
		}
	}
}

// gRPC refusals carry BadRequest details naming the field.
func TestBreak11GRPCBadRequestDetails(t *testing.T) {
	s := newStack(t)
	k := break11Setup(t, s)
	cli := cdrv1.NewCdrServiceClient(s.conn)
	day := timestamppb.New(break11Day.Truncate(24 * time.Hour))
	cases := map[string]struct {
		call  func() error
		field string
	}{
		"ExportCdrs without query": {func() error {
			st, err := cli.ExportCdrs(s.ctx(k.domA), &cdrv1.ExportCdrsRequest{})
			if err != nil {
				return err
			}
			_, err = st.Recv()
			return err
		}, "query"},
		"ExportCdrs traversal domain": {func() error {
			st, err := cli.ExportCdrs(s.ctx(k.sys), &cdrv1.ExportCdrsRequest{Query: &cdrv1.Query{Domain: "../b.example", From: day, To: timestamppb.New(day.AsTime().Add(time.Hour))}})
			if err != nil {
				return err
			}
			_, err = st.Recv()
			return err
		}, "domain"},
		"ExportCdrs reversed range": {func() error {
			st, err := cli.ExportCdrs(s.ctx(k.domA), &cdrv1.ExportCdrsRequest{Query: &cdrv1.Query{Domain: "a.example", From: timestamppb.New(day.AsTime().Add(time.Hour)), To: day}})
			if err != nil {
				return err
			}
			_, err = st.Recv()
			return err
		}, "to"},
		"CreateExport unknown format": {func() error {
			_, err := cli.CreateExport(s.ctx(k.domA), &cdrv1.CreateExportRequest{Query: &cdrv1.Query{Domain: "a.example", From: day, To: timestamppb.New(day.AsTime().Add(time.Hour))}, Format: cdrv1.ExportFormat(99)})
			return err
		}, "format"},
		"ListPartitions traversal": {func() error {
			_, err := cli.ListPartitions(s.ctx(k.sys), &cdrv1.ListPartitionsRequest{Domain: "a.example/../../x"})
			return err
		}, "domain"},
		"ListPartitions bad day": {func() error {
			_, err := cli.ListPartitions(s.ctx(k.sys), &cdrv1.ListPartitionsRequest{Domain: "a.example", Before: "2026-13-45"})
			return err
		}, "before"},
	}
	for name, tc := range cases {
		err := tc.call()
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
			continue
		}
		var fields []string
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok {
				for _, v := range br.GetFieldViolations() {
					fields = append(fields, v.GetField())
				}
			}
		}
		if !strings.Contains(","+strings.Join(fields, ",")+",", ","+tc.field+",") {
			t.Errorf("%s: BadRequest fields %v, want %s (%v)", name, fields, tc.field, err)
		}
	}
}

// REST bad inputs: problem+json naming each field; ids that try to climb
// out of their place are not found.
func TestBreak11RESTBadInputs(t *testing.T) {
	s := newStack(t)
	k := break11Setup(t, s)
	fields := func(out []byte) string {
		var p struct {
			InvalidParams []struct{ Name, Field string } `json:"invalid_params"`
		}
		_ = json.Unmarshal(out, &p)
		var f []string
		for _, v := range p.InvalidParams {
			f = append(f, v.Name+v.Field)
		}
		return strings.Join(f, ",")
	}
	code, out := s.rest(k.domA, http.MethodGet, "/api/v1/cdrs?from=2026-02-30&to=yesterday&format=xml&order=up", nil)
	if code != http.StatusBadRequest || fields(out) == "" {
		t.Errorf("bad params: %d %s", code, out)
	}
	for _, f := range []string{"from", "to", "format", "order"} {
		if !strings.Contains(","+fields(out)+",", ","+f+",") {
			t.Errorf("bad params: %s not named in %s", f, out)
		}
	}
	code, out = s.rest(k.sys, http.MethodGet, "/api/v1/cdrs?domain=..%2F..%2Fb.example&from=2026-11-20&to=2026-11-21", nil)
	if code != http.StatusBadRequest || !strings.Contains(fields(out), "domain") {
		t.Errorf("traversal domain: %d %s", code, out)
	}
	code, out = s.rest(k.domA, http.MethodPost, "/api/v1/cdrs/exports", map[string]any{"from": "2026-11-20", "to": "2026-11-21", "format": "parquet"})
	if code != http.StatusBadRequest || fields(out) != "format" {
		t.Errorf("unknown export format: %d %s", code, out)
	}
	code, out = s.rest(k.domA, http.MethodPost, "/api/v1/cdrs/exports", map[string]any{"from": "2026-11-20", "to": "2026-11-21", "format": "parquet", "limit": 3, "user": 7})
	for _, f := range []string{"format", "limit", "user"} {
		if code != http.StatusBadRequest || !strings.Contains(","+fields(out)+",", ","+f+",") {
			t.Errorf("bad export body: %s not named: %d %s", f, code, out)
		}
	}
	big := map[string]string{"from": "2026-11-20", "to": "2026-11-21", "number": strings.Repeat("9", 20<<10)}
	if code, out := s.rest(k.domA, http.MethodPost, "/api/v1/cdrs/exports", big); code/100 != 4 {
		t.Errorf("huge export body: %d %s", code, out)
	}
	for _, id := range []string{"..%2F..%2Fetc%2Fpasswd", "x%2F..%2Fx", "%00", strings.Repeat("x", 500), "x'; DROP"} {
		for _, suffix := range []string{"", "/download"} {
			req, _ := http.NewRequest(http.MethodGet, s.url+"/api/v1/cdrs/exports/"+id+suffix, nil)
			req.Header.Set("Authorization", "Bearer "+k.sys)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("export id %q%s: %d %q %s", id, suffix, resp.StatusCode, resp.Header.Get("Content-Type"), b)
			}
		}
	}
}

// An export whose file cannot be written fails, and its error names
// nothing of the server's storage.
func TestBreak11ExportCdsWriteFails(t *testing.T) {
	s := newStack(t)
	k := break11Setup(t, s)
	break11Seed(t, s, k)
	// A file where the domain's export folder must go: every write under it fails.
	if _, err := s.d.CDS.Put(context.Background(), "exports/a.example", strings.NewReader("in the way"), "text/plain"); err != nil {
		t.Fatal(err)
	}
	code, id, out := s.createExport(k.domA, map[string]string{"from": "2026-11-20", "to": "2026-11-21", "format": "csv"})
	if code != http.StatusAccepted {
		t.Fatalf("export: %d %s", code, out)
	}
	e := s.waitExport(k.domA, id)
	if e["state"] != "failed" {
		t.Fatalf("export with an unwritable file: %v", e)
	}
	msg := fmt.Sprint(e["error"])
	for _, leak := range []string{"/tmp", "exports/", string([]byte{'/'}) + "a.example", "open ", "mkdir", "not a directory"} {
		if strings.Contains(msg, leak) {
			t.Errorf("a tenant's export error shows the server's storage (%q): %s", leak, msg)
			break
		}
	}
	if code, out := s.rest(k.domA, http.MethodGet, "/api/v1/cdrs/exports/"+id+"/download", nil); code != http.StatusConflict {
		t.Errorf("download of a failed export: %d %s", code, out)
	}
}

// Redis failing under an export read or an ingest answers 503 (a
// problem), never not-found or a half-stored batch.
func TestBreak11RedisFaultMidRequest(t *testing.T) {
	s := newStack(t)
	k := break11Setup(t, s)
	break11Seed(t, s, k)
	code, id, out := s.createExport(k.domA, map[string]string{"from": "2026-11-20", "to": "2026-11-21"})
	if code != http.StatusAccepted {
		t.Fatalf("export: %d %s", code, out)
	}
	s.waitExport(k.domA, id)
	f := testenv.InjectRedisFaults(t, s.d.Redis)
	f.Fail("_cdrx")
	for _, p := range []string{"/api/v1/cdrs/exports/" + id, "/api/v1/cdrs/exports/" + id + "/download"} {
		if code, out := s.rest(k.domA, http.MethodGet, p, nil); code != http.StatusServiceUnavailable {
			t.Errorf("GET %s with Redis failing: %d %s", p, code, out)
		}
	}
	if code, out := s.rest(k.domA, http.MethodPost, "/api/v1/cdrs/exports", map[string]string{"from": "2026-11-20", "to": "2026-11-21"}); code != http.StatusServiceUnavailable {
		t.Errorf("create export with Redis failing: %d %s", code, out)
	}
	f.Fail("a.example")
	if code, out := s.ingestCdrs(k.domA, break11Record("a9", "a.example", "r1", "101", break11Day)); code != http.StatusServiceUnavailable {
		t.Errorf("ingest with the domain registry failing: %d %s", code, out)
	}
	if code, out := s.rest(k.domA, http.MethodGet, "/api/v1/cdrs?"+break11Range, nil); code != http.StatusServiceUnavailable {
		t.Errorf("read with Redis failing: %d %.300s", code, out)
	}
	f.Heal()
	time.Sleep(time.Second)
	if _, ids := s.cdrIDs(k.domA, break11Range); strings.Join(ids, ",") != "a1,a2,a3" {
		t.Errorf("after the fault: %v", ids)
	}
}

// Ingest for a domain the token does not cover: rejected by index with
// one reason whether the domain is another tenant's or unknown; nothing
// stored, nothing provisioned.
func TestBreak11IngestUncoveredDomain(t *testing.T) {
	s := newStack(t)
	k := break11Setup(t, s)
	reasons := map[string]string{}
	for name, tok := range map[string]string{"domB": k.domB, "u101": k.u101, "r2": k.r2} {
		code, out := s.ingestCdrs(tok,
			break11Record("x1", "a.example", "r1", "102", break11Day),
			break11Record("x2", "nope.example", "r1", "101", break11Day),
			break11Record("x3", "nope2.example", "r2", "101", break11Day),
		)
		var res struct {
			Accepted int
			Rejected []struct {
				Index         int
				Field, Reason string
			}
		}
		if err := json.Unmarshal(out, &res); err != nil || code != http.StatusOK {
			t.Fatalf("%s: %d %s", name, code, out)
		}
		for _, r := range res.Rejected {
			reasons[fmt.Sprintf("%s/%d", name, r.Index)] = r.Field + ": " + r.Reason
		}
		t.Logf("%s: %s", name, out)
		if name != "r2" {
			if res.Accepted != 0 || len(res.Rejected) != 3 {
				t.Errorf("%s: %s", name, out)
			}
			if name == "domB" && reasons[name+"/0"] != reasons[name+"/1"] {
				t.Errorf("%s: another tenant's domain and an unknown one answer apart: %q vs %q", name, reasons[name+"/0"], reasons[name+"/1"])
			}
		}
	}
	code, _ := s.rest(k.sys, http.MethodGet, "/api/v1/domains/nope.example", nil)
	if code == http.StatusOK {
		t.Errorf("a refused CDR provisioned nope.example")
	}
	time.Sleep(2 * time.Second)
	if _, ids := s.cdrIDs(k.sys, break11Range); len(ids) != 0 {
		t.Errorf("refused CDRs were stored: %v", ids)
	}
}
