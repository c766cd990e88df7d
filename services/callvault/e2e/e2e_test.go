package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/testenv"
	catalogv1 "github.com/callvault/callvault/proto/callvault/catalog/v1"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	ingestv1 "github.com/callvault/callvault/proto/callvault/ingest/v1"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
)

func grpcConn(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// grpcUpload streams metadata then media in 32 KiB chunks.
func grpcUpload(ctx context.Context, c ingestv1.IngestServiceClient, md *ingestv1.RecordingMetadata, media []byte) (*ingestv1.UploadRecordingResponse, error) {
	stream, err := c.UploadRecording(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&ingestv1.UploadRecordingRequest{Part: &ingestv1.UploadRecordingRequest_Metadata{Metadata: md}}); err != nil {
		return nil, err
	}
	for off := 0; off < len(media); off += 32 << 10 {
		end := min(off+32<<10, len(media))
		if err := stream.Send(&ingestv1.UploadRecordingRequest{Part: &ingestv1.UploadRecordingRequest_Chunk{Chunk: media[off:end]}}); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
	}
	return stream.CloseAndRecv()
}

// TestRecordingPath is the walking skeleton: a recording goes in at
// call-ingest over HTTP and gRPC and comes back out of the REST API byte
// for byte, also after a restart on the in-process Redis.
func TestRecordingPath(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	s.start()
	ctx := context.Background()

	banner := strings.Join(s.banner(), "\n")
	for _, want := range []string{"http://" + s.http, s.grpc, "embedded JetStream", "in-process"} {
		if !strings.Contains(banner, want) {
			t.Errorf("start banner does not mention %q:\n%s", want, banner)
		}
	}

	// HTTP upload, then the same again: accepted once, reported duplicate.
	mediaA := randomMedia(t, 300<<10)
	code, res := s.upload(s.token, meta("rec-http-1", "a.example", "101"), mediaA)
	if code != http.StatusCreated || res["duplicate"] != false || res["sha256"] != sha(mediaA) || res["size_bytes"] != float64(len(mediaA)) {
		t.Fatalf("first upload: %d %v", code, res)
	}
	code, res = s.upload(s.token, meta("rec-http-1", "a.example", "101"), mediaA)
	if code != http.StatusOK || res["duplicate"] != true || res["sha256"] != sha(mediaA) {
		t.Fatalf("duplicate upload: %d %v", code, res)
	}

	// gRPC client-streaming upload, and its duplicate.
	cc := grpcConn(t, s.grpc)
	ing := ingestv1.NewIngestServiceClient(cc)
	mediaB := randomMedia(t, 1<<20+123)
	md := &ingestv1.RecordingMetadata{
		Id: "rec-grpc-1", CallId: "call-9", Reseller: "r1", Domain: "a.example", User: "102",
		Mode: eventv1.RecordingMode_RECORDING_MODE_ON_DEMAND, StartedAt: timestamppb.New(time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)),
		DurationS: 30, ContentType: "audio/ogg",
	}
	up, err := grpcUpload(withToken(ctx, s.token), ing, md, mediaB)
	if err != nil || up.GetDuplicate() || up.GetSha256() != sha(mediaB) || up.GetSizeBytes() != int64(len(mediaB)) {
		t.Fatalf("grpc upload: %v %v", up, err)
	}
	up, err = grpcUpload(withToken(ctx, s.token), ing, md, mediaB)
	if err != nil || !up.GetDuplicate() {
		t.Fatalf("grpc duplicate upload: %v %v", up, err)
	}

	// Listed newest first, exactly once each.
	ids := s.listIDs(s.token, "domain=a.example", 2)
	if !slices.Equal(ids, []string{"rec-grpc-1", "rec-http-1"}) {
		t.Fatalf("list = %v, want [rec-grpc-1 rec-http-1]", ids)
	}
	if ids := s.listIDs(s.token, "domain=a.example&user=101", 1); !slices.Equal(ids, []string{"rec-http-1"}) {
		t.Fatalf("list by user = %v", ids)
	}
	if ids := s.listIDs(s.token, "domain=a.example&call_id=call-9", 1); !slices.Equal(ids, []string{"rec-grpc-1"}) {
		t.Fatalf("list by call = %v", ids)
	}
	if ids := s.listIDs(s.token, "domain=a.example&from=2026-11-02T00:00:00Z", 1); !slices.Equal(ids, []string{"rec-grpc-1"}) {
		t.Fatalf("list from = %v", ids)
	}
	resp, body := s.get(s.token, "/api/v1/pbx/recordings?domain=a.example&limit=1")
	var page struct {
		Recordings []map[string]any `json:"recordings"`
		Next       string           `json:"next_page_token"`
	}
	if err := json.Unmarshal(body, &page); err != nil || resp.StatusCode != 200 || len(page.Recordings) != 1 || page.Next == "" {
		t.Fatalf("first page: %d %s", resp.StatusCode, body)
	}
	_, body = s.get(s.token, "/api/v1/pbx/recordings?domain=a.example&limit=1&page_token="+page.Next)
	var page2 struct {
		Recordings []map[string]any `json:"recordings"`
		Next       string           `json:"next_page_token"`
	}
	if err := json.Unmarshal(body, &page2); err != nil || len(page2.Recordings) != 1 || page2.Recordings[0]["id"] != "rec-http-1" || page2.Next != "" {
		t.Fatalf("second page: %s", body)
	}

	// The same bytes come back, whole and by range, with the hash as ETag.
	checkMedia(t, s, "rec-http-1", mediaA, "audio/wav")
	checkMedia(t, s, "rec-grpc-1", mediaB, "audio/ogg")

	// The gRPC catalog agrees.
	cat := catalogv1.NewCatalogServiceClient(cc)
	lr, err := cat.ListRecordings(withToken(ctx, s.token), &catalogv1.ListRecordingsRequest{Domain: "a.example"})
	if err != nil || len(lr.GetRecordings()) != 2 || lr.GetRecordings()[0].GetSha256() != sha(mediaB) {
		t.Fatalf("grpc list: %v %v", lr, err)
	}

	// Policy over gRPC: a hold freezes deletion; Explain dates the recording.
	pol := policyv1.NewPolicyServiceClient(cc)
	if _, err := pol.PlaceHold(withToken(ctx, s.token), &policyv1.PlaceHoldRequest{Hold: &policyv1.Hold{
		Scope: &policyv1.Scope{Level: policyv1.Level_LEVEL_USER, Domain: "a.example", User: "101"}, Reason: "e2e litigation"}}); err != nil {
		t.Fatalf("place hold: %v", err)
	}
	md2, err := pol.MayDelete(withToken(ctx, s.token), &policyv1.MayDeleteRequest{Domain: "a.example", ArtifactId: "rec-http-1"})
	if err != nil || md2.GetAllowed() || len(md2.GetBlockingHolds()) != 1 {
		t.Fatalf("MayDelete under a hold: %v %v", md2, err)
	}
	ex, err := pol.Explain(withToken(ctx, s.token), &policyv1.ExplainRequest{Domain: "a.example", ArtifactId: "rec-grpc-1"})
	if err != nil || ex.GetPolicy().GetMinStorageDays() != 90 || ex.GetPolicy().GetMinStorageFrom() != policyv1.Level_LEVEL_PRESET ||
		!ex.GetCullableAt().AsTime().Equal(time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC).AddDate(0, 0, 90)) {
		t.Fatalf("explain: %v %v", ex, err)
	}
	if _, err := pol.MayDelete(ctx, &policyv1.MayDeleteRequest{Domain: "a.example", ArtifactId: "rec-http-1"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("MayDelete without a token: %v", err)
	}

	// Restart in the middle: stop gracefully, start on the same data dir.
	s.stop()
	s.start()
	if b := strings.Join(s.banner(), "\n"); !strings.Contains(b, "holds no callvault state") || !strings.Contains(b, "2 decisions replayed") {
		t.Errorf("restart banner does not report the rebuilt catalog:\n%s", strings.Join(s.banner(), "\n"))
	}
	if ids := s.listIDs(s.token, "domain=a.example", 2); !slices.Equal(ids, []string{"rec-grpc-1", "rec-http-1"}) {
		t.Fatalf("after restart list = %v", ids)
	}
	checkMedia(t, s, "rec-http-1", mediaA, "audio/wav")
	checkMedia(t, s, "rec-grpc-1", mediaB, "audio/ogg")
	md2, err = pol.MayDelete(withToken(ctx, s.token), &policyv1.MayDeleteRequest{Domain: "a.example", ArtifactId: "rec-http-1"})
	if err != nil || md2.GetAllowed() {
		t.Fatalf("the hold did not survive the restart: %v %v", md2, err)
	}
	code, res = s.upload(s.token, meta("rec-http-1", "a.example", "101"), mediaA)
	if code != http.StatusOK || res["duplicate"] != true {
		t.Fatalf("duplicate after restart: %d %v", code, res)
	}
}

