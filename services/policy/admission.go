package policy

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/retention"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
)

// capFor turns the effective cap of kind for a tenant into the check the
// catalog enforces. at is when the artifact was accepted: months and
// minimum durations count from it, so a replay decides exactly as the
// first admission did.
func (s *Service) capFor(ctx context.Context, kind retention.Kind, reseller, domain, user, folder string, at time.Time) (catalog.CapCheck, retention.Policy, error) {
	chain, err := s.overrides.Chain(ctx, kind, reseller, domain, user)
	if err != nil {
		return catalog.CapCheck{}, retention.Policy{}, err
	}
	pol, err := retention.Resolve(s.preset, kind, chain)
	if err != nil {
		return catalog.CapCheck{}, retention.Policy{}, bus.Poison(err)
	}
	c := pol.Cap
	if c == nil {
		return catalog.CapCheck{}, pol, nil
	}
	check := catalog.CapCheck{Limit: c.Limit}
	switch c.Scope {
	case retention.PerAccountMonth:
		check.Mode, check.Key = catalog.MonthlyLimit, s.catalog.MonthKey(domain, string(kind), at)
	case retention.PerBox:
		check.Key = s.catalog.BoxKey(domain, user)
	case retention.PerUserFolder:
		check.Key = s.catalog.FolderKey(domain, user, folder)
	}
	if check.Mode == "" {
		check.Mode = catalog.RefuseAtLimit
		if c.Action == retention.EvictOldest {
			check.Mode = catalog.EvictOldest
			// Eviction is a deletion: never inside the minimum, never under a hold.
			held, err := s.holds.Covering(ctx, domain, user, "")
			if err != nil {
				return catalog.CapCheck{}, pol, err
			}
			if len(held) == 0 {
				check.EvictBefore = pol.MinimumCutoff(at)
			}
		}
	}
	return check, pol, nil
}

var messageKinds = map[eventv1.DataKind]retention.Kind{
	eventv1.DataKind_DATA_KIND_VOICEMAIL:    retention.Voicemail,
	eventv1.DataKind_DATA_KIND_FAX_RECEIVED: retention.FaxReceived,
	eventv1.DataKind_DATA_KIND_FAX_SENT:     retention.FaxSent,
	eventv1.DataKind_DATA_KIND_FAX_OUTBOX:   retention.FaxOutbox,
	eventv1.DataKind_DATA_KIND_SMS:          retention.SMS,
}

// apply admits one ingest event into the catalog and returns what
// happened. It changes Redis only: Rebuild replays through it.
func (s *Service) apply(ctx context.Context, env *eventv1.Envelope, seq uint64) (catalog.Outcome, retention.Kind, error) {
	t := env.GetTenant()
	at := env.GetAcceptedAt().AsTime()
	switch b := env.GetBody().(type) {
	case *eventv1.Envelope_Recording:
		r, err := recordingFromEvent(env, b.Recording, seq)
		if err != nil {
			return catalog.Outcome{}, "", bus.Poison(err)
		}
		kind := retention.RecordingAutomatic
		if r.Mode == "on_demand" {
			kind = retention.RecordingOnDemand
		}
		check, _, err := s.capFor(ctx, kind, r.Reseller, r.Domain, r.User, "", at)
		if err != nil {
			return catalog.Outcome{}, kind, err
		}
		out, err := s.catalog.AdmitRecordingCapped(ctx, r, check)
		return out, kind, err
	case *eventv1.Envelope_Message:
		m := b.Message
		kind, ok := messageKinds[m.GetKind()]
		switch {
		case !ok:
			return catalog.Outcome{}, "", bus.Poison(fmt.Errorf("message %s: kind %s is not a message kind", env.GetId(), m.GetKind()))
		case t.GetDomain() == "" || t.GetReseller() == "" || t.GetUser() == "":
			return catalog.Outcome{}, kind, bus.Poison(fmt.Errorf("message %s: reseller, domain and user are required", env.GetId()))
		case kind == retention.SMS && m.GetFolder() == eventv1.MessageFolder_MESSAGE_FOLDER_UNSPECIFIED:
			return catalog.Outcome{}, kind, bus.Poison(fmt.Errorf("message %s: an SMS needs a folder", env.GetId()))
		case m.GetReceivedAt() == nil:
			return catalog.Outcome{}, kind, bus.Poison(fmt.Errorf("message %s: no received_at", env.GetId()))
		}
		folder := ""
		if kind == retention.SMS {
			folder = strings.ToLower(strings.TrimPrefix(m.GetFolder().String(), "MESSAGE_FOLDER_"))
		}
		check, _, err := s.capFor(ctx, kind, t.GetReseller(), t.GetDomain(), t.GetUser(), folder, at)
		if err != nil {
			return catalog.Outcome{}, kind, err
		}
		out, err := s.catalog.AdmitMessage(ctx, catalog.Message{
			ID: env.GetId(), Reseller: t.GetReseller(), Domain: t.GetDomain(), User: t.GetUser(), Kind: string(kind), Folder: folder,
			ReceivedAt: m.GetReceivedAt().AsTime(), From: m.GetFrom(), To: m.GetTo(), Size: m.GetMedia().GetSizeBytes(),
			SHA256: m.GetMedia().GetSha256(), ObjectKey: m.GetMedia().GetKey(), ContentType: m.GetMedia().GetContentType(),
			AcceptedAt: at, StreamSeq: seq,
		}, check)
		return out, kind, err
	default:
		return catalog.Outcome{}, "", bus.Poison(fmt.Errorf("envelope %s: no admission rule for %T", env.GetId(), env.GetBody()))
	}
}

