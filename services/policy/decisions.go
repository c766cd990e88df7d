package policy

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/retention"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
)

// decision is a decision event and where it goes.
type decision struct {
	env     *eventv1.Envelope
	refused bool
}

func (d decision) subject(n bus.Names) string {
	if d.refused {
		return n.RefusalSubject()
	}
	return n.AdmittedSubject()
}

// decisionEvent is the event that records an admission or a refusal. Its
// id is derived from the artifact, so publishing it again is deduplicated.
func decisionEvent(in *eventv1.Envelope, a catalog.Artifact, kind retention.Kind, d catalog.Decision, seq uint64) decision {
	env := &eventv1.Envelope{
		ArtifactId: a.ID, AcceptedAt: timestamppb.Now(), Tenant: in.GetTenant(), Source: "policy", SchemaVersion: bus.SchemaVersion,
	}
	if d.State == catalog.StateRefused {
		env.Id, env.Type = "refused:"+a.Domain+"/"+a.ID, "artifact.refused"
		env.Body = &eventv1.Envelope_Refusal{Refusal: &eventv1.AdmissionRefused{
			ArtifactId: a.ID, Kind: kindProto(kind), Reason: d.Reason, IngestSequence: seq, IngestAcceptedAt: in.GetAcceptedAt(),
			Detail: fmt.Sprintf("%s %s refused: %s", kind, a.ID, strings.ReplaceAll(d.Reason, "_", " ")),
			Media:  mediaOf(in),
		}}
		return decision{env: env, refused: true}
	}
	env.Id, env.Type = "admitted:"+a.Domain+"/"+a.ID, "artifact.admitted"
	ad := &eventv1.ArtifactAdmitted{Kind: kindProto(kind), IngestSequence: seq, EvictedArtifactId: d.EvictedID, IngestAcceptedAt: in.GetAcceptedAt()}
	switch b := in.GetBody().(type) {
	case *eventv1.Envelope_Recording:
		ad.Artifact = &eventv1.ArtifactAdmitted_Recording{Recording: b.Recording}
	case *eventv1.Envelope_Message:
		ad.Artifact = &eventv1.ArtifactAdmitted_Message{Message: b.Message}
	}
	env.Body = &eventv1.Envelope_Admitted{Admitted: ad}
	return decision{env: env}
}

func mediaOf(env *eventv1.Envelope) *eventv1.MediaObject {
	if m := env.GetRecording().GetMedia(); m != nil {
		return m
	}
	return env.GetMessage().GetMedia()
}

// catalogKinds maps a catalog kind back to its data kind for tombstones.
func dataKindOf(rec catalog.Record) eventv1.DataKind {
	if rec.Kind == catalog.KindRecording {
		return eventv1.DataKind_DATA_KIND_RECORDING_AUTOMATIC
	}
	return kindProto(retention.Kind(rec.Kind))
}

// tombstone records a deletion. Its time is the deletion's, so a replay
// writes the same record.
func tombstone(reseller string, rec catalog.Record) *eventv1.Envelope {
	return &eventv1.Envelope{
		Id: "deleted:" + rec.Domain + "/" + rec.ID, ArtifactId: rec.ID, Type: "artifact.deleted", SchemaVersion: bus.SchemaVersion,
		AcceptedAt: timestamppb.New(rec.DeletedAt), Source: "policy",
		Tenant: &eventv1.Tenant{Reseller: reseller, Domain: rec.Domain, User: rec.User},
		Body: &eventv1.Envelope_Deletion{Deletion: &eventv1.ArtifactDeleted{
			ArtifactId: rec.ID, Kind: dataKindOf(rec), Reason: rec.Reason, Rule: rec.Rule, Actor: rec.Actor, FreedBytes: rec.Size,
			Media: &eventv1.MediaObject{Key: rec.ObjectKey, SizeBytes: rec.Size},
		}},
	}
}

