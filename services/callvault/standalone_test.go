package callvault_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/policyclient"
	"github.com/callvault/callvault/services/gateway"
	"github.com/callvault/callvault/services/ingest"
)

// TestStandaloneServicesReachPolicyOverGRPC: a gateway and an ingest
// running apart from the policy service provision and read domains through
// policy's gRPC API, as the caller: policy's own checks decide, bad fields
// and refusals come back as the caller's API reports them, and a policy
// service that does not answer is 503, never a pass.
func TestStandaloneServicesReachPolicyOverGRPC(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	client := policyclient.New(s.conn)
	// Its own process: its own metrics.
	d := *s.d
	d.Registry = prometheus.NewRegistry()
	mux := http.NewServeMux()
	gateway.New(&d, client).RegisterHTTP(mux, s.d.Tokens)
	ingest.New(&d, ingest.Limits{MaxMediaBytes: 1 << 20}, client).RegisterHTTP(mux, s.d.Tokens)
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	alone := *s
	alone.url = hs.URL

	r2, _ := s.issue(system, map[string]any{"name": "r2-admin", "level": "reseller", "reseller": "r2"})
	alone.provision(system, "grpc.example", "r1")
	if code, body := alone.rest(r2, http.MethodPost, "/api/v1/domains", map[string]string{"domain": "grpc.example"}); code != http.StatusConflict {
		t.Fatalf("r2 provisioning r1's domain through a standalone gateway: %d %s, want 409", code, body)
	}
	if code, body := alone.rest(r2, http.MethodPost, "/api/v1/domains", map[string]string{"domain": "other.example", "reseller": "r1"}); code != http.StatusForbidden {
		t.Fatalf("r2 provisioning under r1: %d %s, want 403", code, body)
	}
	code, body := alone.rest(system, http.MethodPost, "/api/v1/domains", map[string]string{"domain": "Not A Domain", "reseller": "r1"})
	if code != http.StatusBadRequest || !hasViolation(t, body, "domain") {
		t.Fatalf("a bad domain through a standalone gateway: %d %s, want 400 naming domain", code, body)
	}
	if code, body := alone.rest(r2, http.MethodGet, "/api/v1/domains/grpc.example", nil); code != http.StatusForbidden && code != http.StatusNotFound {
		t.Fatalf("r2 reading r1's domain: %d %s", code, body)
	}
	code, body = alone.rest(system, http.MethodGet, "/api/v1/domains/grpc.example", nil)
	var got struct{ Reseller string }
	if err := json.Unmarshal(body, &got); code != http.StatusOK || err != nil || got.Reseller != "r1" {
		t.Fatalf("GET grpc.example: %d %s", code, body)
	}

	// A standalone ingest provisions through policy too.
	if code, body := alone.uploadHTTP(system, upload{"alone-1", "r3", "up.example", "101"}); code != http.StatusCreated {
		t.Fatalf("system upload into a new domain through a standalone ingest: %d %s", code, body)
	}
	if owner, err := s.pol.GetDomain(context.Background(), auth.Principal{Name: "ops", Level: auth.LevelSystem}, "up.example"); err != nil || owner.Reseller != "r3" {
		t.Fatalf("up.example after the upload: %+v %v", owner, err)
	}

	// Policy not answering: 503, nothing provisioned.
	down, closeDown, err := policyclient.Dial("127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = closeDown() })
	d2 := *s.d
	d2.Registry = prometheus.NewRegistry()
	mux2 := http.NewServeMux()
	gateway.New(&d2, down).RegisterHTTP(mux2, s.d.Tokens)
	hs2 := httptest.NewServer(mux2)
	t.Cleanup(hs2.Close)
	cut := *s
	cut.url = hs2.URL
	if code, body := cut.rest(system, http.MethodPost, "/api/v1/domains", map[string]string{"domain": "down.example", "reseller": "r1"}); code != http.StatusServiceUnavailable {
		t.Fatalf("provisioning with policy down: %d %s, want 503", code, body)
	}
}
