package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/cdr"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
)

// The REST side of the CDR ledger: streaming a range of CDRs, and
// background exports of ranges too big for one request. The ledger judges
// every call by the caller's principal; the gateway only reads the
// request and writes the answer.

var errNoCdrs = fmt.Errorf("%w: CDRs are served by the policy service", apierr.ErrUnavailable)

// SetCdrs connects the gateway to the CDR ledger (nil: the CDR routes
// answer 503).
func (s *Service) SetCdrs(l cdr.Ledger) { s.cdrs = l }

// cdrParams is a CDR selection as a client writes it: the query string of
// GET /api/v1/cdrs or the body of POST /api/v1/cdrs/exports. Each has the
// name of its parameter and JSON field.
type cdrParams struct {
	Domain string `json:"domain"`
	From   string `json:"from"`
	To     string `json:"to"`
	User   string `json:"user"`
	Number string `json:"number"`
	CallID string `json:"call_id"`
	Format string `json:"format"`
	Order  string `json:"order"`
}

func cdrParamsOf(v url.Values) cdrParams {
	return cdrParams{Domain: v.Get("domain"), From: v.Get("from"), To: v.Get("to"), User: v.Get("user"),
		Number: v.Get("number"), CallID: v.Get("call_id"), Format: v.Get("format"), Order: v.Get("order")}
}

const boundSyntax = "an RFC 3339 time such as 2026-11-02T10:00:00Z or a UTC day such as 2026-11-02"

// cdrQuery turns params into the ledger's query and the document format,
// naming every bad parameter. A domain or user token that names no domain
// means its own. A bare day is the start of that UTC day for from and to
// alike, so to (exclusive) = 2026-11-02 ends with the last call of
// 2026-11-01.
func cdrQuery(p auth.Principal, c cdrParams) (*cdrv1.Query, cdrv1.ExportFormat, error) {
	v := &apierr.ValidationError{}
	q := &cdrv1.Query{Domain: c.Domain, User: c.User, Number: c.Number, CallId: c.CallID, NewestFirst: true}
	if q.Domain == "" && (p.Level == auth.LevelDomain || p.Level == auth.LevelUser) {
		q.Domain = p.Domain
	}
	q.From, q.To = bound(v, "from", c.From), bound(v, "to", c.To)
	switch c.Order {
	case "", "newest":
	case "oldest":
		q.NewestFirst = false
	default:
		v.Add("order", "must be newest or oldest, not %q", c.Order)
	}
	f := cdrv1.ExportFormat_EXPORT_FORMAT_JSON
	if c.Format != "" {
		var err error
		if f, err = cdr.ParseFormat(c.Format); err != nil {
			v.Add("format", "%v", err)
		}
	}
	// The ledger's own checks, for the fields not already found wrong.
	var more *apierr.ValidationError
	if errors.As(cdr.ValidateQuery(q, ""), &more) {
		for _, m := range more.Violations {
			if !slices.ContainsFunc(v.Violations, func(f apierr.FieldViolation) bool { return f.Field == m.Field }) {
				v.Violations = append(v.Violations, m)
			}
		}
	}
	return q, f, v.Err()
}

// bound parses from or to; nil (with the violation noted) when bad.
func bound(v *apierr.ValidationError, name, s string) *timestamppb.Timestamp {
	if s == "" {
		v.Add(name, "is required: %s", boundSyntax)
		return nil
	}
	// An offset's + sent unescaped in a query string arrives as a space,
	// which an RFC 3339 time never holds.
	s = strings.ReplaceAll(s, " ", "+")
	var t time.Time
	var err error
	if len(s) == len(time.DateOnly) {
		t, err = cdr.ParseDay(s)
	} else {
		t, err = time.Parse(time.RFC3339Nano, s)
	}
	if err != nil {
		v.Add(name, "must be %s, not %q", boundSyntax, s)
		return nil
	}
	return timestamppb.New(t)
}

