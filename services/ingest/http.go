package ingest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/services/ingest/internal/meta"
)

// maxMetadataBytes bounds the JSON metadata part.
const maxMetadataBytes = 64 << 10

// RegisterHTTP mounts the ingest routes; a wraps them with authentication.
func (s *Service) RegisterHTTP(mux *http.ServeMux, a auth.Authenticator) {
	mux.Handle("POST /api/v1/ingest/recordings", auth.HTTP(a, http.HandlerFunc(s.handleUpload)))
	mux.Handle("POST /api/v1/ingest/cdrs", auth.HTTP(a, http.HandlerFunc(s.handleCdrs)))
}

// handleCdrs reads a batch of CDRs, a JSON array (application/json) or one
// record per line (application/x-ndjson), and answers 200 with what
// became of each: the counts and the rejections by index. The body is read
// whole (it is bounded) before anything is published, so a batch over the
// limit or a malformed array publishes nothing.
func (s *Service) handleCdrs(w http.ResponseWriter, r *http.Request) {
	p, _ := auth.FromContext(r.Context())
	ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var decode func([]byte) ([]cdrItem, error)
	switch {
	case err != nil:
	case ct == "application/json":
		decode = decodeCdrArray
	case ct == "application/x-ndjson" || ct == "application/ndjson":
		decode = decodeCdrLines
	}
	if decode == nil {
		apierr.HTTP(w, r, apierr.Invalid("Content-Type", "must be application/json (an array of CDRs) or application/x-ndjson (one CDR per line)"))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.limits.MaxCdrBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			err = &limitError{field: "body", reason: fmt.Sprintf("must be at most %d bytes", s.limits.MaxCdrBodyBytes)}
		} else {
			err = apierr.Invalid("body", "could not be read: %v", err)
		}
		cdrHTTPError(w, r, err)
		return
	}
	items, err := decode(body)
	if err != nil {
		cdrHTTPError(w, r, err)
		return
	}
	res, err := s.publishCdrs(r.Context(), p, items, "ingest/http")
	if err != nil {
		cdrHTTPError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(res)
}

// cdrHTTPError is apierr.HTTP, but a limit names its field as a
// validation error does.
func cdrHTTPError(w http.ResponseWriter, r *http.Request, err error) {
	var le *limitError
	if !errors.As(err, &le) {
		apierr.HTTP(w, r, err)
		return
	}
	apierr.WriteProblem(w, apierr.Problem{
		Type: "urn:callvault:problem:too-large", Title: "Request too large", Status: http.StatusRequestEntityTooLarge,
		Detail: le.Error(), Instance: r.URL.Path, InvalidParams: []apierr.FieldViolation{{Field: le.field, Reason: le.reason}},
	})
}

// handleUpload reads a multipart/form-data body whose "metadata" part (JSON)
// comes before its "media" part, and streams the media without buffering it.
func (s *Service) handleUpload(w http.ResponseWriter, r *http.Request) {
	p, _ := auth.FromContext(r.Context())
	ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || ct != "multipart/form-data" {
		apierr.HTTP(w, r, apierr.Invalid("Content-Type", "must be multipart/form-data with a metadata part and a media part"))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.limits.MaxMediaBytes+maxMetadataBytes+64<<10)
	mr, err := r.MultipartReader()
	if err != nil {
		apierr.HTTP(w, r, apierr.Invalid("body", "%v", err))
		return
	}
	part, err := mr.NextPart()
	if err != nil {
		apierr.HTTP(w, r, apierr.Invalid("metadata", "is required as the first part"))
		return
	}
	if part.FormName() != "metadata" {
		apierr.HTTP(w, r, apierr.Invalid("metadata", "must be the first part (got %q)", part.FormName()))
		return
	}
	m, err := decodeMetadata(part)
	if err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	media, err := mr.NextPart()
	if err != nil || media.FormName() != "media" {
		apierr.HTTP(w, r, apierr.Invalid("media", "is required as the part after metadata"))
		return
	}
	if m.ContentType == "" {
		// curl -F 'media=@x.wav;type=audio/wav' names it on the part.
		if pct, _, err := mime.ParseMediaType(media.Header.Get("Content-Type")); err == nil && pct != "application/octet-stream" {
			m.ContentType = pct
		}
	}
	res, err := s.StoreRecording(r.Context(), p, m, media, "ingest/http")
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			err = fmt.Errorf("%w: media: larger than %d bytes", apierr.ErrTooLarge, s.limits.MaxMediaBytes)
		}
		apierr.HTTP(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Location", "/api/v1/pbx/recordings/"+res.ID)
	if res.Duplicate {
		w.WriteHeader(http.StatusOK)
	} else {
		w.WriteHeader(http.StatusCreated)
	}
	_ = json.NewEncoder(w).Encode(res)
}

// decodeMetadata parses the metadata part. Each field is decoded on its
// own, so a wrong type in one field does not hide the errors of the others.
func decodeMetadata(r io.Reader) (meta.Recording, error) {
	raw, err := io.ReadAll(io.LimitReader(r, maxMetadataBytes+1))
	if err != nil {
		return meta.Recording{}, apierr.Invalid("metadata", "could not be read: %v", err)
	}
	if len(raw) > maxMetadataBytes {
		return meta.Recording{}, apierr.Invalid("metadata", "must be at most %d bytes", maxMetadataBytes)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return meta.Recording{}, apierr.Invalid("metadata", "must be a JSON object: %v", err)
	}
	v := &apierr.ValidationError{}
	var m meta.Recording
	var startedAt string
	var duration int64
	targets := map[string]any{
		"id": &m.ID, "call_id": &m.CallID, "reseller": &m.Reseller, "domain": &m.Domain, "user": &m.User,
		"mode": &m.Mode, "started_at": &startedAt, "duration_s": &duration, "content_type": &m.ContentType,
	}
	bad := map[string]bool{}
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		target, ok := targets[name]
		if !ok {
			v.Add("metadata."+name, "is not a known field")
			continue
		}
		if err := json.Unmarshal(fields[name], target); err != nil {
			want := "a string"
			if name == "duration_s" {
				want = "a whole number of seconds"
			}
			v.Add("metadata."+name, "must be %s", want)
			bad[name] = true
		}
	}
	if startedAt != "" {
		t, err := time.Parse(time.RFC3339Nano, startedAt)
		if err != nil {
			v.Add("metadata.started_at", "must be an RFC 3339 time such as 2026-11-02T10:00:00Z, not %q", startedAt)
			bad["started_at"] = true
		}
		m.StartedAt = t
	}
	if duration < 0 || duration > meta.MaxDurationS {
		v.Add("metadata.duration_s", "must be between 0 and %d seconds", meta.MaxDurationS)
		bad["duration_s"] = true
	} else {
		m.DurationS = uint32(duration)
	}
	if len(v.Violations) == 0 {
		return m, nil
	}
	// Add what the semantic checks say of the fields that did parse.
	var rest *apierr.ValidationError
	if errors.As(meta.Validate(m, time.Now(), "metadata."), &rest) {
		for _, f := range rest.Violations {
			if !bad[strings.TrimPrefix(f.Field, "metadata.")] {
				v.Violations = append(v.Violations, f)
			}
		}
	}
	return meta.Recording{}, v
}
