package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/services/gateway/internal/httprange"
)

// RegisterHTTP mounts the REST API; every route requires a bearer token.
func (s *Service) RegisterHTTP(mux *http.ServeMux, a auth.Authenticator) {
	mux.Handle("GET /api/v1/pbx/recordings", auth.HTTP(a, http.HandlerFunc(s.handleList)))
	mux.Handle("GET /api/v1/pbx/recordings/{id}", auth.HTTP(a, http.HandlerFunc(s.handleGet)))
	mux.Handle("GET /api/v1/pbx/recordings/{id}/media", auth.HTTP(a, http.HandlerFunc(s.handleMedia)))
	mux.Handle("HEAD /api/v1/pbx/recordings/{id}/media", auth.HTTP(a, http.HandlerFunc(s.handleMedia)))
	mux.Handle("POST /api/v1/tokens", auth.HTTP(a, http.HandlerFunc(s.handleIssueToken)))
	mux.Handle("GET /api/v1/tokens", auth.HTTP(a, http.HandlerFunc(s.handleListTokens)))
	mux.Handle("DELETE /api/v1/tokens/{id}", auth.HTTP(a, http.HandlerFunc(s.handleRevokeToken)))
	mux.Handle("POST /api/v1/domains", auth.HTTP(a, http.HandlerFunc(s.handleProvisionDomain)))
	mux.Handle("GET /api/v1/domains", auth.HTTP(a, http.HandlerFunc(s.handleListDomains)))
	mux.Handle("GET /api/v1/domains/{domain}", auth.HTTP(a, http.HandlerFunc(s.handleGetDomain)))
	mux.Handle("GET /api/v1/cdrs", auth.HTTP(a, http.HandlerFunc(s.handleCdrs)))
	mux.Handle("POST /api/v1/cdrs/exports", auth.HTTP(a, http.HandlerFunc(s.handleCreateCdrExport)))
	mux.Handle("GET /api/v1/cdrs/exports/{id}", auth.HTTP(a, http.HandlerFunc(s.handleGetCdrExport)))
	mux.Handle("GET /api/v1/cdrs/exports/{id}/download", auth.HTTP(a, http.HandlerFunc(s.handleDownloadCdrExport)))
}

// recordingJSON is the REST form of a recording.
type recordingJSON struct {
	ID          string `json:"id"`
	CallID      string `json:"call_id"`
	Reseller    string `json:"reseller"`
	Domain      string `json:"domain"`
	User        string `json:"user,omitempty"`
	Mode        string `json:"mode"`
	StartedAt   string `json:"started_at"`
	DurationS   uint32 `json:"duration_s"`
	ContentType string `json:"content_type"`
	SizeBytes   int64  `json:"size_bytes"`
	SHA256      string `json:"sha256"`
	AcceptedAt  string `json:"accepted_at"`
	MediaURL    string `json:"media_url"`
	// Archive is where the recording is archived (absent without a router).
	Archive *archiveJSON `json:"archive,omitempty"`
}

func toJSON(r catalog.Recording) recordingJSON {
	return recordingJSON{
		ID: r.ID, CallID: r.CallID, Reseller: r.Reseller, Domain: r.Domain, User: r.User, Mode: r.Mode,
		StartedAt: r.StartedAt.UTC().Format(time.RFC3339Nano), DurationS: r.DurationS, ContentType: r.ContentType,
		SizeBytes: r.Size, SHA256: r.SHA256, AcceptedAt: r.AcceptedAt.UTC().Format(time.RFC3339Nano),
		MediaURL: "/api/v1/pbx/recordings/" + r.ID + "/media",
	}
}

// Page size bounds.
const (
	defaultLimit = 100
	maxLimit     = 1000
)

// parseListQuery validates the list filters, naming each bad parameter.
func parseListQuery(q map[string][]string) (catalog.Query, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	v := &apierr.ValidationError{}
	out := catalog.Query{Domain: get("domain"), User: get("user"), CallID: get("call_id"), Cursor: get("page_token"), Limit: defaultLimit}
	if s := get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxLimit {
			v.Add("limit", "must be an integer from 1 to %d", maxLimit)
		} else {
			out.Limit = n
		}
	}
	parseTime := func(name string) time.Time {
		s := get(name)
		if s == "" {
			return time.Time{}
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			v.Add(name, "must be an RFC 3339 time such as 2026-11-02T10:00:00Z")
		}
		return t
	}
	out.From, out.To = parseTime("from"), parseTime("to")
	if !out.From.IsZero() && !out.To.IsZero() && !out.From.Before(out.To) {
		v.Add("to", "must be after from")
	}
	if len(out.CallID) > 256 {
		v.Add("call_id", "must be at most 256 characters")
	}
	return out, v.Err()
}