// handleCdrs streams the CDRs a query selects, as they arrive from the
// ledger, in constant memory. Nothing is written before the first batch,
// so a refusal is a problem document. Once rows are out the status is
// sent: a failure after that aborts the response, so the client's read
// fails instead of ending cleanly (and a JSON array lacks its closing
// bracket), and is logged.
func (s *Service) handleCdrs(w http.ResponseWriter, r *http.Request) {
	p, _ := auth.FromContext(r.Context())
	if s.cdrs == nil {
		apierr.HTTP(w, r, errNoCdrs)
		return
	}
	q, f, err := cdrQuery(p, cdrParamsOf(r.URL.Query()))
	if err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	st, err := newCdrStream(w, q, f)
	if err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	err = s.cdrs.Export(r.Context(), p, q, st.write)
	if err == nil {
		err = st.finish()
	}
	status := "complete"
	switch {
	case err == nil:
	case st.clientGone || r.Context().Err() != nil:
		status = "client_gone"
		s.log.Info("CDR stream: the client went away", "domain", q.GetDomain(), "rows", st.rows, "err", err)
	case !st.started:
		status = "error"
		apierr.HTTP(w, r, err)
	default:
		status = "truncated"
		s.log.Error("CDR stream ended early", "domain", q.GetDomain(), "format", cdr.FormatName(f), "rows", st.rows, "err", err)
	}
	s.cdrStreams.WithLabelValues(status).Inc()
	s.cdrRows.WithLabelValues(cdr.FormatName(f)).Add(float64(st.rows))
	if err != nil && st.started {
		// Ends the response without its last chunk (HTTP/1.1) or with a
		// stream reset (HTTP/2): the client cannot take it for complete.
		panic(http.ErrAbortHandler)
	}
}

// cdrStream writes the batches of one export to the response.
type cdrStream struct {
	w        http.ResponseWriter
	rc       *http.ResponseController
	enc      cdr.Encoder
	f        cdrv1.ExportFormat
	filename string
	started  bool
	// clientGone is set when a write to the client failed.
	clientGone bool
	rows       int64
}

func newCdrStream(w http.ResponseWriter, q *cdrv1.Query, f cdrv1.ExportFormat) (*cdrStream, error) {
	enc, err := cdr.NewEncoder(w, f) // writes nothing before the first flush
	if err != nil {
		return nil, err
	}
	name := "cdrs-" + fileSafe(q.GetDomain()) + "-" + fileStamp(q.GetFrom().AsTime()) + "-" + fileStamp(q.GetTo().AsTime()) + "." + cdr.Extension(f)
	return &cdrStream{w: w, rc: http.NewResponseController(w), enc: enc, f: f, filename: name}, nil
}

// start sends the status and headers: from here on, errors cannot be
// answered with a problem document.
func (st *cdrStream) start() {
	st.started = true
	h := st.w.Header()
	h.Set("Content-Type", cdr.ContentType(st.f))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if st.f == cdrv1.ExportFormat_EXPORT_FORMAT_CSV {
		h.Set("Content-Disposition", `attachment; filename="`+st.filename+`"`)
	}
	st.w.WriteHeader(http.StatusOK)
}

// write encodes one batch and flushes it to the client.
func (st *cdrStream) write(batch []*cdrv1.Cdr) error {
	if len(batch) == 0 {
		return nil
	}
	if !st.started {
		st.start()
	}
	for _, c := range batch {
		if err := st.enc.Encode(c); err != nil {
			return st.gone(err)
		}
		st.rows++
	}
	if err := st.enc.Flush(); err != nil {
		return st.gone(err)
	}
	if err := st.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return st.gone(err)
	}
	return nil
}

// finish ends a complete document (an empty one when no batch came).
func (st *cdrStream) finish() error {
	if !st.started {
		st.start()
	}
	if err := st.enc.Close(); err != nil {
		return st.gone(err)
	}
	return nil
}

