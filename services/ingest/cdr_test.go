package ingest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/cdr"
	"github.com/callvault/callvault/pkg/testenv"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
	"github.com/callvault/callvault/services/ingest"
)

// A batch of 1,000 with one bad CDR answers that one by index, field and
// reason, and stores the other 999, each once under its event id. The
// same batch again stores nothing new: 999 duplicates, the same
// rejection.
func TestCdrBatchRejectsByIndexAndResendsAsDuplicates(t *testing.T) {
	t.Parallel()
	r := newCdrRig(t, rigOptions{})
	batch := goodCdrs("cdr", 1000)
	const bad = 637
	batch[bad].Direction = "sideways"
	wantRejected := []ingest.CdrRejection{{Index: bad, ID: batch[bad].GetId(), Field: "direction", Reason: `must be one of inbound, outbound, internal, not "sideways"`}}

	got, err := r.unary(t, testenv.BootstrapToken, clones(batch))
	if err != nil {
		t.Fatal(err)
	}
	if want := (answer{Accepted: 999, Rejected: wantRejected}); !reflect.DeepEqual(got, want) {
		t.Fatalf("answer %+v, want %+v", got, want)
	}
	stored := r.stored(t)
	if len(stored) != 999 {
		t.Fatalf("%d CDRs in the stream, want 999", len(stored))
	}
	sent := map[string]*cdrv1.Cdr{}
	for i, c := range batch {
		if i != bad {
			sent[c.GetId()] = c
		}
	}
	for _, s := range stored {
		want, ok := sent[s.cdr.GetId()]
		if !ok {
			t.Fatalf("the stream holds %s, which was not to be stored (or twice)", s.cdr.GetId())
		}
		delete(sent, s.cdr.GetId())
		c := proto.Clone(s.cdr).(*cdrv1.Cdr)
		c.AcceptedAt = nil
		if !proto.Equal(c, want) {
			t.Fatalf("stored %v\nsent   %v", c, want)
		}
		if s.msgID != cdr.EventID("a.example", want.GetId()) || !strings.HasPrefix(s.contentType, "application/x-protobuf") || s.env.GetSource() != "ingest/grpc" {
			t.Fatalf("stored %s with Nats-Msg-Id %q, Content-Type %q, source %q", want.GetId(), s.msgID, s.contentType, s.env.GetSource())
		}
	}
	before := r.storedIDs(t)

	got, err = r.unary(t, testenv.BootstrapToken, clones(batch))
	if err != nil {
		t.Fatal(err)
	}
	if want := (answer{Duplicates: 999, Rejected: wantRejected}); !reflect.DeepEqual(got, want) {
		t.Fatalf("resent: answer %+v, want %+v", got, want)
	}
	if after := r.storedIDs(t); !slices.Equal(after, before) {
		t.Fatalf("resending changed the stream: %d CDRs, was %d", len(after), len(before))
	}
	for status, want := range map[string]float64{"accepted": 999, "duplicate": 999, "rejected": 2, "error": 0} {
		if got := r.counter(t, status); got != want {
			t.Errorf("callvault_ingest_cdrs_total{status=%q} = %v, want %v", status, got, want)
		}
	}
}

// cdrOf is a good CDR of domain under reseller for user.
func cdrOf(id, domain, reseller, user string) *cdrv1.Cdr {
	c := goodCdr(id)
	c.Domain, c.Reseller, c.User = domain, reseller, user
	return c
}

