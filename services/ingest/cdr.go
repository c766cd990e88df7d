package ingest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/cdr"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
)

// CdrResult is what a batch of CDRs did. Every CDR of the batch is counted
// once: accepted, duplicate or rejected.
type CdrResult struct {
	// Accepted CDRs were stored by this request.
	Accepted int `json:"accepted"`
	// Duplicates were stored before (a retry of the same CDRs).
	Duplicates int `json:"duplicates"`
	// Rejected CDRs were not stored, in batch order.
	Rejected []CdrRejection `json:"rejected"`
}

// CdrRejection names one refused CDR: its position in the batch, its id
// as given, the first offending field and why. Further bad fields of the
// same CDR follow in the reason ("...; also ended_at: ...").
type CdrRejection struct {
	Index  int    `json:"index"`
	ID     string `json:"id"`
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

// Outcome labels of the CDR counter.
const (
	cdrAccepted  = "accepted"
	cdrDuplicate = "duplicate"
	cdrRejected  = "rejected"
	cdrError     = "error"
)

// fieldRecord names a problem with a CDR as a whole (an NDJSON line that
// is not JSON, an array element that is not an object).
const fieldRecord = "record"

// errTooManyCdrs is a batch over cdr.MaxBatch.
var errTooManyCdrs = &limitError{field: "cdrs", reason: fmt.Sprintf("at most %d CDRs per request; split the batch", cdr.MaxBatch)}

// limitError is a request over a size limit; it names the field.
type limitError struct{ field, reason string }

func (e *limitError) Error() string { return e.field + ": " + e.reason }
func (e *limitError) Unwrap() error { return apierr.ErrTooLarge }

// cdrItem is one CDR of a batch and what decoding it already found wrong;
// c is nil when nothing could be decoded.
type cdrItem struct {
	c   *cdrv1.Cdr
	bad []apierr.FieldViolation
}

// PublishCdrs validates each CDR (after normalising it in place), checks
// that p may write it, and publishes the good ones, each with Nats-Msg-Id
// cdr.EventID, answering only once every PubAck is in. A bad CDR is
// rejected by its index and does not hold back the others. An error means
// nothing about the batch can be promised: ErrUnavailable when a CDR's
// publish could not be confirmed (resending the whole batch is safe: what
// was stored comes back as duplicates), ErrTooLarge over cdr.MaxBatch.
func (s *Service) PublishCdrs(ctx context.Context, p auth.Principal, cdrs []*cdrv1.Cdr, source string) (CdrResult, error) {
	items := make([]cdrItem, len(cdrs))
	for i, c := range cdrs {
		items[i].c = c
	}
	return s.publishCdrs(ctx, p, items, source)
}

func (s *Service) publishCdrs(ctx context.Context, p auth.Principal, items []cdrItem, source string) (CdrResult, error) {
	switch {
	case len(items) > cdr.MaxBatch:
		return CdrResult{}, errTooManyCdrs
	case len(items) == 0:
		return CdrResult{}, apierr.Invalid("cdrs", "must hold at least one CDR")
	}
	// Every CDR is counted once, whatever the request answers: a failed
	// request's stored CDRs are stored all the same.
	res := CdrResult{Rejected: []CdrRejection{}}
	defer func() { s.countCdrs(res, len(items)) }()
	reject := func(i int, v ...apierr.FieldViolation) {
		res.Rejected = append(res.Rejected, rejection(i, items[i].c.GetId(), v))
	}

	now := s.now()
	scope := newCdrScope(s, p)
	seen := make(map[string]bool, len(items))
	msgs := make([]cdrMsg, 0, len(items))
	for i, it := range items {
		if v := checkCdr(it, now); len(v) > 0 {
			reject(i, v...)
			continue
		}
		c := it.c
		v, err := scope.judge(ctx, c)
		if err != nil {
			return CdrResult{}, err
		}
		if v != nil {
			reject(i, *v)
			continue
		}
		id := cdr.EventID(c.GetDomain(), c.GetId())
		if seen[id] {
			reject(i, apierr.FieldViolation{Field: "id", Reason: "appears twice in this batch"})
			continue
		}
		seen[id] = true
		data, err := proto.Marshal(cdr.ToEvent(c, now, source))
		if err != nil {
			return CdrResult{}, fmt.Errorf("cdr %s: marshal: %w", id, err)
		}
		msgs = append(msgs, cdrMsg{id: id, data: data, index: i, cdr: c})
	}
	if len(msgs) == 0 {
		return res, nil
	}
	tally, err := s.publishCdrBatch(ctx, msgs)
	res.Accepted, res.Duplicates = tally.stored, tally.duplicates
	for _, i := range tally.conflicts {
		reject(i, apierr.FieldViolation{Field: "id", Reason: "is already stored with other content; a stored CDR is never replaced"})
	}
	slices.SortFunc(res.Rejected, func(a, b CdrRejection) int { return cmp.Compare(a.Index, b.Index) })
	if err != nil {
		return CdrResult{}, fmt.Errorf("%w: %d of %d CDRs not confirmed: %w", apierr.ErrUnavailable, len(msgs)-tally.stored-tally.duplicates-len(tally.conflicts), len(msgs), err)
	}
	return res, nil
}

// checkCdr normalises and validates one CDR. A field decoding already
// found wrong is reported as decoding saw it, not again by validation
// (which sees it empty).
func checkCdr(it cdrItem, now time.Time) []apierr.FieldViolation {
	if it.c == nil {
		if len(it.bad) > 0 {
			return it.bad
		}
		return []apierr.FieldViolation{{Field: fieldRecord, Reason: "is empty"}}
	}
	cdr.Normalize(it.c)
	v := slices.Clone(it.bad)
	var ve *apierr.ValidationError
	if errors.As(cdr.Validate(it.c, now, ""), &ve) {
		for _, f := range ve.Violations {
			if !slices.ContainsFunc(it.bad, func(b apierr.FieldViolation) bool {
				return f.Field == b.Field || strings.HasPrefix(f.Field, b.Field+"[")
			}) {
				v = append(v, f)
			}
		}
	}
	return v
}

// rejection is the answer for the CDR at index i with violations v.
func rejection(i int, id string, v []apierr.FieldViolation) CdrRejection {
	r := CdrRejection{Index: i, ID: id, Field: v[0].Field, Reason: v[0].Reason}
	if len(v) > 1 {
		var b strings.Builder
		b.WriteString(r.Reason)
		for _, f := range v[1:] {
			b.WriteString("; also " + f.Field + ": " + f.Reason)
		}
		r.Reason = b.String()
	}
	return r
}

// countCdrs counts the n CDRs of a request: those res does not account
// for were not confirmed stored.
func (s *Service) countCdrs(res CdrResult, n int) {
	s.metrics.cdrs.WithLabelValues(cdrAccepted).Add(float64(res.Accepted))
	s.metrics.cdrs.WithLabelValues(cdrDuplicate).Add(float64(res.Duplicates))
	s.metrics.cdrs.WithLabelValues(cdrRejected).Add(float64(len(res.Rejected)))
	s.metrics.cdrs.WithLabelValues(cdrError).Add(float64(n - res.Accepted - res.Duplicates - len(res.Rejected)))
}

// cdrScope judges the CDRs of one request against the caller's scope,
// reading (and where the rules allow, provisioning) each domain once.
type cdrScope struct {
	s *Service
	p auth.Principal
	// owners holds each domain's reseller of record; "" for a domain that
	// is not provisioned (and that this caller could not provision).
	owners map[string]string
	// tried holds the domain/reseller pairs provisioning refused.
	tried map[[2]string]bool
}

func newCdrScope(s *Service, p auth.Principal) *cdrScope {
	return &cdrScope{s: s, p: p, owners: map[string]string{}, tried: map[[2]string]bool{}}
}

// judge applies the rules recording uploads follow (see checkTenancy) to
// one CDR and returns the violation that refuses it, nil when p may write
// it. A domain p does not cover is refused with one reason whether it is
// provisioned, another reseller's, or unknown, so a CDR never tells a
// caller which domains exist; only a system token, which sees every
// domain anyway, is told that a domain is not provisioned. An error means
// the registry could not be read: the whole request fails.
func (sc *cdrScope) judge(ctx context.Context, c *cdrv1.Cdr) (*apierr.FieldViolation, error) {
	p, domain := sc.p, c.GetDomain()
	notCovered := &apierr.FieldViolation{Field: "domain", Reason: fmt.Sprintf("is not covered by token %s", p.Name)}
	owner, err := sc.owner(ctx, c)
	if err != nil {
		return nil, err
	}
	if owner == "" {
		if p.Level == auth.LevelSystem {
			return &apierr.FieldViolation{Field: "domain", Reason: fmt.Sprintf("%s is not provisioned", domain)}, nil
		}
		return notCovered, nil
	}
	if !p.Covers(owner, domain, c.GetUser()) {
		if p.Level == auth.LevelUser && p.Covers(owner, domain, p.User) {
			// The caller's own domain: only the user is wrong.
			return &apierr.FieldViolation{Field: "user", Reason: fmt.Sprintf("is not covered by token %s", p.Name)}, nil
		}
		return notCovered, nil
	}
	if owner != c.GetReseller() {
		// Only a caller that covers the domain gets here, so it may learn
		// the domain's reseller.
		return &apierr.FieldViolation{Field: "reseller", Reason: fmt.Sprintf("domain %s is provisioned under another reseller", domain)}, nil
	}
	return nil, nil
}

// owner returns the reseller of record of c's domain, provisioning the
// domain under c's reseller when it is not provisioned and p may: a
// system token, or a reseller token for its own reseller. Domain and user
// tokens never provision. "" means not provisioned.
func (sc *cdrScope) owner(ctx context.Context, c *cdrv1.Cdr) (string, error) {
	p, domain, reseller := sc.p, c.GetDomain(), c.GetReseller()
	owner, known := sc.owners[domain]
	if !known {
		o, ok, err := sc.s.catalog.DomainOwner(ctx, domain)
		if err != nil {
			return "", fmt.Errorf("%w: domain %s: %w", apierr.ErrUnavailable, domain, err)
		}
		if ok {
			owner = o
		}
		sc.owners[domain] = owner
	}
	if owner != "" {
		return owner, nil
	}
	mayProvision := (p.Level == auth.LevelSystem || p.Level == auth.LevelReseller) && p.Covers(reseller, domain, c.GetUser())
	pair := [2]string{domain, reseller}
	if !mayProvision || sc.s.domains == nil || sc.tried[pair] {
		return "", nil
	}
	d, _, err := sc.s.domains.ProvisionDomain(ctx, p, domain, reseller)
	var ve *apierr.ValidationError
	switch {
	case err == nil:
		sc.owners[domain] = d.Reseller
		return d.Reseller, nil
	case errors.Is(err, apierr.ErrConflict):
		// Another reseller provisioned it first: judge by that owner.
		o, ok, err := sc.s.catalog.DomainOwner(ctx, domain)
		if err != nil {
			return "", fmt.Errorf("%w: domain %s: %w", apierr.ErrUnavailable, domain, err)
		}
		if ok {
			sc.owners[domain] = o
		}
		sc.tried[pair] = true
		return sc.owners[domain], nil
	case errors.Is(err, apierr.ErrForbidden), errors.As(err, &ve):
		// Refused: not this caller's domain, and it is not told why.
		sc.tried[pair] = true
		return "", nil
	default:
		return "", fmt.Errorf("provision domain %s: %w", domain, err)
	}
}
