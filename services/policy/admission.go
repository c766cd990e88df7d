package policy

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/retention"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
)

// capFor resolves the effective cap of an artifact of kind at the
// artifact's own acceptance time (never the clock, so a redelivery or a
// replay asks the same question).
func (s *Service) capFor(ctx context.Context, kind retention.Kind, reseller, domain, user string, at time.Time) (catalog.CapCheck, retention.Policy, error) {
	pol, err := s.policyFor(ctx, kind, reseller, domain, user)
	if err != nil {
		return catalog.CapCheck{}, retention.Policy{}, err
	}
	return capCheckOf(pol, at), pol, nil
}

// policyFor is the effective policy of kind for a tenant, as the
// overrides stand now.
func (s *Service) policyFor(ctx context.Context, kind retention.Kind, reseller, domain, user string) (retention.Policy, error) {
	chain, err := s.overrides.Chain(ctx, kind, reseller, domain, user)
	if err != nil {
		return retention.Policy{}, err
	}
	pol, err := retention.Resolve(s.preset, kind, chain)
	if err != nil {
		return retention.Policy{}, bus.Poison(err)
	}
	return pol, nil
}

// capCheckOf is what admission checks for pol's cap, for an artifact
// accepted at at.
func capCheckOf(pol retention.Policy, at time.Time) catalog.CapCheck {
	c := pol.Cap
	if c == nil {
		return catalog.CapCheck{}
	}
	check := catalog.CapCheck{Limit: c.Limit}
	switch {
	case c.Scope == retention.PerAccountMonth:
		check.Mode = catalog.MonthlyLimit
	case c.Action == retention.EvictOldest:
		// Eviction is a deletion: the catalog's script checks holds
		// in the same step; the minimum is a cutoff on the start time.
		check.Mode, check.EvictBefore = catalog.EvictOldest, pol.MinimumCutoff(at)
	default:
		check.Mode = catalog.RefuseAtLimit
	}
	return check
}

var messageKinds = map[eventv1.DataKind]retention.Kind{
	eventv1.DataKind_DATA_KIND_VOICEMAIL:    retention.Voicemail,
	eventv1.DataKind_DATA_KIND_FAX_RECEIVED: retention.FaxReceived,
	eventv1.DataKind_DATA_KIND_FAX_SENT:     retention.FaxSent,
	eventv1.DataKind_DATA_KIND_FAX_OUTBOX:   retention.FaxOutbox,
	eventv1.DataKind_DATA_KIND_SMS:          retention.SMS,
}

// artifactOf validates an ingest event (or the artifact an admission
// decision carries) and builds what admission decides on. seq is the
// ingest event's stream sequence.
func (s *Service) artifactOf(env *eventv1.Envelope, seq uint64) (catalog.Artifact, retention.Kind, error) {
	a, kind, err := s.buildArtifact(env, seq)
	if err == nil {
		// What the catalog cannot hold (a time before 1970 or after 5797, a
		// field over 256 KiB) can never be admitted: a dead letter, at once.
		if cerr := catalog.CheckArtifact(a); cerr != nil {
			return catalog.Artifact{}, kind, bus.Poison(cerr)
		}
	}
	return a, kind, err
}

func (s *Service) buildArtifact(env *eventv1.Envelope, seq uint64) (catalog.Artifact, retention.Kind, error) {
	t := env.GetTenant()
	id := bus.ArtifactID(env)
	switch b := env.GetBody().(type) {
	case *eventv1.Envelope_Recording:
		r, err := recordingFromEvent(env, b.Recording, seq)
		if err != nil {
			return catalog.Artifact{}, "", bus.Poison(err)
		}
		kind := retention.RecordingAutomatic
		if r.Mode == "on_demand" {
			kind = retention.RecordingOnDemand
		}
		return s.catalog.RecordingArtifact(r), kind, nil
	case *eventv1.Envelope_Message:
		m := b.Message
		kind, ok := messageKinds[m.GetKind()]
		switch {
		case !ok:
			return catalog.Artifact{}, "", bus.Poison(fmt.Errorf("message %s: kind %s is not a message kind", id, m.GetKind()))
		case t.GetDomain() == "" || t.GetReseller() == "" || t.GetUser() == "":
			return catalog.Artifact{}, kind, bus.Poison(fmt.Errorf("message %s: reseller, domain and user are required", id))
		case kind == retention.SMS && m.GetFolder() == eventv1.MessageFolder_MESSAGE_FOLDER_UNSPECIFIED:
			return catalog.Artifact{}, kind, bus.Poison(fmt.Errorf("message %s: an SMS needs a folder", id))
		case m.GetReceivedAt() == nil:
			return catalog.Artifact{}, kind, bus.Poison(fmt.Errorf("message %s: no received_at", id))
		}
		folder := ""
		if kind == retention.SMS {
			folder = strings.ToLower(strings.TrimPrefix(m.GetFolder().String(), "MESSAGE_FOLDER_"))
		}
		return s.catalog.MessageArtifact(catalog.Message{
			ID: id, Reseller: t.GetReseller(), Domain: t.GetDomain(), User: t.GetUser(), Kind: string(kind), Folder: folder,
			ReceivedAt: m.GetReceivedAt().AsTime(), From: m.GetFrom(), To: m.GetTo(), Size: m.GetMedia().GetSizeBytes(),
			SHA256: m.GetMedia().GetSha256(), ObjectKey: m.GetMedia().GetKey(), ContentType: m.GetMedia().GetContentType(),
			AcceptedAt: env.GetAcceptedAt().AsTime(), StreamSeq: seq,
		}), kind, nil
	default:
		return catalog.Artifact{}, "", bus.Poison(fmt.Errorf("envelope %s: no admission rule for %T", id, env.GetBody()))
	}
}