// Another tenant's token gets the CDRs outside its scope rejected by
// index, and nothing of them is published. A domain that is not
// provisioned is refused exactly like another tenant's, so the answer
// never tells whether a domain exists; only callers that cover a domain
// learn of its reseller, and only the system of a domain's absence.
func TestCdrTenancy(t *testing.T) {
	t.Parallel()
	notCovered := func(token string) string { return "is not covered by token " + token }
	cases := []struct {
		name     string
		scope    auth.Principal // zero: the system
		cdrs     []*cdrv1.Cdr
		accepted []string
		rejected []ingest.CdrRejection
	}{
		{
			name:  "domain token of another domain",
			scope: auth.Principal{Name: "pbx-c", Level: auth.LevelDomain, Reseller: "r2", Domain: "c.example"},
			cdrs: []*cdrv1.Cdr{
				cdrOf("t1", "a.example", "r1", "101"), cdrOf("t2", "a.example", "r2", "101"),
				cdrOf("t3", "ghost.example", "r2", "101"), cdrOf("t4", "ghost.example", "r1", ""),
			},
			rejected: []ingest.CdrRejection{
				{Index: 0, ID: "t1", Field: "domain", Reason: notCovered("pbx-c")},
				{Index: 1, ID: "t2", Field: "domain", Reason: notCovered("pbx-c")},
				{Index: 2, ID: "t3", Field: "domain", Reason: notCovered("pbx-c")},
				{Index: 3, ID: "t4", Field: "domain", Reason: notCovered("pbx-c")},
			},
		},
		{
			name:  "reseller token of another reseller",
			scope: auth.Principal{Name: "res-r2", Level: auth.LevelReseller, Reseller: "r2"},
			cdrs: []*cdrv1.Cdr{
				cdrOf("t1", "a.example", "r1", "101"), cdrOf("t2", "b.example", "r1", ""),
				cdrOf("t3", "a.example", "r2", "101"), cdrOf("t4", "ghost.example", "r2", "101"),
			},
			rejected: []ingest.CdrRejection{
				{Index: 0, ID: "t1", Field: "domain", Reason: notCovered("res-r2")},
				{Index: 1, ID: "t2", Field: "domain", Reason: notCovered("res-r2")},
				{Index: 2, ID: "t3", Field: "domain", Reason: notCovered("res-r2")},
				{Index: 3, ID: "t4", Field: "domain", Reason: notCovered("res-r2")},
			},
		},
		{
			name:  "domain token, mixed batch",
			scope: auth.Principal{Name: "pbx-a", Level: auth.LevelDomain, Reseller: "r1", Domain: "a.example"},
			cdrs: []*cdrv1.Cdr{
				cdrOf("t1", "a.example", "r1", "101"), cdrOf("t2", "b.example", "r1", "101"),
				cdrOf("t3", "a.example", "r1", ""), cdrOf("t4", "c.example", "r2", "101"),
			},
			accepted: []string{"t1", "t3"},
			rejected: []ingest.CdrRejection{
				{Index: 1, ID: "t2", Field: "domain", Reason: notCovered("pbx-a")},
				{Index: 3, ID: "t4", Field: "domain", Reason: notCovered("pbx-a")},
			},
		},
		{
			name:  "user token, other users",
			scope: auth.Principal{Name: "phone-101", Level: auth.LevelUser, Reseller: "r1", Domain: "a.example", User: "101"},
			cdrs: []*cdrv1.Cdr{
				cdrOf("t1", "a.example", "r1", "101"), cdrOf("t2", "a.example", "r1", "102"),
				cdrOf("t3", "a.example", "r1", ""), cdrOf("t4", "b.example", "r1", "101"),
			},
			accepted: []string{"t1"},
			rejected: []ingest.CdrRejection{
				{Index: 1, ID: "t2", Field: "user", Reason: notCovered("phone-101")},
				{Index: 2, ID: "t3", Field: "user", Reason: notCovered("phone-101")},
				{Index: 3, ID: "t4", Field: "domain", Reason: notCovered("phone-101")},
			},
		},
		{
			name:     "reseller token, its own domain under the wrong reseller",
			scope:    auth.Principal{Name: "res-r1", Level: auth.LevelReseller, Reseller: "r1"},
			cdrs:     []*cdrv1.Cdr{cdrOf("t1", "a.example", "r2", "101"), cdrOf("t2", "b.example", "r1", "101")},
			accepted: []string{"t2"},
			rejected: []ingest.CdrRejection{
				{Index: 0, ID: "t1", Field: "reseller", Reason: "domain a.example is provisioned under another reseller"},
			},
		},
		{
			name: "system token",
			cdrs: []*cdrv1.Cdr{
				cdrOf("t1", "a.example", "r2", "101"), cdrOf("t2", "ghost.example", "r1", "101"), cdrOf("t3", "c.example", "r2", "7"),
			},
			accepted: []string{"t3"},
			rejected: []ingest.CdrRejection{
				{Index: 0, ID: "t1", Field: "reseller", Reason: "domain a.example is provisioned under another reseller"},
				{Index: 1, ID: "t2", Field: "domain", Reason: "ghost.example is not provisioned"},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newCdrRig(t, rigOptions{})
			token := testenv.BootstrapToken
			if tc.scope.Level != "" {
				token = r.token(t, tc.scope)
			}
			got, err := r.unary(t, token, clones(tc.cdrs))
			if err != nil {
				t.Fatal(err)
			}
			if want := (answer{Accepted: len(tc.accepted), Rejected: tc.rejected}); !reflect.DeepEqual(got, want) {
				t.Fatalf("answer %+v\nwant   %+v", got, want)
			}
			ids := r.storedIDs(t)
			if want := slices.Sorted(slices.Values(tc.accepted)); !slices.Equal(ids, want) {
				t.Fatalf("stored %v, want %v", ids, want)
			}
		})
	}
}

