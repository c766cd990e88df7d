package ingest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/cdr"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/pkg/testenv"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	ingestv1 "github.com/callvault/callvault/proto/callvault/ingest/v1"
	"github.com/callvault/callvault/services/ingest"
)

// cdrRig is an ingest service on the real servers, served over HTTP and
// gRPC, with a.example and b.example provisioned under r1 and c.example
// under r2.
type cdrRig struct {
	d    *platform.Deps
	svc  *ingest.Service
	cat  *catalog.Catalog
	url  string
	grpc ingestv1.IngestServiceClient
}

type rigOptions struct {
	limits  ingest.Limits
	domains ingest.Provisioner
	// wrap, when set, sits between the CDR publisher and JetStream.
	wrap func(jetstream.JetStream) jetstream.JetStream
}

func newCdrRig(t *testing.T, o rigOptions) *cdrRig {
	t.Helper()
	fs, err := cds.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := testenv.Deps(t, fs)
	cat := catalog.New(d.Redis, d.Names.Namespace())
	for dom, reseller := range map[string]string{"a.example": "r1", "b.example": "r1", "c.example": "r2"} {
		if _, err := cat.ApplyDomain(context.Background(), catalog.Domain{Domain: dom, Reseller: reseller, ProvisionedBy: "test", ProvisionedAt: time.Now()}, 0); err != nil {
			t.Fatal(err)
		}
	}
	if o.limits.Publish == (ingest.Publish{}) {
		o.limits.Publish = fastRetries
	}
	svc := ingest.New(d, o.limits, o.domains)
	if o.wrap != nil {
		ingest.WrapCdrJetStream(svc, o.wrap)
	}
	mux := http.NewServeMux()
	svc.RegisterHTTP(mux, d.Tokens)
	srv := httptest.NewServer(platform.NewHTTPHandler(mux, testenv.Logger()))
	t.Cleanup(srv.Close)

	g, _ := platform.NewGRPCServer(d.Tokens, testenv.Logger())
	svc.RegisterGRPC(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &cdrRig{d: d, svc: svc, cat: cat, url: srv.URL, grpc: ingestv1.NewIngestServiceClient(conn)}
}

// token issues a token for scope (as the system) and returns it.
func (r *cdrRig) token(t *testing.T, scope auth.Principal) string {
	t.Helper()
	tok, _, err := r.d.Tokens.Issue(context.Background(), auth.Principal{Name: auth.BootstrapName, Level: auth.LevelSystem}, scope, time.Time{})
	if err != nil {
		t.Fatalf("issue %v: %v", scope, err)
	}
	return tok
}

func withToken(token string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)
}

// answer is a response of any of the three ways, comparable.
type answer struct {
	Accepted, Duplicates int
	Rejected             []ingest.CdrRejection
}

func answerOf(accepted, duplicates uint32, rs []*ingestv1.CdrRejection) answer {
	a := answer{Accepted: int(accepted), Duplicates: int(duplicates), Rejected: []ingest.CdrRejection{}}
	for _, r := range rs {
		a.Rejected = append(a.Rejected, ingest.CdrRejection{Index: int(r.GetIndex()), ID: r.GetId(), Field: r.GetField(), Reason: r.GetReason()})
	}
	return a
}

// clones copies cdrs: the service normalises what it is given in place.
func clones(cdrs []*cdrv1.Cdr) []*cdrv1.Cdr {
	out := make([]*cdrv1.Cdr, len(cdrs))
	for i, c := range cdrs {
		out[i] = proto.Clone(c).(*cdrv1.Cdr)
	}
	return out
}

func (r *cdrRig) unary(t *testing.T, token string, cdrs []*cdrv1.Cdr) (answer, error) {
	t.Helper()
	res, err := r.grpc.PublishCdrs(withToken(token), &ingestv1.PublishCdrsRequest{Cdrs: cdrs})
	if err != nil {
		return answer{}, err
	}
	return answerOf(res.GetAccepted(), res.GetDuplicates(), res.GetRejected()), nil
}

func (r *cdrRig) stream(t *testing.T, token string, chunks ...[]*cdrv1.Cdr) (answer, error) {
	t.Helper()
	st, err := r.grpc.StreamCdrs(withToken(token))
	if err != nil {
		t.Fatal(err)
	}
	for _, chunk := range chunks {
		if err := st.Send(&ingestv1.StreamCdrsRequest{Cdrs: chunk}); err != nil {
			if errors.Is(err, io.EOF) {
				break // the server answered early; CloseAndRecv says why
			}
			t.Fatal(err)
		}
	}
	res, err := st.CloseAndRecv()
	if err != nil {
		return answer{}, err
	}
	return answerOf(res.GetAccepted(), res.GetDuplicates(), res.GetRejected()), nil
}

// post sends body to the CDR route and returns the status, headers and
// body of the response.
func (r *cdrRig) post(t *testing.T, token, contentType string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, r.url+"/api/v1/ingest/cdrs", bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, out
}

