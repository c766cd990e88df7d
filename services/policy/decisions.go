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
			ArtifactTime: timestamppb.New(time.UnixMilli(a.Score).UTC()),
			Detail:       fmt.Sprintf("%s %s refused: %s", kind, a.ID, strings.ReplaceAll(d.Reason, "_", " ")),
			Media:        mediaOf(in),
		}}
		return decision{env: env, refused: true}
	}
	env.Id, env.Type = "admitted:"+a.Domain+"/"+a.ID, "artifact.admitted"
	ad := &eventv1.ArtifactAdmitted{Kind: kindProto(kind), IngestSequence: seq, EvictedArtifactId: d.EvictedID, IngestAcceptedAt: in.GetAcceptedAt(),
		CallIndexLevel: uint32(d.CallLevel)}
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

// rebuildBatch is how many decisions one batch of the build writes: large
// enough that its index entries add up per key (about forty admissions
// per domain with 200 domains), small enough to keep a pipeline short.
const rebuildBatch = 8192

// RebuildCatalog empties the catalog (catalog.Wipe: records, indexes,
// refusals, usage, counters and claims; config stays) and writes the
// recorded decisions of the ingest stream into it in stream order:
// admissions, refusals and tombstones, as they happened. Nothing is
// decided again: caps, holds and overrides are not consulted, so the
// result is what the live consumers wrote, whatever today's policy says
// and whatever stale state Redis held. Ingest events with no decision yet
// are left to the admission consumer, which has not acknowledged them.
//
// Reading and writing overlap: while one batch is written to Redis, the
// next is read and decoded. Batches are written one at a time, in order.
func (s *Service) RebuildCatalog(ctx context.Context) (int, error) {
	if _, err := s.catalog.Wipe(ctx); err != nil {
		return 0, err
	}
	w := s.startRebuildWriter(ctx)
	batch := w.buffer()
	n, skipped, err := bus.Replay(ctx, s.d.JS, s.d.Names.IngestStream(), s.d.Names.DecisionSubjects(), func(ctx context.Context, env *eventv1.Envelope, _ uint64) error {
		r, ok, err := s.recordedOf(env)
		if err != nil || !ok {
			return err
		}
		batch = append(batch, r)
		if len(batch) < rebuildBatch {
			return nil
		}
		if err := w.send(batch); err != nil {
			return err
		}
		batch = w.buffer()
		return nil
	})
	if err == nil {
		err = w.send(batch)
	}
	if werr := w.wait(err != nil); err == nil {
		err = werr
	}
	if skipped > 0 {
		s.log.Warn("rebuild skipped undecodable events", "count", skipped)
	}
	return n, err
}

// recordedOf is the catalog's form of a decision event; ok is false for
// an event that records no decision.
func (s *Service) recordedOf(env *eventv1.Envelope) (catalog.Recorded, bool, error) {
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
			return catalog.Recorded{}, false, err
		}
		return catalog.Recorded{Op: catalog.OpAdmission, Admission: catalog.Admission{
			Artifact: a, EvictedID: b.Admitted.GetEvictedArtifactId(), CallLevel: int(b.Admitted.GetCallIndexLevel()),
		}}, true, nil
	case *eventv1.Envelope_Refusal:
		r := b.Refusal
		return catalog.Recorded{Op: catalog.OpRefusal, Refusal: catalog.Refusal{
			Domain: env.GetTenant().GetDomain(), ID: r.GetArtifactId(), Kind: catalogKind(r.GetKind()), ObjectKey: r.GetMedia().GetKey(),
			Reason: r.GetReason(), Size: r.GetMedia().GetSizeBytes(), Seq: r.GetIngestSequence(), AcceptedAt: r.GetIngestAcceptedAt().AsTime(),
			At: artifactTime(r),
		}}, true, nil
	case *eventv1.Envelope_Deletion:
		d := b.Deletion
		return catalog.Recorded{Op: catalog.OpDeletion, Deletion: catalog.Deletion{
			Domain: env.GetTenant().GetDomain(), ID: d.GetArtifactId(), At: env.GetAcceptedAt().AsTime(),
			Reason: d.GetReason(), Rule: d.GetRule(), Actor: d.GetActor(),
		}}, true, nil
	}
	return catalog.Recorded{}, false, nil
}

// artifactTime is a refused artifact's own time; refusals recorded before
// the event carried it have none.
func artifactTime(r *eventv1.AdmissionRefused) time.Time {
	if r.GetArtifactTime() == nil {
		return time.Time{}
	}
	return r.GetArtifactTime().AsTime()
}

// rebuildWriter writes batches of recorded decisions in order on a
// goroutine of its own, through a catalog.Builder, so that the replay
// reads on meanwhile.
type rebuildWriter struct {
	batches chan []catalog.Recorded
	free    chan []catalog.Recorded
	done    chan struct{}
	cancel  context.CancelFunc
	err     error
}

func (s *Service) startRebuildWriter(ctx context.Context) *rebuildWriter {
	ctx, cancel := context.WithCancel(ctx)
	w := &rebuildWriter{
		batches: make(chan []catalog.Recorded, 1), free: make(chan []catalog.Recorded, 3),
		done: make(chan struct{}), cancel: cancel,
	}
	go func() {
		defer close(w.done)
		b, err := s.catalog.NewBuilder(ctx)
		if err != nil {
			w.err = err
			return
		}
		for batch := range w.batches {
			if err := b.Add(batch); err != nil {
				break
			}
			select {
			case w.free <- batch[:0]:
			default:
			}
		}
		w.err = b.Close()
	}()
	return w
}

// buffer returns an empty batch, reusing one already written.
func (w *rebuildWriter) buffer() []catalog.Recorded {
	select {
	case b := <-w.free:
		return b
	default:
		return make([]catalog.Recorded, 0, rebuildBatch)
	}
}

// send queues a batch; it fails once a batch could not be written.
func (w *rebuildWriter) send(b []catalog.Recorded) error {
	if len(b) == 0 {
		return nil
	}
	select {
	case w.batches <- b:
		return nil
	case <-w.done:
		return w.err
	}
}

// wait returns once every queued batch is written (or, with abandon, once
// the one being written is), with the first write error.
func (w *rebuildWriter) wait(abandon bool) error {
	if abandon {
		w.cancel()
	}
	close(w.batches)
	<-w.done
	w.cancel()
	return w.err
}

// catalogKind is the catalog kind of a data kind.
func catalogKind(k eventv1.DataKind) string {
	switch k {
	case eventv1.DataKind_DATA_KIND_RECORDING_AUTOMATIC, eventv1.DataKind_DATA_KIND_RECORDING_ON_DEMAND:
		return catalog.KindRecording
	}
	return strings.ToLower(strings.TrimPrefix(k.String(), "DATA_KIND_"))
}