// Admit applies one ingest event and carries out what follows from it: a
// refused artifact's media is removed and the refusal recorded with its
// reason; an evicted artifact's media is removed and a tombstone written.
// Both are idempotent, so a redelivery repeats them harmlessly.
func (s *Service) Admit(ctx context.Context, env *eventv1.Envelope, seq uint64) error {
	out, kind, err := s.apply(ctx, env, seq)
	if err != nil {
		return err
	}
	status := "admitted"
	switch {
	case out.Duplicate:
		status = "duplicate"
	case out.Refused != "":
		status = "refused"
		if err := s.refuse(ctx, env, kind, out.Refused); err != nil {
			return err
		}
	case out.Evicted != nil:
		if err := s.evicted(ctx, env, kind, out.Evicted); err != nil {
			return err
		}
	}
	if out.Admitted {
		if err := s.checkThreshold(ctx, env, out.TotalBytes); err != nil {
			return err
		}
	}
	s.admitted.WithLabelValues(string(kind), status).Inc()
	return nil
}

func mediaKey(env *eventv1.Envelope) string {
	if k := env.GetRecording().GetMedia().GetKey(); k != "" {
		return k
	}
	return env.GetMessage().GetMedia().GetKey()
}

func (s *Service) refuse(ctx context.Context, env *eventv1.Envelope, kind retention.Kind, reason string) error {
	if key := mediaKey(env); key != "" {
		if err := s.d.CDS.Delete(ctx, key); err != nil {
			return fmt.Errorf("remove refused media %s: %w", key, err)
		}
	}
	ev := &eventv1.Envelope{
		Id: "refused-" + env.GetId(), AcceptedAt: timestamppb.Now(), Tenant: env.GetTenant(), Source: "policy",
		Body: &eventv1.Envelope_Refusal{Refusal: &eventv1.AdmissionRefused{
			ArtifactId: env.GetId(), Kind: kindProto(kind), Reason: reason,
			Detail: fmt.Sprintf("%s %s refused: %s", kind, env.GetId(), strings.ReplaceAll(reason, "_", " ")),
		}},
	}
	_, err := bus.PublishEnvelope(ctx, s.d.JS, s.d.Names.RefusalSubject(), ev.GetId(), ev)
	return err
}

func (s *Service) evicted(ctx context.Context, env *eventv1.Envelope, kind retention.Kind, e *catalog.Evicted) error {
	if e.ObjectKey != "" {
		if err := s.d.CDS.Delete(ctx, e.ObjectKey); err != nil {
			return fmt.Errorf("remove evicted media %s: %w", e.ObjectKey, err)
		}
	}
	ev := &eventv1.Envelope{
		Id: "deleted-" + e.ID, AcceptedAt: timestamppb.Now(), Tenant: env.GetTenant(), Source: "policy",
		Body: &eventv1.Envelope_Deletion{Deletion: &eventv1.ArtifactDeleted{
			ArtifactId: e.ID, Kind: kindProto(kind), Reason: "cap_evicted",
			Rule: fmt.Sprintf("%s folder cap: the oldest makes room for %s", kind, env.GetId()), Actor: "policy", FreedBytes: e.Size,
		}},
	}
	_, err := bus.PublishEnvelope(ctx, s.d.JS, s.d.Names.DeletionSubject(), ev.GetId(), ev)
	return err
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
	check, pol, err := s.capFor(ctx, kind, reseller, t.GetDomain(), t.GetUser(), f, time.Now())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	if check.Mode == catalog.NoCap {
		return &policyv1.CheckQuotaResponse{Allowed: true}, nil
	}
	used, err := s.catalog.Count(ctx, check.Mode, check.Key)
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
			if check.EvictBefore.IsZero() {
				out.Allowed, out.Reason = false, "folder_full_under_hold"
			}
		}
	}
	return out, nil
}