// Admit decides one ingest event: it records the decision atomically with
// the catalog write, then carries out the effects the decision owes until
// each is confirmed. A redelivery finds the decision recorded and only
// finishes what is still owed, so it never decides again. It is the
// admission consumer's batch path (admitMany) for a batch of one.
//
// Domains are provisioned by config events only (ingest provisions an
// unknown domain before it publishes, when its token may). An event for a
// domain not provisioned yet is retried, then dead-lettered; one for
// another reseller's domain is dead-lettered at once.
func (s *Service) Admit(ctx context.Context, env *eventv1.Envelope, seq uint64) error {
	errs := make([]error, 1)
	s.admitMany(ctx, []*admitItem{{env: env, seq: seq}}, errs)
	return errs[0]
}

// repeatOf looks at the record of an event whose artifact was decided
// before: when the event points at another object (a PBX that uploaded
// the same id again after the duplicate window) it removes that object,
// which the catalog never references, and reports other; it also reports
// the stream sequence of the event that made the decision (0 when the
// record does not say).
func (s *Service) repeatOf(ctx context.Context, a catalog.Artifact) (other bool, decidedBy uint64, err error) {
	rec, err := s.catalog.Record(ctx, a.Domain, a.ID)
	if err != nil {
		return false, 0, err
	}
	if a.ObjectKey == "" || a.ObjectKey == rec.ObjectKey {
		return false, rec.Seq, nil
	}
	if err := s.d.CDS.Delete(ctx, a.ObjectKey); err != nil {
		return true, 0, fmt.Errorf("remove unreferenced media %s: %w", a.ObjectKey, err)
	}
	return true, 0, nil
}

// finishDeletion carries out what a deletion still owes: the media goes
// first, then the tombstone is published, and each is confirmed in the
// record. The tombstone is the last word: once it is in the stream, a
// rebuild restores the deletion.
func (s *Service) finishDeletion(ctx context.Context, reseller, domain, id string) error {
	rec, err := s.catalog.Record(ctx, domain, id)
	if err != nil {
		return err
	}
	for _, effect := range []byte(rec.Pending) {
		switch effect {
		case catalog.EffectRemoveMedia:
			if rec.ObjectKey != "" {
				if err := s.d.CDS.Delete(ctx, rec.ObjectKey); err != nil {
					return fmt.Errorf("remove deleted media %s: %w", rec.ObjectKey, err)
				}
			}
		case catalog.EffectTombstone:
			ev := tombstone(reseller, rec)
			if _, err := bus.PublishEnvelope(ctx, s.d.JS, s.d.Names.DeletionSubject(), ev.GetId(), ev); err != nil {
				return err
			}
		}
		if err := s.catalog.Done(ctx, domain, id, effect); err != nil {
			return err
		}
	}
	return nil
}

// CheckQuota answers whether one more artifact of kind would be admitted
// for a tenant now.
func (s *Service) CheckQuota(ctx context.Context, p auth.Principal, k eventv1.DataKind, t *eventv1.Tenant, folder eventv1.MessageFolder) (*policyv1.CheckQuotaResponse, error) {
	kind, err := kindOf(k, "kind")
	if err != nil {
		return nil, err
	}
	v := &apierr.ValidationError{}
	if t.GetDomain() == "" {
		v.Add("tenant.domain", "is required")
	}
	if (kind == retention.Voicemail || kind == retention.FaxReceived || kind == retention.SMS) && t.GetUser() == "" {
		v.Add("tenant.user", "is required for a %s quota", kind)
	}
	if kind == retention.SMS && folder == eventv1.MessageFolder_MESSAGE_FOLDER_UNSPECIFIED {
		v.Add("folder", "is required for an SMS quota")
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	reseller, err := s.catalog.AuthorizeDomain(ctx, p, t.GetDomain())
	if err != nil {
		return nil, err
	}
	f := strings.ToLower(strings.TrimPrefix(folder.String(), "MESSAGE_FOLDER_"))
	check, pol, err := s.capFor(ctx, kind, reseller, t.GetDomain(), t.GetUser(), time.Now())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	if check.Mode == catalog.NoCap {
		return &policyv1.CheckQuotaResponse{Allowed: true}, nil
	}
	used, err := s.catalog.Count(ctx, kind == retention.RecordingAutomatic || kind == retention.RecordingOnDemand,
		s.trackKey(kind, t.GetDomain(), t.GetUser(), f, time.Now()))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	out := &policyv1.CheckQuotaResponse{Allowed: true, Used: used, Limit: check.Limit, Action: capProto(pol.Cap).GetAction()}
	if used >= check.Limit {
		switch check.Mode {
		case catalog.MonthlyLimit:
			out.Allowed, out.Reason = false, "monthly_cap"
		case catalog.RefuseAtLimit:
			out.Allowed, out.Reason = false, "box_full"
		case catalog.EvictOldest:
			held, err := s.holds.Covering(ctx, t.GetDomain(), t.GetUser(), "")
			if err != nil {
				return nil, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
			}
			if len(held) > 0 {
				out.Allowed, out.Reason = false, "folder_full_under_hold"
			}
		}
	}
	return out, nil
}