// provisioner stands in for the policy service: it provisions a domain
// in the catalog as its config consumer would, and records who asked.
type provisioner struct {
	cat *catalog.Catalog
	// race holds domains another reseller provisions just before.
	race  map[string]string
	mu    sync.Mutex
	calls []string
}

func (p *provisioner) ProvisionDomain(ctx context.Context, caller auth.Principal, domain, reseller string) (catalog.Domain, bool, error) {
	p.mu.Lock()
	p.calls = append(p.calls, caller.Name+":"+domain+"/"+reseller)
	p.mu.Unlock()
	if other, ok := p.race[domain]; ok {
		if _, err := p.cat.ApplyDomain(ctx, catalog.Domain{Domain: domain, Reseller: other, ProvisionedBy: "other", ProvisionedAt: time.Now()}, 0); err != nil {
			return catalog.Domain{}, false, err
		}
	}
	if caller.Level == auth.LevelReseller && caller.Reseller != reseller {
		return catalog.Domain{}, false, fmt.Errorf("%w: not your reseller", apierr.ErrForbidden)
	}
	d := catalog.Domain{Domain: domain, Reseller: reseller, ProvisionedBy: caller.Name, ProvisionedAt: time.Now()}
	owner, err := p.cat.ApplyDomain(ctx, d, 0)
	if err != nil {
		return catalog.Domain{}, false, err
	}
	if owner != reseller {
		return catalog.Domain{}, false, fmt.Errorf("%w: another reseller's", apierr.ErrConflict)
	}
	return d, true, nil
}