func checkMedia(t *testing.T, s *server, id string, want []byte, ctype string) {
	t.Helper()
	path := "/api/v1/pbx/recordings/" + id + "/media"
	resp, body := s.get(s.token, path)
	if resp.StatusCode != 200 || sha(body) != sha(want) || resp.Header.Get("Content-Type") != ctype ||
		resp.Header.Get("ETag") != `"`+sha(want)+`"` || resp.Header.Get("Content-Length") != fmt.Sprint(len(want)) {
		t.Fatalf("media %s: %d type=%q etag=%q len=%q sha=%s", id, resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("ETag"), resp.Header.Get("Content-Length"), sha(body))
	}
	resp, body = s.get(s.token, path, "Range", "bytes=100-199")
	if resp.StatusCode != http.StatusPartialContent || string(body) != string(want[100:200]) ||
		resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 100-199/%d", len(want)) {
		t.Fatalf("range of %s: %d %q", id, resp.StatusCode, resp.Header.Get("Content-Range"))
	}
	resp, body = s.get(s.token, path, "Range", "bytes=-10")
	if resp.StatusCode != http.StatusPartialContent || string(body) != string(want[len(want)-10:]) {
		t.Fatalf("suffix range of %s: %d", id, resp.StatusCode)
	}
	resp, _ = s.get(s.token, path, "Range", fmt.Sprintf("bytes=%d-", len(want)))
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes */%d", len(want)) {
		t.Fatalf("unsatisfiable range of %s: %d", id, resp.StatusCode)
	}
	resp, body = s.get(s.token, path, "If-None-Match", `"`+sha(want)+`"`)
	if resp.StatusCode != http.StatusNotModified || len(body) != 0 {
		t.Fatalf("conditional get of %s: %d", id, resp.StatusCode)
	}
}