func (s *Service) handleList(w http.ResponseWriter, r *http.Request) {
	p, _ := auth.FromContext(r.Context())
	q, err := parseListQuery(r.URL.Query())
	if err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	page, err := s.list(r, p, q)
	if err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	out := struct {
		Recordings    []recordingJSON `json:"recordings"`
		NextPageToken string          `json:"next_page_token,omitempty"`
	}{Recordings: make([]recordingJSON, 0, len(page.Recordings)), NextPageToken: page.Next}
	byDomain := map[string][]string{}
	for _, rec := range page.Recordings {
		byDomain[rec.Domain] = append(byDomain[rec.Domain], rec.ID)
	}
	states := map[string]*archiveJSON{}
	for domain, ids := range byDomain {
		for id, st := range s.archiveStates(r.Context(), p, domain, ids) {
			states[domain+"/"+id] = st
		}
	}
	for _, rec := range page.Recordings {
		j := toJSON(rec)
		j.Archive = states[rec.Domain+"/"+rec.ID]
		out.Recordings = append(out.Recordings, j)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Service) list(r *http.Request, p auth.Principal, q catalog.Query) (catalog.Page, error) {
	domain, user, err := s.listDomain(r.Context(), p, q.Domain, q.User)
	if err != nil {
		return catalog.Page{}, err
	}
	q.Domain, q.User = domain, user
	page, err := s.catalog.ListRecordings(r.Context(), q)
	if errors.Is(err, catalog.ErrBadCursor) {
		return catalog.Page{}, apierr.Invalid("page_token", "is not a token this API issued")
	}
	if err != nil {
		return catalog.Page{}, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	return page, nil
}

func (s *Service) handleGet(w http.ResponseWriter, r *http.Request) {
	p, _ := auth.FromContext(r.Context())
	rec, err := s.recording(r.Context(), p, r.PathValue("id"))
	if err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	j := toJSON(rec)
	j.Archive = s.archiveStates(r.Context(), p, rec.Domain, []string{rec.ID})[rec.ID]
	writeJSON(w, http.StatusOK, j)
}

// handleMedia serves the stored bytes with a strong ETag (the SHA-256) and
// single-range support; players seek with Range requests.
func (s *Service) handleMedia(w http.ResponseWriter, r *http.Request) {
	p, _ := auth.FromContext(r.Context())
	rec, err := s.recording(r.Context(), p, r.PathValue("id"))
	if err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	etag := `"` + rec.SHA256 + `"`
	h := w.Header()
	h.Set("ETag", etag)
	h.Set("Accept-Ranges", "bytes")
	h.Set("Cache-Control", "private, max-age=0")
	h.Set("X-Content-Type-Options", "nosniff")
	if r.URL.Query().Get("download") == "1" {
		h.Set("Content-Disposition", `attachment; filename="`+rec.ID+`"`)
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatches(inm, etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	status, offset, length := http.StatusOK, int64(0), rec.Size
	rangeHeader := r.Header.Get("Range")
	if ir := r.Header.Get("If-Range"); ir != "" && ir != etag {
		rangeHeader = "" // the client's copy is stale: send it all
	}
	rg, partial, err := httprange.Parse(rangeHeader, rec.Size)
	if errors.Is(err, httprange.ErrUnsatisfiable) {
		h.Set("Content-Range", "bytes */"+strconv.FormatInt(rec.Size, 10))
		apierr.WriteProblem(w, apierr.Problem{Type: "urn:callvault:problem:range", Title: "Range not satisfiable",
			Status: http.StatusRequestedRangeNotSatisfiable, Detail: fmt.Sprintf("the recording has %d bytes", rec.Size), Instance: r.URL.Path})
		return
	}
	if partial {
		status, offset, length = http.StatusPartialContent, rg.Start, rg.Length()
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", rg.Start, rg.End, rec.Size))
	}
	h.Set("Content-Type", rec.ContentType)
	h.Set("Content-Length", strconv.FormatInt(length, 10))
	// HEAD answers what GET would: the bytes are looked for the same way
	// (the central copy, else the archive), only not sent.
	body, err := s.store.Open(r.Context(), rec.ObjectKey, offset, length)
	if errors.Is(err, cds.ErrNotFound) && s.archive != nil {
		// The central copy is gone (culled, or migrated away): play the
		// verified archive instead.
		body, err = s.archive.OpenArchived(r.Context(), p, rec.Domain, rec.ID, offset, length)
		if err != nil {
			h.Del("Content-Length")
			h.Del("Content-Range")
			apierr.HTTP(w, r, err)
			return
		}
	}
	if err != nil {
		h.Del("Content-Length")
		h.Del("Content-Range")
		s.log.Error("media unavailable", "id", rec.ID, "err", err)
		apierr.HTTP(w, r, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err))
		return
	}
	defer body.Close()
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	n, err := io.Copy(w, body)
	label := "full"
	if partial {
		label = "partial"
	}
	s.served.WithLabelValues(label).Add(float64(n))
	if err != nil {
		s.log.Warn("media copy ended early", "id", rec.ID, "sent", n, "err", err)
	}
}

func etagMatches(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
