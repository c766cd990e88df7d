package gateway

import (
	"encoding/json"

	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/catalog"
)

// The REST side of tenant administration: provisioning domains and
// issuing, listing and revoking tokens.

var errNoDomains = fmt.Errorf("%w: domain provisioning is served by the policy service", apierr.ErrUnavailable)

// decodeJSON reads a small JSON object, refusing unknown fields.
func decodeJSON(r *http.Request, v any, fields string) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 16<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return apierr.Invalid("body", "must be a JSON object with %s: %v", fields, err)
	}
	return nil
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// tokenRequest asks for a token narrower than or equal to the caller's.
type tokenRequest struct {
	Name      string `json:"name"`
	Level     string `json:"level"`
	Reseller  string `json:"reseller"`
	Domain    string `json:"domain"`
	User      string `json:"user"`
	ExpiresAt string `json:"expires_at"`
}

// tokenJSON describes a token; it never carries the secret or its hash.
type tokenJSON struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Level     string `json:"level"`
	Reseller  string `json:"reseller,omitempty"`
	Domain    string `json:"domain,omitempty"`
	User      string `json:"user,omitempty"`
	IssuedBy  string `json:"issued_by,omitempty"`
	IssuedAt  string `json:"issued_at,omitempty"`
	ExpiresAt string `json:"expires_at,omitempty"`
	Revoked   bool   `json:"revoked"`
	RevokedBy string `json:"revoked_by,omitempty"`
	RevokedAt string `json:"revoked_at,omitempty"`
}

func tokenToJSON(t auth.TokenInfo) tokenJSON {
	return tokenJSON{
		ID: t.ID, Name: t.Scope.Name, Level: string(t.Scope.Level), Reseller: t.Scope.Reseller, Domain: t.Scope.Domain, User: t.Scope.User,
		IssuedBy: t.IssuedBy, IssuedAt: formatTime(t.IssuedAt), ExpiresAt: formatTime(t.ExpiresAt),
		Revoked: t.Revoked, RevokedBy: t.RevokedBy, RevokedAt: formatTime(t.RevokedAt),
	}
}

func (s *Service) handleIssueToken(w http.ResponseWriter, r *http.Request) {
	p, _ := auth.FromContext(r.Context())
	var req tokenRequest
	if err := decodeJSON(r, &req, "name, level, reseller, domain, user, expires_at"); err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	var expires time.Time
	if req.ExpiresAt != "" {
		t, err := time.Parse(time.RFC3339Nano, req.ExpiresAt)
		if err != nil {
			apierr.HTTP(w, r, apierr.Invalid("expires_at", "must be an RFC 3339 time such as 2027-01-01T00:00:00Z"))
			return
		}
		expires = t
	}
	scope := auth.Principal{Name: req.Name, Level: auth.Level(req.Level), Reseller: req.Reseller, Domain: req.Domain, User: req.User}
	token, info, err := s.tokens.Issue(r.Context(), p, scope, expires)
	if err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	out := struct {
		Token string `json:"token"`
		tokenJSON
	}{Token: token, tokenJSON: tokenToJSON(info)}
	writeJSON(w, http.StatusCreated, out)
}

func (s *Service) handleListTokens(w http.ResponseWriter, r *http.Request) {
	p, _ := auth.FromContext(r.Context())
	ts, err := s.tokens.List(r.Context(), p)
	if err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	out := struct {
		Tokens []tokenJSON `json:"tokens"`
	}{Tokens: make([]tokenJSON, 0, len(ts))}
	for _, t := range ts {
		out.Tokens = append(out.Tokens, tokenToJSON(t))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Service) handleRevokeToken(w http.ResponseWriter, r *http.Request) {
	p, _ := auth.FromContext(r.Context())
	info, err := s.tokens.Revoke(r.Context(), p, r.PathValue("id"))
	if err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, tokenToJSON(info))
}

// domainJSON is the REST form of a provisioned domain.
type domainJSON struct {
	Domain        string `json:"domain"`
	Reseller      string `json:"reseller"`
	ProvisionedBy string `json:"provisioned_by,omitempty"`
	ProvisionedAt string `json:"provisioned_at,omitempty"`
}

func domainToJSON(d catalog.Domain) domainJSON {
	return domainJSON{Domain: d.Domain, Reseller: d.Reseller, ProvisionedBy: d.ProvisionedBy, ProvisionedAt: formatTime(d.ProvisionedAt)}
}

// handleProvisionDomain answers 201 for a new domain and 200 for one
// already provisioned to the same reseller; 409 when another reseller has
// it.
func (s *Service) handleProvisionDomain(w http.ResponseWriter, r *http.Request) {
	p, _ := auth.FromContext(r.Context())
	if s.domains == nil {
		apierr.HTTP(w, r, errNoDomains)
		return
	}
	var req struct {
		Domain   string `json:"domain"`
		Reseller string `json:"reseller"`
	}
	if err := decodeJSON(r, &req, "domain, reseller"); err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	d, created, err := s.domains.ProvisionDomain(r.Context(), p, req.Domain, req.Reseller)
	if err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	code := http.StatusOK
	if created {
		code = http.StatusCreated
	}
	w.Header().Set("Location", "/api/v1/domains/"+d.Domain)
	writeJSON(w, code, domainToJSON(d))
}

func (s *Service) handleListDomains(w http.ResponseWriter, r *http.Request) {
	p, _ := auth.FromContext(r.Context())
	if s.domains == nil {
		apierr.HTTP(w, r, errNoDomains)
		return
	}
	ds, err := s.domains.ListDomains(r.Context(), p, r.URL.Query().Get("reseller"))
	if err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	out := struct {
		Domains []domainJSON `json:"domains"`
	}{Domains: make([]domainJSON, 0, len(ds))}
	for _, d := range ds {
		out.Domains = append(out.Domains, domainToJSON(d))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Service) handleGetDomain(w http.ResponseWriter, r *http.Request) {
	p, _ := auth.FromContext(r.Context())
	if s.domains == nil {
		apierr.HTTP(w, r, errNoDomains)
		return
	}
	d, err := s.domains.GetDomain(r.Context(), p, r.PathValue("domain"))
	if err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, domainToJSON(d))
}
