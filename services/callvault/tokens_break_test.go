package callvault_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/callvault/callvault/pkg/testenv"
)

// TestBreakExpiringTokenMintsLongerLivedTokens guards a defect an attack found (fixed): expiry does not
// bound what a token can issue: a domain admin token valid for one hour
// (say, handed to a contractor) mints a domain admin token that never
// expires, and so keeps its access for good. Principal carries no expiry,
// so Issue cannot compare; a token issued by an expiring token must expire
// no later than its issuer (or be refused).
func TestBreakExpiringTokenMintsLongerLivedTokens(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.provision(testenv.BootstrapToken, "a.example", "r1")
	expires := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	short, _ := s.issue(testenv.BootstrapToken, map[string]any{"name": "contractor", "level": "domain", "reseller": "r1", "domain": "a.example", "expires_at": expires})

	code, body := s.rest(short, http.MethodPost, "/api/v1/tokens", map[string]any{"name": "forever", "level": "domain", "reseller": "r1", "domain": "a.example"})
	if code != http.StatusCreated {
		return // refused: the expiry holds
	}
	var out struct {
		ExpiresAt string `json:"expires_at"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	if out.ExpiresAt == "" {
		t.Errorf("a token expiring at %s minted a token that never expires: %s", expires, body)
		return
	}
	if at, err := time.Parse(time.RFC3339Nano, out.ExpiresAt); err != nil || at.After(time.Now().Add(time.Hour+time.Minute)) {
		t.Errorf("a token expiring at %s minted one expiring at %s", expires, out.ExpiresAt)
	}
}
