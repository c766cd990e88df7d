package callvault_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/routerclient"
	"github.com/callvault/callvault/pkg/testenv"
	routerv1 "github.com/callvault/callvault/proto/callvault/router/v1"
	"github.com/callvault/callvault/services/gateway"
	"github.com/callvault/callvault/services/router"
)

// archiveStack is a stack with the router, a.example under r1, its admin
// token and a bucket of its own for archive configurations.
func archiveStack(t *testing.T) (s *stack, sys, dom, bucket string) {
	t.Helper()
	key, err := router.NewSecretKeySpec("e2e")
	if err != nil {
		t.Fatal(err)
	}
	s = newStack(t, withRouter{router.Settings{SecretKey: key, ParkedRetry: 200 * time.Millisecond,
		RetryBackOff: []time.Duration{100 * time.Millisecond}}})
	sys = testenv.BootstrapToken
	s.provision(sys, "a.example", "r1")
	dom, _ = s.issue(sys, map[string]any{"level": "domain", "reseller": "r1", "domain": "a.example", "name": "a-admin"})
	bucket = "b7-" + strings.ToLower(s.d.Names.Namespace())
	store, err := cds.NewS3(cds.S3Config{Endpoint: testenv.Env(t, "CALLVAULT_TEST_S3_ENDPOINT"), Region: "us-east-1", Bucket: bucket,
		AccessKey: testenv.Env(t, "CALLVAULT_TEST_S3_ACCESS_KEY"), SecretKey: testenv.Env(t, "CALLVAULT_TEST_S3_SECRET_KEY"), PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.EnsureBucket(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s, sys, dom, bucket
}

// createArchiveConfig creates a.example's configuration on bucket, to
// the age recipient when one is given.
func createArchiveConfig(t *testing.T, s *stack, token, bucket, recipient string) {
	t.Helper()
	cfg := map[string]any{"name": "our bucket", "level": "domain", "match": "a.example", "enabled": true, "storage_type": "s3",
		"send_recordings": true, "bucket": bucket, "endpoint": testenv.Env(t, "CALLVAULT_TEST_S3_ENDPOINT"),
		"access_key_id": testenv.Env(t, "CALLVAULT_TEST_S3_ACCESS_KEY")}
	if recipient != "" {
		cfg["age_recipient"] = recipient
	}
	code, body := s.rest(token, http.MethodPost, "/api/v1/archive/configs", map[string]any{
		"config": cfg, "secret": map[string]any{"secret_access_key": testenv.Env(t, "CALLVAULT_TEST_S3_SECRET_KEY")},
	})
	if code != http.StatusCreated {
		t.Fatalf("create config: %d %s", code, body)
	}
}

// archiveState is a recording's archive state as the gateway shows it.
func archiveState(s *stack, base, token, id string) (string, int) {
	req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/pbx/recordings/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	code, body := s.send(req)
	var raw struct {
		Archive struct {
			State string `json:"state"`
		} `json:"archive"`
	}
	_ = json.Unmarshal(body, &raw)
	return raw.Archive.State, code
}

// media sends a request to a recording's media route.
func media(t *testing.T, base, method, token, id string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, base+"/api/v1/pbx/recordings/"+id+"/media", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// TestHeadOfMediaMatchesGetFromTheArchive: a HEAD of the media route
// answers 200 with the recording's type and length without looking for
// the bytes; GET of the same recording, whose central copy is gone and
// whose archive is encrypted to the tenant's key, answers 409. A player
// or download manager that asks HEAD first is told the media is there.
func TestHeadOfMediaMatchesGetFromTheArchive(t *testing.T) {
	t.Parallel()
	s, _, dom, bucket := archiveStack(t)
	ident, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	createArchiveConfig(t, s, dom, bucket, ident.Recipient().String())
	if code, body := s.uploadHTTP(dom, upload{id: "rec-enc", reseller: "r1", domain: "a.example", user: "101"}); code != http.StatusCreated && code != http.StatusOK {
		t.Fatalf("upload: %d %s", code, body)
	}
	testenv.WaitFor(t, "rec-enc archived", func() bool {
		st, _ := archiveState(s, s.url, dom, "rec-enc")
		return st == "archived"
	})
	if err := removeCentral(s, "a.example", "rec-enc"); err != nil {
		t.Fatal(err)
	}
	get, body := media(t, s.url, http.MethodGet, dom, "rec-enc", nil)
	if get.StatusCode != http.StatusConflict || get.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("setup: GET of the encrypted archive = %d %s %s, want 409 problem+json", get.StatusCode, get.Header.Get("Content-Type"), body)
	}
	head, _ := media(t, s.url, http.MethodHead, dom, "rec-enc", nil)
	if head.StatusCode != get.StatusCode {
		t.Errorf("HEAD = %d (%s, Content-Length %s) while GET = %d: HEAD announces media GET refuses",
			head.StatusCode, head.Header.Get("Content-Type"), head.Header.Get("Content-Length"), get.StatusCode)
	}
}

// standaloneGateway is a second gateway on the stack's Redis and CDS that
// reaches the router only over gRPC, as a gateway process of its own
// does (CALLVAULT_ROUTER_ADDR).
func standaloneGateway(t *testing.T, s *stack) string {
	t.Helper()
	d := *s.d
	d.Registry = prometheus.NewRegistry()
	gw := gateway.New(&d, nil)
	gw.SetArchive(routerclient.New(s.conn))
	mux := http.NewServeMux()
	gw.RegisterHTTP(mux, s.d.Tokens)
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return hs.URL
}

// Holds (a property check; it passes): a gateway that reaches the router
// over gRPC with the caller's token forwarded plays an archived recording
// to its own user (whole, a range, If-Range, 416 past the end), shows it
// archived in the list, and gives another user of the domain and another
// domain's admin nothing.
func TestStandaloneGatewayPlaysTheArchiveAsTheCaller(t *testing.T) {
	t.Parallel()
	s, sys, dom, bucket := archiveStack(t)
	createArchiveConfig(t, s, dom, bucket, "")
	alice, _ := s.issue(dom, map[string]any{"name": "a-alice", "level": "user", "reseller": "r1", "domain": "a.example", "user": "101"})
	bob, _ := s.issue(dom, map[string]any{"name": "a-bob", "level": "user", "reseller": "r1", "domain": "a.example", "user": "102"})
	s.provision(sys, "z.example", "r2")
	other, _ := s.issue(sys, map[string]any{"level": "domain", "reseller": "r2", "domain": "z.example", "name": "z-admin"})
	if code, body := s.uploadHTTP(dom, upload{id: "rec-a", reseller: "r1", domain: "a.example", user: "101"}); code != http.StatusCreated && code != http.StatusOK {
		t.Fatalf("upload: %d %s", code, body)
	}
	gw := standaloneGateway(t, s)
	testenv.WaitFor(t, "rec-a archived", func() bool {
		st, _ := archiveState(s, gw, alice, "rec-a")
		return st == "archived"
	})
	if err := removeCentral(s, "a.example", "rec-a"); err != nil {
		t.Fatal(err)
	}
	want := "RIFF-media-of-rec-a"
	if resp, b := media(t, gw, http.MethodGet, alice, "rec-a", nil); resp.StatusCode != 200 || string(b) != want {
		t.Errorf("alice's own archived recording = %d %q", resp.StatusCode, b)
	}
	if resp, b := media(t, gw, http.MethodGet, alice, "rec-a", map[string]string{"Range": "bytes=5-"}); resp.StatusCode != 206 || string(b) != want[5:] {
		t.Errorf("a range of it = %d %q", resp.StatusCode, b)
	}
	if resp, b := media(t, gw, http.MethodGet, alice, "rec-a", map[string]string{"Range": "bytes=0-3", "If-Range": `"stale"`}); resp.StatusCode != 200 || string(b) != want {
		t.Errorf("a range with a stale If-Range = %d %q, want all of it", resp.StatusCode, b)
	}
	if resp, _ := media(t, gw, http.MethodGet, alice, "rec-a", map[string]string{"Range": "bytes=500-"}); resp.StatusCode != 416 {
		t.Errorf("a range past the end = %d, want 416", resp.StatusCode)
	}
	for name, tok := range map[string]string{"bob": bob, "z-admin": other} {
		if resp, b := media(t, gw, http.MethodGet, tok, "rec-a", nil); resp.StatusCode != 404 {
			t.Errorf("%s reading alice's archived recording = %d %q, want 404", name, resp.StatusCode, b)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, gw+"/api/v1/pbx/recordings", nil)
	req.Header.Set("Authorization", "Bearer "+alice)
	code, body := s.send(req)
	if code != 200 || !strings.Contains(string(body), `"state":"archived"`) {
		t.Errorf("alice's list = %d %s", code, body)
	}
}

// Holds (a property check; it passes): over the real gRPC API with real
// tokens, a user token learns the archive state of its own recordings
// only (another user's, or a batch holding one, is not found), plays
// nothing of another user's, and neither lists nor reads configurations;
// another domain's admin is refused the domain.
func TestArchiveServiceTenancyOverGRPCWithUserTokens(t *testing.T) {
	t.Parallel()
	s, sys, dom, bucket := archiveStack(t)
	createArchiveConfig(t, s, dom, bucket, "")
	alice, _ := s.issue(dom, map[string]any{"name": "a-alice", "level": "user", "reseller": "r1", "domain": "a.example", "user": "101"})
	bob, _ := s.issue(dom, map[string]any{"name": "a-bob", "level": "user", "reseller": "r1", "domain": "a.example", "user": "102"})
	s.provision(sys, "z.example", "r2")
	other, _ := s.issue(sys, map[string]any{"level": "domain", "reseller": "r2", "domain": "z.example", "name": "z-admin"})
	for id, user := range map[string]string{"rec-a": "101", "rec-b": "102"} {
		if code, body := s.uploadHTTP(dom, upload{id: id, reseller: "r1", domain: "a.example", user: user}); code != http.StatusCreated && code != http.StatusOK {
			t.Fatalf("upload: %d %s", code, body)
		}
	}
	for _, id := range []string{"rec-a", "rec-b"} {
		testenv.WaitFor(t, id+" archived", func() bool {
			st, _ := archiveState(s, s.url, dom, id)
			return st == "archived"
		})
	}
	cl := routerv1.NewArchiveServiceClient(s.conn)
	states := func(tok string, ids ...string) ([]*routerv1.ArchiveState, error) {
		res, err := cl.GetArchiveStates(s.ctx(tok), &routerv1.GetArchiveStatesRequest{Domain: "a.example", ArtifactIds: ids})
		return res.GetStates(), err
	}
	if st, err := states(alice, "rec-a"); err != nil || len(st) != 1 || st[0].GetState() != "archived" {
		t.Errorf("alice's own state = %v, %v", st, err)
	}
	for name, call := range map[string]func() error{
		"bob asks rec-a":             func() error { _, err := states(bob, "rec-a"); return err },
		"alice asks rec-a and rec-b": func() error { _, err := states(alice, "rec-a", "rec-b"); return err },
		"z-admin asks rec-a":         func() error { _, err := states(other, "rec-a"); return err },
		"alice lists configurations": func() error { _, err := cl.ListConfigs(s.ctx(alice), &routerv1.ListConfigsRequest{}); return err },
		"bob plays rec-a": func() error {
			return recvErr(cl.OpenArchived(s.ctx(bob), &routerv1.OpenArchivedRequest{Domain: "a.example", ArtifactId: "rec-a"}))
		},
		"z-admin plays rec-a": func() error {
			return recvErr(cl.OpenArchived(s.ctx(other), &routerv1.OpenArchivedRequest{Domain: "a.example", ArtifactId: "rec-a"}))
		},
		"alice plays a missing id": func() error {
			return recvErr(cl.OpenArchived(s.ctx(alice), &routerv1.OpenArchivedRequest{Domain: "a.example", ArtifactId: "rec-zzz"}))
		},
		"bob asks a.example's config": func() error {
			_, err := cl.GetStatus(s.ctx(bob), &routerv1.GetStatusRequest{Id: firstConfig(t, s, dom)})
			return err
		},
	} {
		err := call()
		if c := status.Code(err); c != codes.NotFound && c != codes.PermissionDenied {
			t.Errorf("%s = %v, want not found or permission denied", name, err)
		}
	}
}

func recvErr(st grpc.ServerStreamingClient[routerv1.OpenArchivedResponse], err error) error {
	if err != nil {
		return err
	}
	_, err = st.Recv()
	return err
}

// firstConfig is the id of the first configuration the token lists.
func firstConfig(t *testing.T, s *stack, token string) string {
	t.Helper()
	res, err := routerv1.NewArchiveServiceClient(s.conn).ListConfigs(s.ctx(token), &routerv1.ListConfigsRequest{})
	if err != nil || len(res.GetConfigs()) == 0 {
		t.Fatalf("list configurations: %v", err)
	}
	return res.GetConfigs()[0].GetId()
}

// Holds (a property check; it passes): a gateway reaching the router over
// gRPC maps its answers back: an encrypted archive is 409 problem+json
// with the reason; with the router unreachable the list still answers,
// the archive state "unknown", and media whose central copy is gone is
// 503, never a broken 200.
func TestStandaloneGatewayMapsRouterAnswers(t *testing.T) {
	t.Parallel()
	s, _, dom, bucket := archiveStack(t)
	ident, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	createArchiveConfig(t, s, dom, bucket, ident.Recipient().String())
	if code, body := s.uploadHTTP(dom, upload{id: "rec-e", reseller: "r1", domain: "a.example", user: "101"}); code != http.StatusCreated && code != http.StatusOK {
		t.Fatalf("upload: %d %s", code, body)
	}
	gw := standaloneGateway(t, s)
	testenv.WaitFor(t, "rec-e archived", func() bool {
		st, _ := archiveState(s, gw, dom, "rec-e")
		return st == "archived"
	})
	if err := removeCentral(s, "a.example", "rec-e"); err != nil {
		t.Fatal(err)
	}
	resp, body := media(t, gw, http.MethodGet, dom, "rec-e", nil)
	if resp.StatusCode != http.StatusConflict || resp.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(string(body), "age") {
		t.Errorf("an encrypted archive through the standalone gateway = %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}

	// A gateway whose router does not answer.
	d := *s.d
	d.Registry = prometheus.NewRegistry()
	lone := gateway.New(&d, nil)
	cl, closeConn, err := routerclient.Dial("127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = closeConn() })
	lone.SetArchive(cl)
	mux := http.NewServeMux()
	lone.RegisterHTTP(mux, s.d.Tokens)
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	req, _ := http.NewRequest(http.MethodGet, hs.URL+"/api/v1/pbx/recordings?domain=a.example", nil)
	req.Header.Set("Authorization", "Bearer "+dom)
	code, listBody := s.send(req)
	if code != http.StatusOK || !strings.Contains(string(listBody), `"state":"unknown"`) {
		t.Errorf("the list with the router unreachable = %d %s", code, listBody)
	}
	if resp, body := media(t, hs.URL, http.MethodGet, dom, "rec-e", nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("media with the central copy gone and the router unreachable = %d %s, want 503", resp.StatusCode, body)
	}
}