// TestInvalidMetadataNamesTheField sends one bad field at a time and
// expects a 400 problem naming exactly that field; nothing is stored.
func TestInvalidMetadataNamesTheField(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	s.start()
	media := randomMedia(t, 1000)
	cases := []struct {
		field string
		value any
	}{
		{"id", ""},
		{"id", "../../etc/passwd"},
		{"call_id", ""},
		{"reseller", ""},
		{"domain", "Not A Domain"},
		{"user", "bad user"},
		{"mode", "sometimes"},
		{"started_at", "yesterday"},
		{"started_at", "2999-01-01T00:00:00Z"},
		{"duration_s", "long"},
		{"duration_s", -5},
		{"content_type", "text/html"},
		{"unexpected", "x"},
	}
	for i, tc := range cases {
		m := meta(fmt.Sprintf("bad-%d", i), "a.example", "101")
		m[tc.field] = tc.value
		code, res := s.upload(s.token, m, media)
		params, _ := res["invalid_params"].([]any)
		if code != http.StatusBadRequest || len(params) != 1 {
			t.Errorf("%s=%v: got %d %v, want 400 with one invalid param", tc.field, tc.value, code, res)
			continue
		}
		p := params[0].(map[string]any)
		if p["name"] != "metadata."+tc.field || p["reason"] == "" {
			t.Errorf("%s=%v: invalid param %v", tc.field, tc.value, p)
		}
	}
	code, res := s.upload(s.token, meta("empty-media", "a.example", "101"), nil)
	if code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(res["invalid_params"]), "media") {
		t.Errorf("empty media: %d %v", code, res)
	}
	// gRPC names the field in BadRequest details.
	ing := ingestv1.NewIngestServiceClient(grpcConn(t, s.grpc))
	_, err := grpcUpload(withToken(context.Background(), s.token), ing, &ingestv1.RecordingMetadata{
		Id: "g-bad", CallId: "c", Reseller: "r1", Domain: "a.example", Mode: eventv1.RecordingMode_RECORDING_MODE_AUTOMATIC,
		StartedAt: timestamppb.Now(), ContentType: "video/mp4",
	}, media)
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("grpc invalid upload: %v", err)
	}
	var fields []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	if !slices.Equal(fields, []string{"metadata.content_type"}) {
		t.Fatalf("grpc field violations = %v", fields)
	}
	// Nothing was stored, and a refused upload provisioned nothing either.
	resp, body := s.get(s.token, "/api/v1/domains/a.example")
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("invalid uploads provisioned a.example: %d %s", resp.StatusCode, body)
	}
	if code, res := s.upload(s.token, meta("good", "a.example", "101"), media); code != http.StatusCreated {
		t.Fatalf("valid upload: %d %v", code, res)
	}
	if ids := s.listIDs(s.token, "domain=a.example", 1); !slices.Equal(ids, []string{"good"}) {
		t.Fatalf("invalid uploads were stored: %v", ids)
	}
}