// trackKey is the key a cap of kind counts: the month's counter for
// recordings, the box for voicemail and received faxes, the SMS folder.
func (s *Service) trackKey(kind retention.Kind, domain, user, folder string, at time.Time) string {
	switch kind {
	case retention.RecordingAutomatic, retention.RecordingOnDemand:
		return s.catalog.MonthKey(domain, string(kind), at)
	case retention.SMS:
		return s.catalog.FolderKey(domain, user, folder)
	default:
		return s.catalog.BoxKey(domain, user)
	}
}

// rebuildBatch is how many decisions one pipeline applies.
const rebuildBatch = 512

// RebuildCatalog applies the recorded decisions of the ingest stream in
// stream order: admissions, refusals and tombstones, as they happened.
// Nothing is decided again: caps, holds and overrides are not consulted,
// so the result is what the live consumers wrote, whatever today's policy
// says. Ingest events with no decision yet are left to the admission
// consumer, which has not acknowledged them.
func (s *Service) RebuildCatalog(ctx context.Context) (int, error) {
	var adm []catalog.Admission
	var ref []catalog.Refusal
	flush := func() error {
		if err := s.catalog.ApplyAdmissions(ctx, adm); err != nil {
			return err
		}
		if err := s.catalog.ApplyRefusals(ctx, ref); err != nil {
			return err
		}
		adm, ref = adm[:0], ref[:0]
		return nil
	}
	n, skipped, err := bus.Replay(ctx, s.d.JS, s.d.Names.IngestStream(), s.d.Names.DecisionSubjects(), func(ctx context.Context, env *eventv1.Envelope, _ uint64) error {
		switch b := env.GetBody().(type) {
		case *eventv1.Envelope_Admitted:
			in := &eventv1.Envelope{Id: bus.ArtifactID(env), AcceptedAt: b.Admitted.GetIngestAcceptedAt(), Tenant: env.GetTenant()}
			switch r := b.Admitted.GetArtifact().(type) {
			case *eventv1.ArtifactAdmitted_Recording:
				in.Body = &eventv1.Envelope_Recording{Recording: r.Recording}
			case *eventv1.ArtifactAdmitted_Message:
				in.Body = &eventv1.Envelope_Message{Message: r.Message}
			}
			a, _, err := s.artifactOf(in, b.Admitted.GetIngestSequence())
			if err != nil {
				return err
			}
			adm = append(adm, catalog.Admission{Artifact: a, EvictedID: b.Admitted.GetEvictedArtifactId()})
		case *eventv1.Envelope_Refusal:
			r := b.Refusal
			ref = append(ref, catalog.Refusal{
				Domain: env.GetTenant().GetDomain(), ID: r.GetArtifactId(), Kind: catalogKind(r.GetKind()), ObjectKey: r.GetMedia().GetKey(),
				Reason: r.GetReason(), Size: r.GetMedia().GetSizeBytes(), Seq: r.GetIngestSequence(), AcceptedAt: r.GetIngestAcceptedAt().AsTime(),
			})
		case *eventv1.Envelope_Deletion:
			if err := flush(); err != nil {
				return err
			}
			d := b.Deletion
			return s.catalog.ApplyDeleted(ctx, env.GetTenant().GetDomain(), d.GetArtifactId(), env.GetAcceptedAt().AsTime(), d.GetReason(), d.GetRule(), d.GetActor())
		}
		if len(adm)+len(ref) >= rebuildBatch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if skipped > 0 {
		s.log.Warn("rebuild skipped undecodable events", "count", skipped)
	}
	return n, err
}

// catalogKind is the catalog kind of a data kind.
func catalogKind(k eventv1.DataKind) string {
	switch k {
	case eventv1.DataKind_DATA_KIND_RECORDING_AUTOMATIC, eventv1.DataKind_DATA_KIND_RECORDING_ON_DEMAND:
		return catalog.KindRecording
	}
	return strings.ToLower(strings.TrimPrefix(k.String(), "DATA_KIND_"))
}