func (st *cdrStream) gone(err error) error {
	st.clientGone = true
	return fmt.Errorf("write CDRs to the client: %w", err)
}

// fileStamp names a bound in a file name: the day alone at midnight.
func fileStamp(t time.Time) string {
	t = t.UTC()
	if t.Equal(t.Truncate(24 * time.Hour)) {
		return t.Format("20060102")
	}
	return t.Format("20060102T150405Z")
}

// decodeCdrParams reads an export request body, naming any field that is
// unknown or not a string.
func decodeCdrParams(r *http.Request) (cdrParams, error) {
	const fields = "domain, from, to, user, number, call_id, format, order"
	var c cdrParams
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(io.LimitReader(r.Body, 16<<10))
	if err := dec.Decode(&raw); err != nil || raw == nil {
		return c, apierr.Invalid("body", "must be a JSON object with %s", fields)
	}
	if dec.More() {
		return c, apierr.Invalid("body", "must be one JSON object")
	}
	targets := map[string]*string{
		"domain": &c.Domain, "from": &c.From, "to": &c.To, "user": &c.User,
		"number": &c.Number, "call_id": &c.CallID, "format": &c.Format, "order": &c.Order,
	}
	v := &apierr.ValidationError{}
	names := make([]string, 0, len(raw))
	for name := range raw {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		dst, ok := targets[name]
		switch {
		case !ok:
			v.Add(name, "is not a field of an export request (%s)", fields)
		case json.Unmarshal(raw[name], dst) != nil:
			v.Add(name, "must be a string")
		}
	}
	return c, v.Err()
}

// mergeViolations adds to first the violations of second on fields first
// does not name. first is returned as is unless both are validation errors.
func mergeViolations(first, second error) error {
	var a, b *apierr.ValidationError
	if !errors.As(first, &a) || !errors.As(second, &b) || slices.ContainsFunc(a.Violations, func(v apierr.FieldViolation) bool { return v.Field == "body" }) {
		return first
	}
	out := &apierr.ValidationError{Violations: slices.Clone(a.Violations)}
	for _, v := range b.Violations {
		if !slices.ContainsFunc(out.Violations, func(x apierr.FieldViolation) bool { return x.Field == v.Field }) {
			out.Violations = append(out.Violations, v)
		}
	}
	return out
}

// cdrExportJSON is the REST form of a background export.
type cdrExportJSON struct {
	ID     string       `json:"id"`
	State  string       `json:"state"`
	Format string       `json:"format"`
	Query  cdrQueryJSON `json:"query"`
	// Partitions read of those the query covers, and rows written so far.
	PartitionsDone  uint32 `json:"partitions_done"`
	PartitionsTotal uint32 `json:"partitions_total"`
	Rows            int64  `json:"rows"`
	SizeBytes       int64  `json:"size_bytes"`
	Error           string `json:"error,omitempty"`
	Attempts        uint32 `json:"attempts"`
	CreatedBy       string `json:"created_by,omitempty"`
	CreatedAt       string `json:"created_at,omitempty"`
	FinishedAt      string `json:"finished_at,omitempty"`
	URL             string `json:"url"`
	// DownloadURL is set once the file is ready.
	DownloadURL string `json:"download_url,omitempty"`
}

type cdrQueryJSON struct {
	Domain string `json:"domain"`
	From   string `json:"from"`
	To     string `json:"to"`
	User   string `json:"user,omitempty"`
	Number string `json:"number,omitempty"`
	CallID string `json:"call_id,omitempty"`
	Order  string `json:"order"`
}

func exportPath(id string) string { return "/api/v1/cdrs/exports/" + url.PathEscape(id) }