// TestAuthAndTenantScoping: no token or a wrong one gets 401 and no data;
// a domain token sees only its domain.
func TestAuthAndTenantScoping(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	s.start()
	if code, _ := s.upload(s.token, meta("a-1", "a.example", "101"), randomMedia(t, 500)); code != http.StatusCreated {
		t.Fatalf("upload a: %d", code)
	}
	if code, _ := s.upload(s.token, meta("b-1", "b.example", "201"), randomMedia(t, 500)); code != http.StatusCreated {
		t.Fatalf("upload b: %d", code)
	}
	s.listIDs(s.token, "domain=a.example", 1)
	s.listIDs(s.token, "domain=b.example", 1)

	for _, tok := range []string{"", "wrong-token-xxxxxxxxxxxxxxxxx"} {
		resp, body := s.get(tok, "/api/v1/pbx/recordings?domain=a.example")
		if resp.StatusCode != http.StatusUnauthorized || strings.Contains(string(body), "a-1") || resp.Header.Get("WWW-Authenticate") == "" {
			t.Fatalf("token %q: %d %s", tok, resp.StatusCode, body)
		}
		resp, body = s.get(tok, "/api/v1/pbx/recordings/a-1/media")
		if resp.StatusCode != http.StatusUnauthorized || len(body) > 0 && !strings.Contains(string(body), "problem") {
			t.Fatalf("media with token %q: %d", tok, resp.StatusCode)
		}
		if code, _ := s.upload(tok, meta("x-1", "a.example", "101"), randomMedia(t, 10)); code != http.StatusUnauthorized {
			t.Fatalf("upload with token %q: %d", tok, code)
		}
	}
	cat := catalogv1.NewCatalogServiceClient(grpcConn(t, s.grpc))
	if _, err := cat.ListRecordings(context.Background(), &catalogv1.ListRecordingsRequest{Domain: "a.example"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("grpc list without token: %v", err)
	}
	hc := healthpb.NewHealthClient(grpcConn(t, s.grpc))
	if hr, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("grpc health: %v %v", hr, err)
	}

	// A token for domain b.example.
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.http+"/api/v1/tokens",
		strings.NewReader(`{"name":"b-admin","level":"domain","reseller":"r1","domain":"b.example"}`))
	req.Header.Set("Authorization", "Bearer "+s.token)
	code, tok := s.do(req)
	bToken, _ := tok["token"].(string)
	if code != http.StatusCreated || bToken == "" {
		t.Fatalf("issue token: %d %v", code, tok)
	}
	if ids := s.listIDs(bToken, "", 1); !slices.Equal(ids, []string{"b-1"}) {
		t.Fatalf("domain token lists %v, want [b-1]", ids)
	}
	if resp, _ := s.get(bToken, "/api/v1/pbx/recordings?domain=a.example"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("domain token listing another domain: %d", resp.StatusCode)
	}
	if resp, _ := s.get(bToken, "/api/v1/pbx/recordings/a-1/media"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("domain token reading another domain's media: %d", resp.StatusCode)
	}
	if code, _ := s.upload(bToken, meta("b-2", "a.example", "101"), randomMedia(t, 10)); code != http.StatusForbidden {
		t.Fatalf("domain token uploading into another domain: %d", code)
	}
	// Another domain reusing an id is refused, not treated as a duplicate.
	if code, res := s.upload(s.token, meta("a-1", "b.example", "201"), randomMedia(t, 10)); code != http.StatusConflict {
		t.Fatalf("id reuse across domains: %d %v", code, res)
	}
	// A domain token may not mint a system token.
	req, _ = http.NewRequest(http.MethodPost, "http://"+s.http+"/api/v1/tokens", strings.NewReader(`{"name":"x","level":"system"}`))
	req.Header.Set("Authorization", "Bearer "+bToken)
	if code, _ := s.do(req); code != http.StatusForbidden {
		t.Fatalf("escalation: %d", code)
	}

	// Tokens survive a restart (rebuilt from the config stream).
	s.stop()
	s.start()
	if ids := s.listIDs(bToken, "", 1); !slices.Equal(ids, []string{"b-1"}) {
		t.Fatalf("after restart the domain token lists %v", ids)
	}
	resp, body := s.get("", "/metrics")
	if resp.StatusCode != 200 || !strings.Contains(string(body), "callvault_ingest_uploads_total") {
		t.Fatalf("metrics: %d", resp.StatusCode)
	}
}

