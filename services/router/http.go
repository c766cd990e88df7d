package router

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	routerv1 "github.com/callvault/callvault/proto/callvault/router/v1"
)

// maxBody bounds a configuration request.
const maxBody = 64 << 10

// RegisterHTTP mounts /api/v1/archive/configs; every route requires a
// bearer token and answers errors as application/problem+json.
func (s *Service) RegisterHTTP(mux *http.ServeMux, a auth.Authenticator) {
	h := func(f http.HandlerFunc) http.Handler { return auth.HTTP(a, f) }
	mux.Handle("POST /api/v1/archive/configs", h(s.httpCreate))
	mux.Handle("GET /api/v1/archive/configs", h(s.httpList))
	mux.Handle("GET /api/v1/archive/configs/{id}", h(s.httpGet))
	mux.Handle("PUT /api/v1/archive/configs/{id}", h(s.httpUpdate))
	mux.Handle("DELETE /api/v1/archive/configs/{id}", h(s.httpDelete))
	mux.Handle("POST /api/v1/archive/configs/{id}/test", h(s.httpTest))
	mux.Handle("GET /api/v1/archive/configs/{id}/status", h(s.httpStatus))
}

var jsonOut = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false}

func writeProto(w http.ResponseWriter, status int, m proto.Message) {
	b, err := jsonOut.Marshal(m)
	if err != nil {
		http.Error(w, "encoding the answer failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// readProto decodes the body into m; an unknown or mistyped field is
// named in the error.
func readProto(r *http.Request, m proto.Message) error {
	b, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBody))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return apierr.Invalid("body", "must be at most %d bytes", maxBody)
	}
	if err != nil {
		return apierr.Invalid("body", "could not be read: %v", err)
	}
	if !json.Valid(b) {
		return apierr.Invalid("body", "must be a JSON object")
	}
	if err := protojson.Unmarshal(b, m); err != nil {
		return apierr.Invalid(bodyField(err), "%s", bodyProblem(err))
	}
	return nil
}

// secretFields are the write-only fields of a request body.
var secretFields = []string{"secret_access_key", "password", "private_key", "secretAccessKey", "privateKey"}

// bodyField names the field a decoding error is about, when it is a secret.
func bodyField(err error) string {
	for _, f := range secretFields {
		if strings.Contains(err.Error(), f) {
			return "secret"
		}
	}
	return "body"
}

// bodyProblem is the decoding error, without the value it quotes when that
// value belongs to a secret.
func bodyProblem(err error) string {
	if bodyField(err) == "secret" {
		return "a secret must be a JSON string (secret_access_key, password or private_key)"
	}
	return err.Error()
}

func (s *Service) httpCreate(w http.ResponseWriter, r *http.Request) {
	var req routerv1.CreateConfigRequest
	if err := readProto(r, &req); err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	c, warn, err := s.CreateConfig(r.Context(), principal(r.Context()), req.GetConfig(), req.GetSecret())
	if err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/v1/archive/configs/"+c.GetId())
	writeProto(w, http.StatusCreated, &routerv1.CreateConfigResponse{Config: c, Warnings: warn})
}

func (s *Service) httpList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	cs, err := s.ListConfigs(r.Context(), principal(r.Context()), q.Get("level"), q.Get("match"))
	if err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	writeProto(w, http.StatusOK, &routerv1.ListConfigsResponse{Configs: cs})
}

func (s *Service) httpGet(w http.ResponseWriter, r *http.Request) {
	c, err := s.GetConfig(r.Context(), principal(r.Context()), r.PathValue("id"))
	if err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	writeProto(w, http.StatusOK, &routerv1.GetConfigResponse{Config: c})
}

func (s *Service) httpUpdate(w http.ResponseWriter, r *http.Request) {
	var req routerv1.UpdateConfigRequest
	if err := readProto(r, &req); err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	if req.Config == nil {
		apierr.HTTP(w, r, apierr.Invalid("config", "is required"))
		return
	}
	if id := req.GetConfig().GetId(); id != "" && id != r.PathValue("id") {
		apierr.HTTP(w, r, apierr.Invalid("config.id", "must be the id in the path (or empty)"))
		return
	}
	req.Config.Id = r.PathValue("id")
	c, warn, err := s.UpdateConfig(r.Context(), principal(r.Context()), req.GetConfig(), req.GetSecret())
	if err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	writeProto(w, http.StatusOK, &routerv1.UpdateConfigResponse{Config: c, Warnings: warn})
}

func (s *Service) httpDelete(w http.ResponseWriter, r *http.Request) {
	if err := s.DeleteConfig(r.Context(), principal(r.Context()), r.PathValue("id")); err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) httpTest(w http.ResponseWriter, r *http.Request) {
	out, err := s.TestConfig(r.Context(), principal(r.Context()), r.PathValue("id"))
	if err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	writeProto(w, http.StatusOK, out)
}

func (s *Service) httpStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.Status(r.Context(), principal(r.Context()), r.PathValue("id"))
	if err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	writeProto(w, http.StatusOK, &routerv1.GetStatusResponse{Status: st})
}
