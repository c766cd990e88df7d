package callvault_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/testenv"
	authv1 "github.com/callvault/callvault/proto/callvault/auth/v1"
	catalogv1 "github.com/callvault/callvault/proto/callvault/catalog/v1"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
)

const system = testenv.BootstrapToken

// legacyToken installs a token as a build that let anyone mint a domain
// token for an unprovisioned domain would have: its event is on the
// config stream and applied, whatever the registry says.
func legacyToken(t *testing.T, s *stack, secret, level, reseller, domain string) string {
	t.Helper()
	sum := sha256.Sum256([]byte(secret))
	env := &eventv1.Envelope{Id: "token-legacy-" + secret, Source: "auth", Body: &eventv1.Envelope_TokenIssued{TokenIssued: &eventv1.TokenIssued{
		TokenSha256: hex.EncodeToString(sum[:]), Name: "legacy-" + level, Level: level, Reseller: reseller, Domain: domain, IssuedBy: "old-build",
	}}}
	if _, err := bus.PublishEnvelope(context.Background(), s.d.JS, s.d.Names.TokenSubject(), env.GetId(), env); err != nil {
		t.Fatal(err)
	}
	if err := s.d.Tokens.Apply(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	return secret
}

// TestDomainTakeoverIsRefused is the reported attack: reseller r1 mints a
// domain token for victim.example before reseller r2 provisions it and
// uploads there. Minting is refused; and even a domain token that an older
// build had minted for r1 can neither list, read nor write r2's domain, on
// REST or gRPC. No other tenant's token reaches r2's data either.
func TestDomainTakeoverIsRefused(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	r1, _ := s.issue(system, map[string]any{"name": "r1-admin", "level": "reseller", "reseller": "r1"})
	r2, _ := s.issue(system, map[string]any{"name": "r2-admin", "level": "reseller", "reseller": "r2"})
	victimScope := map[string]any{"name": "grab", "level": "domain", "reseller": "r1", "domain": "victim.example"}

	// Before anyone provisions victim.example, r1 cannot mint for it.
	if code, body := s.rest(r1, http.MethodPost, "/api/v1/tokens", victimScope); code != http.StatusForbidden {
		t.Fatalf("r1 minting for an unprovisioned domain: %d %s", code, body)
	}
	tokens := authv1.NewTokenServiceClient(s.conn)
	if _, err := tokens.IssueToken(s.ctx(r1), &authv1.IssueTokenRequest{Name: "grab", Level: "domain", Reseller: "r1", Domain: "victim.example"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("r1 minting over gRPC: %v", err)
	}
	// A system token is told why.
	code, body := s.rest(system, http.MethodPost, "/api/v1/tokens", victimScope)
	if code != http.StatusBadRequest || !hasViolation(t, body, "domain") {
		t.Fatalf("system minting for an unprovisioned domain: %d %s", code, body)
	}

	// r2 provisions victim.example, its PBX uploads there.
	s.provision(r2, "victim.example", "")
	if code, body := s.uploadHTTP(r2, upload{"v-1", "r2", "victim.example", "101"}); code != http.StatusCreated {
		t.Fatalf("r2 uploading into its domain: %d %s", code, body)
	}
	s.waitListed(r2, "domain=victim.example", "v-1")
	r2dom, _ := s.issue(r2, map[string]any{"name": "victim-admin", "level": "domain", "reseller": "r2", "domain": "victim.example"})

	// r1 can neither take the domain nor mint for it now.
	if code, body := s.rest(r1, http.MethodPost, "/api/v1/domains", map[string]string{"domain": "victim.example"}); code != http.StatusConflict {
		t.Fatalf("r1 provisioning r2's domain: %d %s", code, body)
	}
	for _, reseller := range []string{"r1", "r2"} {
		victimScope["reseller"] = reseller
		if code, body := s.rest(r1, http.MethodPost, "/api/v1/tokens", victimScope); code != http.StatusForbidden {
			t.Fatalf("r1 minting for r2's domain (reseller %s): %d %s", reseller, code, body)
		}
	}

	// Every other tenant's token, the legacy grab included.
	r1dom := legacyToken(t, s, "cvt_legacy-grab-of-victim-example", "domain", "r1", "victim.example")
	s.provision(r1, "a.example", "")
	r1a, _ := s.issue(r1, map[string]any{"name": "a-admin", "level": "domain", "reseller": "r1", "domain": "a.example"})
	r1user := legacyToken(t, s, "cvt_legacy-user-of-victim-example", "user", "r1", "victim.example")
	cat := catalogv1.NewCatalogServiceClient(s.conn)
	pol := policyv1.NewPolicyServiceClient(s.conn)
	for name, tok := range map[string]string{"r1 reseller": r1, "r1 legacy domain token": r1dom, "r1 legacy user token": r1user, "r1 a.example admin": r1a} {
		if ids, code := s.listed(tok, "domain=victim.example"); code != http.StatusForbidden {
			t.Errorf("%s lists victim.example: %d %v", name, code, ids)
		}
		if ids, code := s.listed(tok, ""); code == http.StatusOK && slices.Contains(ids, "v-1") {
			t.Errorf("%s lists v-1 by default", name)
		}
		for _, path := range []string{"/api/v1/pbx/recordings/v-1", "/api/v1/pbx/recordings/v-1/media"} {
			if code, body := s.rest(tok, http.MethodGet, path, nil); code != http.StatusNotFound {
				t.Errorf("%s GET %s: %d %s", name, path, code, body)
			}
		}
		for _, reseller := range []string{"r1", "r2"} {
			if code, body := s.uploadHTTP(tok, upload{"x-" + reseller, reseller, "victim.example", "101"}); code != http.StatusForbidden {
				t.Errorf("%s uploading into victim.example as %s over REST: %d %s", name, reseller, code, body)
			}
			if err := s.uploadGRPC(tok, upload{"y-" + reseller, reseller, "victim.example", "101"}); status.Code(err) != codes.PermissionDenied {
				t.Errorf("%s uploading into victim.example as %s over gRPC: %v", name, reseller, err)
			}
		}
		if _, err := cat.ListRecordings(s.ctx(tok), &catalogv1.ListRecordingsRequest{Domain: "victim.example"}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s gRPC ListRecordings: %v", name, err)
		}
		if _, err := cat.GetRecording(s.ctx(tok), &catalogv1.GetRecordingRequest{Id: "v-1"}); status.Code(err) != codes.NotFound {
			t.Errorf("%s gRPC GetRecording: %v", name, err)
		}
		if _, err := pol.GetDomain(s.ctx(tok), &policyv1.GetDomainRequest{Domain: "victim.example"}); status.Code(err) != codes.NotFound {
			t.Errorf("%s gRPC GetDomain: %v", name, err)
		}
		if _, err := pol.ListHolds(s.ctx(tok), &policyv1.ListHoldsRequest{Scope: &policyv1.Scope{Domain: "victim.example"}}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s gRPC ListHolds: %v", name, err)
		}
	}
	// Nothing of r1's reached r2's domain, and r2's own tokens still work.
	for _, tok := range []string{r2, r2dom} {
		if ids, code := s.listed(tok, "domain=victim.example"); code != http.StatusOK || !slices.Equal(ids, []string{"v-1"}) {
			t.Fatalf("r2 lists %v (%d), want only v-1", ids, code)
		}
		if code, body := s.rest(tok, http.MethodGet, "/api/v1/pbx/recordings/v-1/media", nil); code != http.StatusOK || string(body) != "RIFF-media-of-v-1" {
			t.Fatalf("r2 media: %d %q", code, body)
		}
	}
	// r2's tokens do not reach r1's domain either.
	for _, tok := range []string{r2, r2dom} {
		if _, code := s.listed(tok, "domain=a.example"); code != http.StatusForbidden {
			t.Fatalf("r2 listing a.example: %d", code)
		}
		if code, _ := s.uploadHTTP(tok, upload{"z-1", "r1", "a.example", "101"}); code != http.StatusForbidden {
			t.Fatalf("r2 uploading into a.example: %d", code)
		}
	}
}

func hasViolation(t *testing.T, problem []byte, field string) bool {
	t.Helper()
	var p struct {
		InvalidParams []struct{ Name string } `json:"invalid_params"`
	}
	if err := json.Unmarshal(problem, &p); err != nil {
		t.Fatal(err)
	}
	for _, v := range p.InvalidParams {
		if v.Name == field {
			return true
		}
	}
	return false
}

// TestUploadProvisioning: a system-scope ingest token provisions an
// unknown domain under the reseller the upload names, recorded as a
// provisioning event; a reseller-scope one only under its own reseller; a
// domain-scope one never.
func TestUploadProvisioning(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	r1, _ := s.issue(system, map[string]any{"name": "r1-pbx", "level": "reseller", "reseller": "r1"})
	owner := func(domain string) string {
		t.Helper()
		code, body := s.rest(system, http.MethodGet, "/api/v1/domains/"+domain, nil)
		if code == http.StatusNotFound {
			return ""
		}
		var d struct {
			Reseller      string `json:"reseller"`
			ProvisionedBy string `json:"provisioned_by"`
		}
		if err := json.Unmarshal(body, &d); code != http.StatusOK || err != nil {
			t.Fatalf("GET domain %s: %d %s", domain, code, body)
		}
		return d.Reseller + " by " + d.ProvisionedBy
	}

	if code, body := s.uploadHTTP(system, upload{"s-1", "r3", "sys.example", "101"}); code != http.StatusCreated {
		t.Fatalf("system upload into a new domain: %d %s", code, body)
	}
	if got := owner("sys.example"); got != "r3 by bootstrap" {
		t.Fatalf("sys.example is %q, want r3 by bootstrap", got)
	}
	if err := s.uploadGRPC(r1, upload{"r-1", "r1", "own.example", "101"}); err != nil {
		t.Fatalf("reseller upload into a new domain of its own: %v", err)
	}
	if got := owner("own.example"); got != "r1 by r1-pbx" {
		t.Fatalf("own.example is %q, want r1 by r1-pbx", got)
	}
	if code, body := s.uploadHTTP(r1, upload{"r-2", "r2", "theirs.example", "101"}); code != http.StatusForbidden {
		t.Fatalf("r1 upload naming r2: %d %s", code, body)
	}
	if got := owner("theirs.example"); got != "" {
		t.Fatalf("a refused upload provisioned theirs.example: %q", got)
	}
	legacy := legacyToken(t, s, "cvt_legacy-domain-of-new-example", "domain", "r1", "new.example")
	if code, body := s.uploadHTTP(legacy, upload{"d-1", "r1", "new.example", "101"}); code != http.StatusForbidden {
		t.Fatalf("a domain token provisioning by upload: %d %s", code, body)
	}
	if got := owner("new.example"); got != "" {
		t.Fatalf("a domain token provisioned new.example: %q", got)
	}
	// Once provisioned, the domain is r3's: a system upload naming another
	// reseller is told which field is wrong.
	code, body := s.uploadHTTP(system, upload{"s-2", "r1", "sys.example", "101"})
	if code != http.StatusBadRequest || !hasViolation(t, body, "metadata.reseller") {
		t.Fatalf("system upload naming the wrong reseller: %d %s", code, body)
	}

	// Both provisionings are events on the config stream.
	var seen []string
	if _, _, err := bus.Replay(context.Background(), s.d.JS, s.d.Names.ConfigStream(), []string{s.d.Names.DomainSubjects()},
		func(_ context.Context, env *eventv1.Envelope, _ uint64) error {
			d := env.GetConfig().GetAfter().GetDomain()
			seen = append(seen, d.GetDomain()+"@"+d.GetReseller())
			return nil
		}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seen, []string{"sys.example@r3", "own.example@r1"}) {
		t.Fatalf("provisioning events %v", seen)
	}
}

// TestRegistryFailureRefuses: when the domain registry cannot be read,
// every domain check refuses (503 / Unavailable) instead of letting the
// caller through.
func TestRegistryFailureRefuses(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.provision(system, "a.example", "r1")
	r1, _ := s.issue(system, map[string]any{"name": "r1-admin", "level": "reseller", "reseller": "r1"})
	adm, _ := s.issue(r1, map[string]any{"name": "a-admin", "level": "domain", "reseller": "r1", "domain": "a.example"})
	if code, body := s.uploadHTTP(r1, upload{"a-1", "r1", "a.example", "101"}); code != http.StatusCreated {
		t.Fatalf("upload: %d %s", code, body)
	}
	s.waitListed(adm, "", "a-1")

	faults := testenv.InjectRedisFaults(t, s.d.Redis)
	faults.Fail(s.d.Names.Namespace() + ":{domains}")
	cat := catalogv1.NewCatalogServiceClient(s.conn)
	for name, tok := range map[string]string{"system": system, "reseller": r1, "domain admin": adm} {
		if _, code := s.listed(tok, "domain=a.example"); code != http.StatusServiceUnavailable {
			t.Errorf("%s list: %d, want 503", name, code)
		}
		if code, _ := s.rest(tok, http.MethodGet, "/api/v1/pbx/recordings/a-1/media", nil); code != http.StatusServiceUnavailable {
			t.Errorf("%s media: %d, want 503", name, code)
		}
		if code, _ := s.uploadHTTP(tok, upload{"a-2", "r1", "a.example", "101"}); code != http.StatusServiceUnavailable {
			t.Errorf("%s upload: %d, want 503", name, code)
		}
		if err := s.uploadGRPC(tok, upload{"a-3", "r1", "a.example", "101"}); status.Code(err) != codes.Unavailable {
			t.Errorf("%s gRPC upload: %v", name, err)
		}
		if _, err := cat.ListRecordings(s.ctx(tok), &catalogv1.ListRecordingsRequest{Domain: "a.example"}); status.Code(err) != codes.Unavailable {
			t.Errorf("%s gRPC list: %v", name, err)
		}
		if code, _ := s.rest(tok, http.MethodPost, "/api/v1/tokens", map[string]any{"name": "x", "level": "domain", "reseller": "r1", "domain": "a.example"}); code != http.StatusServiceUnavailable {
			t.Errorf("%s minting: %d, want 503", name, code)
		}
	}
	if code, _ := s.rest(r1, http.MethodPost, "/api/v1/domains", map[string]string{"domain": "b.example"}); code != http.StatusServiceUnavailable {
		t.Errorf("provisioning: %d, want 503", code)
	}
	faults.Heal()
	if ids, code := s.listed(adm, ""); code != http.StatusOK || !slices.Equal(ids, []string{"a-1"}) {
		t.Fatalf("after healing: %v %d", ids, code)
	}
}
