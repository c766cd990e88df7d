package callvault_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/callvault/callvault/pkg/testenv"
	authv1 "github.com/callvault/callvault/proto/callvault/auth/v1"
	catalogv1 "github.com/callvault/callvault/proto/callvault/catalog/v1"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
	"github.com/callvault/callvault/services/callvault"
)

// refusedEverywhere checks that tok is Unauthenticated on every API: REST
// reads, media, uploads, token and domain routes, and gRPC reads, uploads
// and token calls.
func refusedEverywhere(t *testing.T, s *stack, what, tok string) {
	t.Helper()
	for _, path := range []string{"/api/v1/pbx/recordings?domain=a.example", "/api/v1/pbx/recordings/a-1", "/api/v1/pbx/recordings/a-1/media", "/api/v1/tokens", "/api/v1/domains"} {
		if code, _ := s.rest(tok, http.MethodGet, path, nil); code != http.StatusUnauthorized {
			t.Errorf("%s GET %s: %d, want 401", what, path, code)
		}
	}
	if code, _ := s.uploadHTTP(tok, upload{"late-1", "r1", "a.example", "101"}); code != http.StatusUnauthorized {
		t.Errorf("%s REST upload: %d, want 401", what, code)
	}
	if err := s.uploadGRPC(tok, upload{"late-2", "r1", "a.example", "101"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("%s gRPC upload: %v", what, err)
	}
	if _, err := catalogv1.NewCatalogServiceClient(s.conn).ListRecordings(s.ctx(tok), &catalogv1.ListRecordingsRequest{Domain: "a.example"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("%s gRPC list: %v", what, err)
	}
	if _, err := authv1.NewTokenServiceClient(s.conn).ListTokens(s.ctx(tok), &authv1.ListTokensRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("%s gRPC ListTokens: %v", what, err)
	}
	if _, err := policyv1.NewPolicyServiceClient(s.conn).ListDomains(s.ctx(tok), &policyv1.ListDomainsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("%s gRPC ListDomains: %v", what, err)
	}
}

func tokenIDs(t *testing.T, s *stack, tok string) ([]string, string) {
	t.Helper()
	code, body := s.rest(tok, http.MethodGet, "/api/v1/tokens", nil)
	if code != http.StatusOK {
		t.Fatalf("list tokens: %d %s", code, body)
	}
	var out struct {
		Tokens []struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"tokens"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tk := range out.Tokens {
		names = append(names, tk.Name)
	}
	slices.Sort(names)
	return names, string(body)
}

// TestTokenRevocation: a revoked token is refused on every API, over REST
// and gRPC alike, and stays revoked after Redis is rebuilt from the config
// stream; revocation and listing reach only tokens inside the caller's
// scope, and a list never carries a secret or its hash.
func TestTokenRevocation(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.provision(system, "a.example", "r1")
	s.provision(system, "b.example", "r2")
	r1, r1ID := s.issue(system, map[string]any{"name": "r1-admin", "level": "reseller", "reseller": "r1"})
	r2, r2ID := s.issue(system, map[string]any{"name": "r2-admin", "level": "reseller", "reseller": "r2"})
	adm, admID := s.issue(r1, map[string]any{"name": "a-admin", "level": "domain", "reseller": "r1", "domain": "a.example"})
	alice, aliceID := s.issue(adm, map[string]any{"name": "a-alice", "level": "user", "reseller": "r1", "domain": "a.example", "user": "101"})
	bAdm, _ := s.issue(r2, map[string]any{"name": "b-admin", "level": "domain", "reseller": "r2", "domain": "b.example"})
	pbx, pbxID := s.issue(r1, map[string]any{"name": "a-pbx", "level": "domain", "reseller": "r1", "domain": "a.example"})
	if code, body := s.uploadHTTP(pbx, upload{"a-1", "r1", "a.example", "101"}); code != http.StatusCreated {
		t.Fatalf("upload: %d %s", code, body)
	}
	s.waitListed(adm, "", "a-1")

	// Listing: each sees its own scope, never a secret or a hash.
	secrets := []string{r1, r2, adm, alice, bAdm, pbx}
	for _, tc := range []struct {
		tok  string
		want []string
	}{
		{r1, []string{"a-admin", "a-alice", "a-pbx", "r1-admin"}},
		{adm, []string{"a-admin", "a-alice", "a-pbx"}},
		{r2, []string{"b-admin", "r2-admin"}},
		{bAdm, []string{"b-admin"}},
		{alice, []string{"a-alice"}},
	} {
		names, body := tokenIDs(t, s, tc.tok)
		if !slices.Equal(names, tc.want) {
			t.Errorf("list shows %v, want %v", names, tc.want)
		}
		for _, sec := range secrets {
			sum := sha256.Sum256([]byte(sec))
			if strings.Contains(body, sec) || strings.Contains(body, hex.EncodeToString(sum[:])) || strings.Contains(body, hex.EncodeToString(sum[:])[:16]) {
				t.Fatalf("a token list carries a secret or its hash: %s", body)
			}
		}
	}
	grpcTokens := authv1.NewTokenServiceClient(s.conn)
	gl, err := grpcTokens.ListTokens(s.ctx(r2), &authv1.ListTokensRequest{})
	if err != nil || len(gl.GetTokens()) != 2 {
		t.Fatalf("gRPC ListTokens for r2: %v, %v", gl, err)
	}
	for _, tk := range gl.GetTokens() {
		if strings.Contains(tk.String(), r2) || strings.Contains(tk.String(), bAdm) {
			t.Fatalf("gRPC list carries a secret: %v", tk)
		}
	}

	// Nobody revokes outside its scope; it looks like a token that does
	// not exist.
	for _, tc := range []struct{ tok, id string }{{r2, admID}, {r2, r1ID}, {bAdm, pbxID}, {adm, r1ID}, {alice, admID}, {r1, r2ID}} {
		if code, body := s.rest(tc.tok, http.MethodDelete, "/api/v1/tokens/"+tc.id, nil); code != http.StatusNotFound {
			t.Errorf("out-of-scope REST revoke of %s: %d %s", tc.id, code, body)
		}
		if _, err := grpcTokens.RevokeToken(s.ctx(tc.tok), &authv1.RevokeTokenRequest{Id: tc.id}); status.Code(err) != codes.NotFound {
			t.Errorf("out-of-scope gRPC revoke of %s: %v", tc.id, err)
		}
	}
	if code, body := s.rest(r1, http.MethodDelete, "/api/v1/tokens/not-an-id", nil); code != http.StatusBadRequest || !hasViolation(t, body, "id") {
		t.Fatalf("a malformed id: %d %s", code, body)
	}
	if _, code := s.listed(pbx, ""); code != http.StatusOK {
		t.Fatalf("the refused revocations revoked the pbx token: %d", code)
	}

	// The domain admin revokes its PBX's token over REST, the reseller
	// its user's token over gRPC.
	code, body := s.rest(adm, http.MethodDelete, "/api/v1/tokens/"+pbxID, nil)
	if code != http.StatusOK || !strings.Contains(string(body), `"revoked":true`) || !strings.Contains(string(body), `"revoked_by":"a-admin"`) {
		t.Fatalf("revoke: %d %s", code, body)
	}
	if _, err := grpcTokens.RevokeToken(s.ctx(r1), &authv1.RevokeTokenRequest{Id: aliceID}); err != nil {
		t.Fatal(err)
	}
	refusedEverywhere(t, s, "revoked pbx token", pbx)
	refusedEverywhere(t, s, "revoked user token", alice)
	if ids, code := s.listed(adm, ""); code != http.StatusOK || !slices.Equal(ids, []string{"a-1"}) {
		t.Fatalf("the admin's own token: %v %d", ids, code)
	}

	// A rebuild from the config stream keeps them revoked.
	wipe(t, s.d)
	if _, err := callvault.Rebuild(context.Background(), s.pol); err != nil {
		t.Fatal(err)
	}
	refusedEverywhere(t, s, "revoked pbx token after a rebuild", pbx)
	refusedEverywhere(t, s, "revoked user token after a rebuild", alice)
	if ids, code := s.listed(adm, ""); code != http.StatusOK || !slices.Equal(ids, []string{"a-1"}) {
		t.Fatalf("after the rebuild the admin lists %v %d", ids, code)
	}
	if names, _ := tokenIDs(t, s, r1); !slices.Equal(names, []string{"a-admin", "a-alice", "a-pbx", "r1-admin"}) {
		t.Fatalf("after the rebuild r1 lists %v", names)
	}
}

// TestTokenExpiry: a token past its expiry is refused on every API; one
// cannot be issued already expired.
func TestTokenExpiry(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.provision(system, "a.example", "r1")
	r1, _ := s.issue(system, map[string]any{"name": "r1-admin", "level": "reseller", "reseller": "r1"})
	code, body := s.rest(r1, http.MethodPost, "/api/v1/tokens", map[string]any{"name": "old", "level": "domain", "reseller": "r1", "domain": "a.example", "expires_at": "2020-01-01T00:00:00Z"})
	if code != http.StatusBadRequest || !hasViolation(t, body, "expires_at") {
		t.Fatalf("an already expired token: %d %s", code, body)
	}
	code, body = s.rest(r1, http.MethodPost, "/api/v1/tokens", map[string]any{"name": "old", "level": "domain", "reseller": "r1", "domain": "a.example", "expires_at": "next week"})
	if code != http.StatusBadRequest || !hasViolation(t, body, "expires_at") {
		t.Fatalf("an unparsable expiry: %d %s", code, body)
	}
	expires := time.Now().Add(1500 * time.Millisecond).UTC()
	short, _ := s.issue(r1, map[string]any{"name": "short", "level": "domain", "reseller": "r1", "domain": "a.example", "expires_at": expires.Format(time.RFC3339Nano)})
	if _, code := s.listed(short, ""); code != http.StatusOK {
		t.Fatalf("before its expiry: %d", code)
	}
	_, listing := tokenIDs(t, s, r1)
	if !strings.Contains(listing, `"expires_at":"`+expires.Truncate(time.Millisecond).Format(time.RFC3339Nano)+`"`) {
		t.Fatalf("the list does not show the expiry %s: %s", expires, listing)
	}
	testenv.WaitFor(t, "the token to expire", func() bool { return time.Now().After(expires) })
	refusedEverywhere(t, s, "expired token", short)
}