// postCdrs sends cdrs as a JSON array or as NDJSON and decodes a 200.
func (r *cdrRig) postCdrs(t *testing.T, token, contentType string, cdrs []*cdrv1.Cdr) (answer, int, []byte) {
	t.Helper()
	var body []byte
	if contentType == "application/json" {
		body = jsonArray(t, cdrs)
	} else {
		body = ndjson(t, cdrs)
	}
	code, _, out := r.post(t, token, contentType, body)
	if code != http.StatusOK {
		return answer{}, code, out
	}
	var res ingest.CdrResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("answer %s: %v", out, err)
	}
	return answer{Accepted: res.Accepted, Duplicates: res.Duplicates, Rejected: res.Rejected}, code, out
}

func jsonArray(t *testing.T, cdrs []*cdrv1.Cdr) []byte {
	t.Helper()
	recs := make([]cdr.Record, len(cdrs))
	for i, c := range cdrs {
		recs[i] = cdr.ToRecord(c)
	}
	b, err := json.Marshal(recs)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ndjson(t *testing.T, cdrs []*cdrv1.Cdr) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, c := range cdrs {
		if err := enc.Encode(cdr.ToRecord(c)); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// storedCdr is one message of the CDR stream, decoded.
type storedCdr struct {
	msgID, contentType string
	env                *eventv1.Envelope
	cdr                *cdrv1.Cdr
}

// stored reads every message of the CDR stream (nothing consumes it in
// these tests), checking each decodes to a valid CDR under its own id.
func (r *cdrRig) stored(t *testing.T) []storedCdr {
	t.Helper()
	ctx := context.Background()
	st, err := r.d.JS.Stream(ctx, r.d.Names.CdrStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []storedCdr
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		env, err := bus.DecodeEnvelope(m.Data)
		if err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		c, err := cdr.FromEvent(env)
		if err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		if m.Subject != r.d.Names.CdrSubject() || env.GetType() != cdr.EventType || env.GetSchemaVersion() != bus.SchemaVersion {
			t.Fatalf("seq %d: subject %s type %s schema %d", seq, m.Subject, env.GetType(), env.GetSchemaVersion())
		}
		out = append(out, storedCdr{msgID: m.Header.Get(jetstream.MsgIDHeader), contentType: m.Header.Get("Content-Type"), env: env, cdr: c})
	}
	return out
}

// storedIDs returns the ids of the stored CDRs, sorted, failing on any
// stored twice or whose Nats-Msg-Id is not its event id.
func (r *cdrRig) storedIDs(t *testing.T) []string {
	t.Helper()
	var ids []string
	seen := map[string]bool{}
	for _, s := range r.stored(t) {
		id := cdr.EventID(s.cdr.GetDomain(), s.cdr.GetId())
		if s.msgID != id || s.env.GetId() != id {
			t.Fatalf("CDR %s stored with Nats-Msg-Id %q, event id %q", id, s.msgID, s.env.GetId())
		}
		if seen[id] {
			t.Fatalf("CDR %s stored twice", id)
		}
		seen[id] = true
		ids = append(ids, s.cdr.GetId())
	}
	slices.Sort(ids)
	return ids
}

// counter reads callvault_ingest_cdrs_total{status}.
func (r *cdrRig) counter(t *testing.T, status string) float64 {
	t.Helper()
	return r.metric(t, "callvault_ingest_cdrs_total", status)
}

// metric reads the counter name, with the given status label when status
// is not empty.
func (r *cdrRig) metric(t *testing.T, name, status string) float64 {
	t.Helper()
	mfs, err := r.d.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if status == "" {
				return m.GetCounter().GetValue()
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == "status" && l.GetValue() == status {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{status=%q}", name, status)
	return 0
}

// callStart is when the test calls started: an hour ago, whole seconds.
var callStart = time.Now().Add(-time.Hour).UTC().Truncate(time.Second)

// goodCdr is an answered inbound call of a.example's user 101 (r1).
func goodCdr(id string) *cdrv1.Cdr {
	start := callStart
	return &cdrv1.Cdr{
		Id: id, CallId: "call-" + id, Reseller: "r1", Domain: "a.example", User: "101",
		Direction: "inbound", From: "+15551230000", To: "101",
		StartedAt: timestamppb.New(start), AnsweredAt: timestamppb.New(start.Add(5 * time.Second)), EndedAt: timestamppb.New(start.Add(65 * time.Second)),
		DurationS: 65, BillableS: 60, Disposition: "answered", RecordingIds: []string{"rec-" + id},
	}
}

func goodCdrs(prefix string, n int) []*cdrv1.Cdr {
	out := make([]*cdrv1.Cdr, n)
	for i := range out {
		out[i] = goodCdr(fmt.Sprintf("%s-%05d", prefix, i))
	}
	return out
}

// concurrently runs fns at once and waits for them.
func concurrently(fns ...func()) {
	var wg sync.WaitGroup
	for _, fn := range fns {
		wg.Go(fn)
	}
	wg.Wait()
}
