package callvault_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/pkg/testenv"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	ingestv1 "github.com/callvault/callvault/proto/callvault/ingest/v1"
	"github.com/callvault/callvault/services/gateway"
	"github.com/callvault/callvault/services/ingest"
	"github.com/callvault/callvault/services/policy"
	"github.com/callvault/callvault/services/router"
)

// stack is policy, ingest and the gateway in one process on the real
// servers, reached over real HTTP and gRPC.
type stack struct {
	t    *testing.T
	d    *platform.Deps
	pol  *policy.Service
	rt   *router.Service
	url  string
	conn *grpc.ClientConn
}

// withRouter adds the archive router to a stack (its settings given).
type withRouter struct{ set router.Settings }

func newStack(t *testing.T, opts ...withRouter) *stack {
	t.Helper()
	store, err := cds.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := testenv.Deps(t, store)
	pol, err := policy.New(d, policy.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	ing := ingest.New(d, ingest.Limits{MaxMediaBytes: 1 << 20}, pol)
	gw := gateway.New(d, pol)
	gw.SetCdrs(pol.Ledger())
	services := []platform.Service{ing, pol, gw}
	var rt *router.Service
	for _, o := range opts {
		if rt, err = router.New(d, o.set, nil); err != nil {
			t.Fatal(err)
		}
		gw.SetArchive(rt)
		services = append(services, rt)
	}
	mux := http.NewServeMux()
	g, _ := platform.NewGRPCServer(d.Tokens, d.Log)
	for _, s := range services {
		s.RegisterHTTP(mux, d.Tokens)
		s.RegisterGRPC(g)
	}
	hs := httptest.NewServer(mux)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pol.Run(ctx) }()
	rdone := make(chan error, 1)
	if rt != nil {
		go func() { rdone <- rt.Run(ctx) }()
	} else {
		rdone <- nil
	}
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		g.Stop()
		hs.Close()
		cancel()
		<-done
		<-rdone
	})
	return &stack{t: t, d: d, pol: pol, rt: rt, url: hs.URL, conn: conn}
}

// rest sends a JSON request and returns the status and the body.
func (s *stack) rest(token, method, path string, body any) (int, []byte) {
	s.t.Helper()
	var r io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			s.t.Fatal(err)
		}
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, s.url+path, r)
	if err != nil {
		s.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return s.send(req)
}

func (s *stack) send(req *http.Request) (int, []byte) {
	s.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	if resp.StatusCode >= 400 && resp.Header.Get("Content-Type") != "application/problem+json" {
		s.t.Fatalf("%s %s answered %d as %q, want application/problem+json", req.Method, req.URL.Path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return resp.StatusCode, b
}

// issue mints a token over REST and returns it with its id.
func (s *stack) issue(by string, scope map[string]any) (token, id string) {
	s.t.Helper()
	code, body := s.rest(by, http.MethodPost, "/api/v1/tokens", scope)
	if code != http.StatusCreated {
		s.t.Fatalf("issue %v: %d %s", scope, code, body)
	}
	var out struct{ Token, ID string }
	if err := json.Unmarshal(body, &out); err != nil {
		s.t.Fatal(err)
	}
	return out.Token, out.ID
}

// provision provisions domain to reseller over REST, failing on anything
// but a 201.
func (s *stack) provision(by, domain, reseller string) {
	s.t.Helper()
	if code, body := s.rest(by, http.MethodPost, "/api/v1/domains", map[string]string{"domain": domain, "reseller": reseller}); code != http.StatusCreated {
		s.t.Fatalf("provision %s to %s: %d %s", domain, reseller, code, body)
	}
}

type upload struct{ id, reseller, domain, user string }

func (u upload) metadata() map[string]any {
	return map[string]any{"id": u.id, "call_id": "call-" + u.id, "reseller": u.reseller, "domain": u.domain, "user": u.user,
		"mode": "automatic", "started_at": "2026-11-01T10:00:00Z", "duration_s": 42, "content_type": "audio/wav"}
}

// uploadHTTP posts a recording over REST.
func (s *stack) uploadHTTP(token string, u upload) (int, []byte) {
	s.t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mj, _ := json.Marshal(u.metadata())
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="metadata"`)
	h.Set("Content-Type", "application/json")
	pw, _ := mw.CreatePart(h)
	_, _ = pw.Write(mj)
	fw, _ := mw.CreateFormFile("media", "r.wav")
	_, _ = fw.Write([]byte("RIFF-media-of-" + u.id))
	_ = mw.Close()
	req, _ := http.NewRequest(http.MethodPost, s.url+"/api/v1/ingest/recordings", &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return s.send(req)
}

func (s *stack) ctx(token string) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	s.t.Cleanup(cancel)
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// uploadGRPC streams a recording over gRPC.
func (s *stack) uploadGRPC(token string, u upload) error {
	s.t.Helper()
	st, err := ingestv1.NewIngestServiceClient(s.conn).UploadRecording(s.ctx(token))
	if err != nil {
		return err
	}
	md := &ingestv1.RecordingMetadata{Id: u.id, CallId: "call-" + u.id, Reseller: u.reseller, Domain: u.domain, User: u.user,
		Mode: eventv1.RecordingMode_RECORDING_MODE_AUTOMATIC, StartedAt: timestamppb.New(time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)),
		DurationS: 42, ContentType: "audio/wav"}
	// A Send answered io.EOF means the server has already ended the call
	// (a refused token, say): its status comes from CloseAndRecv.
	for _, req := range []*ingestv1.UploadRecordingRequest{
		{Part: &ingestv1.UploadRecordingRequest_Metadata{Metadata: md}},
		{Part: &ingestv1.UploadRecordingRequest_Chunk{Chunk: []byte("RIFF-" + u.id)}},
	} {
		if err := st.Send(req); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return err
		}
	}
	_, err = st.CloseAndRecv()
	return err
}

// listed returns the ids a REST list answers, or the status when not 200.
func (s *stack) listed(token, query string) ([]string, int) {
	s.t.Helper()
	code, body := s.rest(token, http.MethodGet, "/api/v1/pbx/recordings?"+query, nil)
	if code != http.StatusOK {
		return nil, code
	}
	var out struct{ Recordings []struct{ ID string } }
	if err := json.Unmarshal(body, &out); err != nil {
		s.t.Fatal(err)
	}
	ids := []string{}
	for _, r := range out.Recordings {
		ids = append(ids, r.ID)
	}
	return ids, code
}

// waitListed waits until the admission consumer has catalogued id.
func (s *stack) waitListed(token, query, id string) {
	s.t.Helper()
	testenv.WaitFor(s.t, id+" catalogued", func() bool {
		ids, _ := s.listed(token, query)
		return strings.Contains(strings.Join(ids, ","), id)
	})
}