func exportToJSON(e *cdrv1.Export) cdrExportJSON {
	at := func(ts *timestamppb.Timestamp) string {
		if ts == nil {
			return ""
		}
		return formatTime(ts.AsTime())
	}
	q := e.GetQuery()
	order := "oldest"
	if q.GetNewestFirst() {
		order = "newest"
	}
	out := cdrExportJSON{
		ID: e.GetId(), State: cdr.StateName(e.GetState()), Format: cdr.FormatName(e.GetFormat()),
		Query: cdrQueryJSON{Domain: q.GetDomain(), From: at(q.GetFrom()), To: at(q.GetTo()), User: q.GetUser(),
			Number: q.GetNumber(), CallID: q.GetCallId(), Order: order},
		PartitionsDone: e.GetPartitionsDone(), PartitionsTotal: e.GetPartitionsTotal(), Rows: e.GetRows(),
		SizeBytes: e.GetSizeBytes(), Error: e.GetError(), Attempts: e.GetAttempts(), CreatedBy: e.GetCreatedBy(),
		CreatedAt: at(e.GetCreatedAt()), FinishedAt: at(e.GetFinishedAt()), URL: exportPath(e.GetId()),
	}
	if e.GetState() == cdrv1.ExportState_EXPORT_STATE_DONE {
		out.DownloadURL = exportPath(e.GetId()) + "/download"
	}
	return out
}

// handleCreateCdrExport answers 202 with the queued export; its Location
// is where to poll it.
func (s *Service) handleCreateCdrExport(w http.ResponseWriter, r *http.Request) {
	p, _ := auth.FromContext(r.Context())
	if s.cdrs == nil {
		apierr.HTTP(w, r, errNoCdrs)
		return
	}
	c, derr := decodeCdrParams(r)
	q, f, err := cdrQuery(p, c)
	if derr != nil {
		// Every bad field in one answer: the fields that decoded are
		// checked too, beside those that did not.
		apierr.HTTP(w, r, mergeViolations(derr, err))
		return
	}
	if err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	e, err := s.cdrs.CreateExport(r.Context(), p, q, f)
	if err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	w.Header().Set("Location", exportPath(e.GetId()))
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusAccepted, exportToJSON(e))
}

func (s *Service) handleGetCdrExport(w http.ResponseWriter, r *http.Request) {
	p, _ := auth.FromContext(r.Context())
	if s.cdrs == nil {
		apierr.HTTP(w, r, errNoCdrs)
		return
	}
	e, err := s.cdrs.GetExport(r.Context(), p, r.PathValue("id"))
	if err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, exportToJSON(e))
}

// handleDownloadCdrExport sends a finished export's file (409 while it is
// not done). A file that breaks off mid-way aborts the response, as a
// stream does.
func (s *Service) handleDownloadCdrExport(w http.ResponseWriter, r *http.Request) {
	p, _ := auth.FromContext(r.Context())
	if s.cdrs == nil {
		apierr.HTTP(w, r, errNoCdrs)
		return
	}
	id := r.PathValue("id")
	body, e, err := s.cdrs.OpenExport(r.Context(), p, id)
	if err != nil {
		apierr.HTTP(w, r, err)
		return
	}
	defer body.Close()
	h := w.Header()
	h.Set("Content-Type", cdr.ContentType(e.GetFormat()))
	h.Set("Content-Disposition", `attachment; filename="cdrs-`+fileSafe(e.GetId())+"."+cdr.Extension(e.GetFormat())+`"`)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if n := e.GetSizeBytes(); n > 0 {
		h.Set("Content-Length", strconv.FormatInt(n, 10))
	}
	w.WriteHeader(http.StatusOK)
	if n, err := io.Copy(w, body); err != nil {
		if r.Context().Err() != nil {
			s.log.Info("CDR export download: the client went away", "export", id, "sent", n, "err", err)
		} else {
			s.log.Error("CDR export download ended early", "export", id, "sent", n, "err", err)
		}
		panic(http.ErrAbortHandler)
	}
}

// fileSafe keeps what a quoted file name may hold unescaped.
func fileSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, s)
}