// A CDR provisions its domain exactly where a recording upload would:
// for a system token under the reseller it names, for a reseller token
// under its own reseller, never for a domain or user token. Each domain
// is provisioned once per batch; one another reseller provisioned first
// is judged by that owner.
func TestCdrProvisionsDomainsAsUploadsDo(t *testing.T) {
	t.Parallel()
	prov := &provisioner{race: map[string]string{"race.example": "r1"}}
	r := newCdrRig(t, rigOptions{domains: prov})
	prov.cat = r.cat
	resR2 := r.token(t, auth.Principal{Name: "res-r2", Level: auth.LevelReseller, Reseller: "r2"})
	pbxC := r.token(t, auth.Principal{Name: "pbx-c", Level: auth.LevelDomain, Reseller: "r2", Domain: "c.example"})

	got, err := r.unary(t, resR2, []*cdrv1.Cdr{
		cdrOf("p1", "new1.example", "r2", "101"), cdrOf("p2", "new1.example", "r2", "102"),
		cdrOf("p3", "new3.example", "r1", "101"), cdrOf("p6", "race.example", "r2", "101"),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := answer{Accepted: 2, Rejected: []ingest.CdrRejection{
		{Index: 2, ID: "p3", Field: "domain", Reason: "is not covered by token res-r2"},
		{Index: 3, ID: "p6", Field: "domain", Reason: "is not covered by token res-r2"},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("reseller token: %+v, want %+v", got, want)
	}
	got, err = r.unary(t, pbxC, []*cdrv1.Cdr{cdrOf("p4", "new2.example", "r2", "101")})
	if err != nil {
		t.Fatal(err)
	}
	want = answer{Rejected: []ingest.CdrRejection{{Index: 0, ID: "p4", Field: "domain", Reason: "is not covered by token pbx-c"}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("domain token: %+v, want %+v", got, want)
	}
	got, err = r.unary(t, testenv.BootstrapToken, []*cdrv1.Cdr{cdrOf("p5", "new4.example", "r9", "")})
	if err != nil {
		t.Fatal(err)
	}
	if want := (answer{Accepted: 1, Rejected: []ingest.CdrRejection{}}); !reflect.DeepEqual(got, want) {
		t.Fatalf("system token: %+v, want %+v", got, want)
	}
	prov.mu.Lock()
	calls := slices.Clone(prov.calls)
	prov.mu.Unlock()
	if want := []string{"res-r2:new1.example/r2", "res-r2:race.example/r2", "bootstrap:new4.example/r9"}; !slices.Equal(calls, want) {
		t.Fatalf("provisioned %v, want %v", calls, want)
	}
	for dom, reseller := range map[string]string{"new1.example": "r2", "new4.example": "r9"} {
		if owner, ok, err := r.cat.DomainOwner(context.Background(), dom); err != nil || !ok || owner != reseller {
			t.Fatalf("%s: owner %q %v %v, want %s", dom, owner, ok, err, reseller)
		}
	}
	if ids := r.storedIDs(t); !slices.Equal(ids, []string{"p1", "p2", "p5"}) {
		t.Fatalf("stored %v", ids)
	}
}

// sameWayCorpus is a batch of good and bad CDRs, with what each one's
// answer is: the field it is rejected for, or "" when it is stored.
func sameWayCorpus() ([]*cdrv1.Cdr, []string) {
	type entry struct {
		field string
		c     *cdrv1.Cdr
	}
	with := func(id string, f func(c *cdrv1.Cdr)) *cdrv1.Cdr {
		c := goodCdr(id)
		f(c)
		return c
	}
	unanswered := func(c *cdrv1.Cdr) { c.Disposition, c.AnsweredAt, c.BillableS, c.DurationS = "no_answer", nil, 0, 0 }
	future := timestamppb.New(time.Now().Add(48 * time.Hour))
	entries := []entry{
		{"", goodCdr("eq-0")},
		{"direction", with("eq-1", func(c *cdrv1.Cdr) { c.Direction = "sideways" })},
		{"ended_at", with("eq-2", func(c *cdrv1.Cdr) {
			unanswered(c)
			c.EndedAt = timestamppb.New(callStart.Add(-10 * time.Second))
		})},
		{"", with("eq-3", unanswered)},
		{"id", goodCdr("eq-0")},
		{"domain", with("eq-5", func(c *cdrv1.Cdr) { c.Domain = "b.example" })},
		{"from", with("eq-6", func(c *cdrv1.Cdr) { c.From, c.To = "", "not a number" })},
		{"", with("eq-7", func(c *cdrv1.Cdr) { c.Domain, c.Direction = " A.Example ", "Outbound" })},
		{"answered_at", with("eq-8", func(c *cdrv1.Cdr) { c.AnsweredAt, c.BillableS = nil, 0 })},
		{"started_at", with("eq-9", func(c *cdrv1.Cdr) { c.StartedAt, c.AnsweredAt, c.EndedAt = future, future, future })},
		{"duration_s", with("eq-10", func(c *cdrv1.Cdr) { c.DurationS = 100 })},
		{"recording_ids[1]", with("eq-11", func(c *cdrv1.Cdr) { c.RecordingIds = []string{"rec-ok", "not ok"} })},
		{"", with("eq-12", func(c *cdrv1.Cdr) { c.User, c.RecordingIds = "", nil })},
		{"id", with("", func(c *cdrv1.Cdr) {})},
	}
	cdrs := make([]*cdrv1.Cdr, len(entries))
	fields := make([]string, len(entries))
	for i, e := range entries {
		cdrs[i], fields[i] = e.c, e.field
	}
	return cdrs, fields
}

// The same corpus through gRPC (unary and streamed in pieces), an HTTP
// JSON array and HTTP NDJSON gets the same answer, rejection for
// rejection, and stores the same CDRs.
func TestCdrSameAnswerEveryWay(t *testing.T) {
	t.Parallel()
	corpus, fields := sameWayCorpus()
	scope := auth.Principal{Name: "pbx-a", Level: auth.LevelDomain, Reseller: "r1", Domain: "a.example"}
	ways := []struct {
		name string
		send func(t *testing.T, r *cdrRig, token string) (answer, error)
	}{
		{"grpc unary", func(t *testing.T, r *cdrRig, token string) (answer, error) { return r.unary(t, token, clones(corpus)) }},
		{"grpc stream", func(t *testing.T, r *cdrRig, token string) (answer, error) {
			c := clones(corpus)
			return r.stream(t, token, c[:5], c[5:6], nil, c[6:])
		}},
		{"http json", func(t *testing.T, r *cdrRig, token string) (answer, error) {
			a, code, body := r.postCdrs(t, token, "application/json", corpus)
			if code != http.StatusOK {
				return a, fmt.Errorf("%d %s", code, body)
			}
			return a, nil
		}},
		{"http ndjson", func(t *testing.T, r *cdrRig, token string) (answer, error) {
			a, code, body := r.postCdrs(t, token, "application/x-ndjson", corpus)
			if code != http.StatusOK {
				return a, fmt.Errorf("%d %s", code, body)
			}
			return a, nil
		}},
	}
	answers := make([]answer, len(ways))
	stored := make([][]*cdrv1.Cdr, len(ways))
	t.Run("ways", func(t *testing.T) {
		for i, way := range ways {
			t.Run(way.name, func(t *testing.T) {
				t.Parallel()
				r := newCdrRig(t, rigOptions{})
				a, err := way.send(t, r, r.token(t, scope))
				if err != nil {
					t.Fatal(err)
				}
				answers[i] = a
				for _, s := range r.stored(t) {
					s.cdr.AcceptedAt = nil
					stored[i] = append(stored[i], s.cdr)
				}
				slices.SortFunc(stored[i], func(a, b *cdrv1.Cdr) int { return strings.Compare(a.GetId(), b.GetId()) })
			})
		}
	})
	if t.Failed() {
		return
	}
	want := answers[0]
	var gotFields []string
	accepted := 0
	for i, f := range fields {
		if f == "" {
			accepted++
			continue
		}
		gotFields = append(gotFields, fmt.Sprintf("%d:%s", i, f))
	}
	var wantFields []string
	for _, r := range want.Rejected {
		wantFields = append(wantFields, fmt.Sprintf("%d:%s", r.Index, r.Field))
	}
	if want.Accepted != accepted || !slices.Equal(wantFields, gotFields) {
		t.Fatalf("%s: %+v\nwant accepted %d, rejected %v", ways[0].name, want, accepted, gotFields)
	}
	for _, r := range want.Rejected {
		if r.Index == 6 && !strings.Contains(r.Reason, "; also to: ") {
			t.Errorf("a CDR with two bad fields names only one: %+v", r)
		}
	}
	for i := range ways[1:] {
		if !reflect.DeepEqual(answers[i+1], want) {
			t.Errorf("%s answered %+v\n%s answered %+v", ways[i+1].name, answers[i+1], ways[0].name, want)
		}
		if len(stored[i+1]) != len(stored[0]) {
			t.Fatalf("%s stored %d CDRs, %s %d", ways[i+1].name, len(stored[i+1]), ways[0].name, len(stored[0]))
		}
		for j := range stored[0] {
			if !proto.Equal(stored[i+1][j], stored[0][j]) {
				t.Errorf("%s stored %v\n%s stored %v", ways[i+1].name, stored[i+1][j], ways[0].name, stored[0][j])
			}
		}
	}
	if len(stored[0]) != accepted || stored[0][3].GetDomain() != "a.example" || stored[0][3].GetDirection() != "outbound" {
		t.Fatalf("stored %v; want the normalised eq-7 among %d", stored[0], accepted)
	}
}

// A stream's indexes count across its messages, and an id seen in an
// earlier message is a duplicate in a later one.
func TestCdrStreamCountsAcrossMessages(t *testing.T) {
	t.Parallel()
	r := newCdrRig(t, rigOptions{})
	c := goodCdrs("st", 8)
	c[3].To = ""
	c[5] = goodCdr(c[1].GetId())
	c[7].Disposition = "hung up"
	got, err := r.stream(t, testenv.BootstrapToken, c[:4], c[4:6], c[6:])
	if err != nil {
		t.Fatal(err)
	}
	want := answer{Accepted: 5, Rejected: []ingest.CdrRejection{
		{Index: 3, ID: c[3].GetId(), Field: "to", Reason: "is required: a number or an extension"},
		{Index: 5, ID: c[1].GetId(), Field: "id", Reason: "appears twice in this batch"},
		{Index: 7, ID: c[7].GetId(), Field: "disposition", Reason: `must be one of answered, no_answer, busy, failed, cancelled, voicemail, not "hung up"`},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("answer %+v\nwant   %+v", got, want)
	}
	if n := len(r.storedIDs(t)); n != 5 {
		t.Fatalf("%d stored, want 5", n)
	}
}

// problem decodes a problem+json body.
func problem(t *testing.T, body []byte) apierr.Problem {
	t.Helper()
	var p apierr.Problem
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("problem %s: %v", body, err)
	}
	return p
}

// More than cdr.MaxBatch CDRs is refused whole, naming the field, before
// anything is published, every way; exactly cdr.MaxBatch is taken.
func TestCdrBatchLimit(t *testing.T) {
	t.Parallel()
	r := newCdrRig(t, rigOptions{})
	over := goodCdrs("big", cdr.MaxBatch+1)
	for _, ct := range []string{"application/json", "application/x-ndjson"} {
		_, code, body := r.postCdrs(t, testenv.BootstrapToken, ct, over)
		p := problem(t, body)
		if code != http.StatusRequestEntityTooLarge || len(p.InvalidParams) != 1 || p.InvalidParams[0].Field != "cdrs" {
			t.Fatalf("%s with %d CDRs: %d %s, want 413 naming cdrs", ct, len(over), code, body)
		}
	}
	isTooMany := func(err error) bool {
		st, _ := status.FromError(err)
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) == 1 && br.GetFieldViolations()[0].GetField() == "cdrs" {
				return st.Code() == codes.ResourceExhausted
			}
		}
		return false
	}
	if _, err := r.unary(t, testenv.BootstrapToken, over); !isTooMany(err) {
		t.Fatalf("unary with %d CDRs: %v, want ResourceExhausted naming cdrs", len(over), err)
	}
	if _, err := r.stream(t, testenv.BootstrapToken, over[:5000], over[5000:]); !isTooMany(err) {
		t.Fatalf("stream with %d CDRs: %v, want ResourceExhausted naming cdrs", len(over), err)
	}
	if n := len(r.stored(t)); n != 0 {
		t.Fatalf("refused batches stored %d CDRs", n)
	}
	got, code, body := r.postCdrs(t, testenv.BootstrapToken, "application/x-ndjson", over[:cdr.MaxBatch])
	if code != http.StatusOK || got.Accepted != cdr.MaxBatch || len(got.Rejected) != 0 {
		t.Fatalf("exactly %d CDRs: %d %.300s", cdr.MaxBatch, code, body)
	}
}

// What only JSON can get wrong: a field of the wrong type, an unknown
// field or an element that is not an object is one bad CDR; a body that
// is not JSON is refused whole, naming the index and the line.
func TestCdrHTTPDecoding(t *testing.T) {
	t.Parallel()
	record := func(id string, edit func(m map[string]any)) string {
		b, _ := json.Marshal(cdr.ToRecord(goodCdr(id)))
		m := map[string]any{}
		_ = json.Unmarshal(b, &m)
		if edit != nil {
			edit(m)
		}
		b, _ = json.Marshal(m)
		return string(b)
	}
	good := func(id string) string { return record(id, nil) }
	cases := []struct {
		name, contentType, body string
		limit                   int64
		code                    int
		accepted                int
		rejected                []ingest.CdrRejection // with a 200
		param, reason           string                // with a problem: the first invalid param
	}{
		{
			name: "fields of the wrong type", contentType: "application/json",
			body: "[" + strings.Join([]string{
				good("j0"),
				record("j1", func(m map[string]any) { m["duration_s"] = "ten"; m["started_at"] = "yesterday"; m["extra"] = 1 }),
				"42",
				record("j3", func(m map[string]any) { m["recording_ids"] = "rec-1" }),
				good("j4"),
			}, ",\n") + "]",
			code: 200, accepted: 2,
			rejected: []ingest.CdrRejection{
				{Index: 1, ID: "j1", Field: "started_at", Reason: `must be an RFC 3339 time such as 2026-11-02T10:00:00Z, not "yesterday"; also duration_s: must be a whole number of seconds; also extra: is not a known field`},
				{Index: 2, Field: "record", Reason: "must be a JSON object"},
				{Index: 3, ID: "j3", Field: "recording_ids", Reason: "must be an array of recording ids"},
			},
		},
		{
			name: "syntax error", contentType: "application/json",
			body: "[\n" + good("j0") + ",\n" + `{"id": "j1",, "x": 1}` + "\n]",
			code: 400, param: "cdrs[1]", reason: "line 3, column 13: invalid character ','",
		},
		{
			name: "array not closed", contentType: "application/json",
			body: "[" + good("j0"),
			code: 400, param: "cdrs[1]", reason: "the body ends before the array is closed",
		},
		{
			name: "not an array", contentType: "application/json",
			body: good("j0"),
			code: 400, param: "body", reason: "must be a JSON array",
		},
		{
			name: "data after the array", contentType: "application/json",
			body: "[" + good("j0") + "] x",
			code: 400, param: "body", reason: "unexpected data after the array",
		},
		{
			name: "empty array", contentType: "application/json",
			body: "[ ]",
			code: 400, param: "cdrs", reason: "at least one",
		},
		{
			name: "ndjson line that is not JSON", contentType: "application/x-ndjson",
			body: good("n0") + "\n\n" + `{"id": "n1", oops}` + "\r\n" + good("n2") + "\n",
			code: 200, accepted: 2,
			rejected: []ingest.CdrRejection{{Index: 1, Field: "record", Reason: "line 3: is not valid JSON: invalid character 'o' looking for beginning of object key string"}},
		},
		{
			name: "wrong content type", contentType: "text/plain",
			body: good("x"),
			code: 400, param: "Content-Type", reason: "application/x-ndjson",
		},
		{
			name: "body over the limit", contentType: "application/x-ndjson", limit: 4096,
			body: strings.Repeat(good("big")+"\n", 20),
			code: 413, param: "body", reason: "at most 4096 bytes",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newCdrRig(t, rigOptions{limits: ingest.Limits{MaxCdrBodyBytes: tc.limit}})
			code, _, body := r.post(t, testenv.BootstrapToken, tc.contentType, []byte(tc.body))
			if code != tc.code {
				t.Fatalf("%d %s, want %d", code, body, tc.code)
			}
			if code == http.StatusOK {
				var res ingest.CdrResult
				if err := json.Unmarshal(body, &res); err != nil {
					t.Fatal(err)
				}
				if res.Accepted != tc.accepted || !reflect.DeepEqual(res.Rejected, tc.rejected) {
					t.Fatalf("answer %+v\nwant accepted %d, rejected %+v", res, tc.accepted, tc.rejected)
				}
				if n := len(r.stored(t)); n != tc.accepted {
					t.Fatalf("%d stored, want %d", n, tc.accepted)
				}
				return
			}
			p := problem(t, body)
			if len(p.InvalidParams) == 0 || p.InvalidParams[0].Field != tc.param || !strings.Contains(p.InvalidParams[0].Reason, tc.reason) {
				t.Fatalf("problem %s, want %s: ...%s...", body, tc.param, tc.reason)
			}
			if n := len(r.stored(t)); n != 0 {
				t.Fatalf("a refused request stored %d CDRs", n)
			}
		})
	}
}