// TestExternalRedisAndS3 runs the binary against the real Redis and the
// S3-compatible server instead of the embedded fallbacks.
func TestExternalRedisAndS3(t *testing.T) {
	t.Parallel()
	ns := testenv.Namespace(t)
	_ = testenv.Redis(t, ns) // deletes the namespace's keys afterwards
	s3 := testenv.S3Config(t, ns)
	s := newServer(t,
		"REDIS_URL="+testenv.Env(t, "CALLVAULT_TEST_REDIS_URL"),
		"CALLVAULT_NAMESPACE="+ns,
		"CALLVAULT_S3_ENDPOINT="+s3.Endpoint,
		"CALLVAULT_S3_BUCKET="+s3.Bucket,
		"CALLVAULT_S3_ACCESS_KEY="+s3.AccessKey,
		"CALLVAULT_S3_SECRET_KEY="+s3.SecretKey,
	)
	s.start()
	if banner := strings.Join(s.banner(), "\n"); !strings.Contains(banner, "s3://"+s3.Bucket) || strings.Contains(banner, "in-process") {
		t.Fatalf("banner does not show S3 and real Redis:\n%s", banner)
	}
	media := randomMedia(t, 9<<20) // above the multipart threshold
	if code, res := s.upload(s.token, meta("s3-1", "a.example", "101"), media); code != http.StatusCreated {
		t.Fatalf("upload: %d %v", code, res)
	}
	s.listIDs(s.token, "domain=a.example", 1)
	checkMedia(t, s, "s3-1", media, "audio/wav")
	s.stop()
	s.start()
	checkMedia(t, s, "s3-1", media, "audio/wav")
}
