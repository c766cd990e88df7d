package callvault_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/callvault/callvault/pkg/testenv"
)

// TestBreakEmptiedRedisIsServed guards a defect an attack found (fixed): the gateway answers from a Redis
// that lost its data while the service runs. Only readiness looks at the
// applied marks; the request path does not, and the policy service rebuilds
// at the next event or within StateCheckInterval (10 s). Meanwhile a valid
// token is told 401 (a client may discard it), the token and domain lists
// come back 200 and empty, and the reseller's own domain reads as someone
// else's (403). Every one of these must be 503 until the rebuild is done.
func TestBreakEmptiedRedisIsServed(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.provision(testenv.BootstrapToken, "a.example", "r1")
	tok, _ := s.issue(testenv.BootstrapToken, map[string]any{"name": "r1-admin", "level": "reseller", "reseller": "r1"})
	if _, code := s.listed(tok, "domain=a.example"); code != http.StatusOK {
		t.Fatalf("list before the flush: %d", code)
	}

	wipe(t, s.d)

	if _, code := s.listed(tok, "domain=a.example"); code != http.StatusServiceUnavailable {
		t.Errorf("list with a valid reseller token over an emptied Redis: %d, want 503", code)
	}
	for _, path := range []string{"/api/v1/tokens", "/api/v1/domains"} {
		code, body := s.rest(testenv.BootstrapToken, http.MethodGet, path, nil)
		if code != http.StatusServiceUnavailable {
			t.Errorf("GET %s over an emptied Redis: %d %s, want 503", path, code, strings.TrimSpace(string(body)))
		}
	}
}
