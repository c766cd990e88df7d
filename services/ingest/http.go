package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
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
}

// metadataJSON is the wire form of the metadata part.
type metadataJSON struct {
	ID          string `json:"id"`
	CallID      string `json:"call_id"`
	Reseller    string `json:"reseller"`
	Domain      string `json:"domain"`
	User        string `json:"user"`
	Mode        string `json:"mode"`
	StartedAt   string `json:"started_at"`
	DurationS   *int64 `json:"duration_s"`
	ContentType string `json:"content_type"`
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

// decodeMetadata parses the metadata part, naming the field of any type
// or syntax error.
func decodeMetadata(r io.Reader) (meta.Recording, error) {
	raw, err := io.ReadAll(io.LimitReader(r, maxMetadataBytes+1))
	if err != nil {
		return meta.Recording{}, apierr.Invalid("metadata", "could not be read: %v", err)
	}
	if len(raw) > maxMetadataBytes {
		return meta.Recording{}, apierr.Invalid("metadata", "must be at most %d bytes", maxMetadataBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var j metadataJSON
	if err := dec.Decode(&j); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te):
			return meta.Recording{}, apierr.Invalid("metadata."+te.Field, "must be a JSON %s, not %s", te.Type, te.Value)
		case errors.As(err, &se):
			return meta.Recording{}, apierr.Invalid("metadata", "is not valid JSON: %v", err)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return meta.Recording{}, apierr.Invalid("metadata."+name, "is not a known field")
		default:
			return meta.Recording{}, apierr.Invalid("metadata", "is not valid JSON: %v", err)
		}
	}
	m := meta.Recording{ID: j.ID, CallID: j.CallID, Reseller: j.Reseller, Domain: j.Domain, User: j.User, Mode: j.Mode, ContentType: j.ContentType}
	v := &apierr.ValidationError{}
	if j.StartedAt != "" {
		t, err := time.Parse(time.RFC3339Nano, j.StartedAt)
		if err != nil {
			v.Add("metadata.started_at", "must be an RFC 3339 time such as 2026-11-02T10:00:00Z, not %q", j.StartedAt)
		}
		m.StartedAt = t
	}
	if j.DurationS != nil {
		if *j.DurationS < 0 || *j.DurationS > meta.MaxDurationS {
			v.Add("metadata.duration_s", "must be between 0 and %d seconds", meta.MaxDurationS)
		} else {
			m.DurationS = uint32(*j.DurationS)
		}
	}
	if err := v.Err(); err != nil {
		// Report the parse errors together with every other bad field.
		if verr := meta.Validate(m, time.Now(), "metadata."); verr != nil {
			var all *apierr.ValidationError
			if errors.As(verr, &all) {
				for _, f := range all.Violations {
					if f.Field != "metadata.started_at" {
						v.Violations = append(v.Violations, f)
					}
				}
			}
		}
		return meta.Recording{}, v
	}
	return m, nil
}
