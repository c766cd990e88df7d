package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callvault/callvault/pkg/bus"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
)

// EventTypeRecording is the type of the event ingest publishes for a
// stored recording.
const EventTypeRecording = "recording.stored"

// EventID is the id of the ingest event of an artifact, and its
// Nats-Msg-Id: every retry of one upload publishes the same id, so the
// stream stores the event once within the duplicate window. It names the
// domain, so another domain's upload of the same artifact id is never
// deduplicated against this one (admission refuses it instead, without
// telling it anything about the first).
func EventID(domain, artifactID string) string {
	return "stored:" + domain + "/" + artifactID
}

// Publish bounds how ingest retries a publish whose outcome is unknown.
type Publish struct {
	// Attempts is how many times one event is published before the upload
	// is answered 503 (retryable).
	Attempts int `env:"CALLVAULT_INGEST_PUBLISH_ATTEMPTS, default=4"`
	// Backoff is the wait before the second attempt; it doubles after.
	Backoff time.Duration `env:"CALLVAULT_INGEST_PUBLISH_BACKOFF, default=250ms"`
	// Timeout bounds one attempt.
	Timeout time.Duration `env:"CALLVAULT_INGEST_PUBLISH_TIMEOUT, default=5s"`
	// Budget bounds all attempts together.
	Budget time.Duration `env:"CALLVAULT_INGEST_PUBLISH_BUDGET, default=30s"`
}

func (p Publish) withDefaults() Publish {
	if p.Attempts < 1 {
		p.Attempts = 4
	}
	if p.Backoff <= 0 {
		p.Backoff = 250 * time.Millisecond
	}
	if p.Timeout <= 0 {
		p.Timeout = 5 * time.Second
	}
	if p.Budget <= 0 {
		p.Budget = 30 * time.Second
	}
	return p
}

// published is what the stream holds for an event after a publish.
type published struct {
	ack *jetstream.PubAck
	// ours: the stream's event for this id is the one just published (by
	// this attempt or by an earlier one whose acknowledgement was lost).
	ours bool
	// other is the stored event of another upload of the id, when ours is
	// false and it could be read; nil when it could not.
	other *eventv1.Envelope
}

// publishEvent publishes env with Nats-Msg-Id = its event id and retries
// a failed attempt with the same id, so an attempt the server stored but
// did not acknowledge is never stored twice. A duplicate answer is
// checked against the stored event: after a lost acknowledgement it is our
// own event. The returned error means the outcome is unknown.
func (s *Service) publishEvent(ctx context.Context, env *eventv1.Envelope) (published, error) {
	subject := s.names.RecordingSubject()
	wait := s.publish.Backoff
	ambiguous := false
	var last error
	for attempt := 0; attempt < s.publish.Attempts; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return published{}, fmt.Errorf("publish %s: %w (last attempt: %w)", env.GetId(), ctx.Err(), last)
			case <-t.C:
			}
			wait *= 2
		}
		actx, cancel := context.WithTimeout(ctx, s.publish.Timeout)
		ack, err := bus.PublishEnvelope(actx, s.js, subject, env.GetId(), env)
		cancel()
		if err != nil {
			last, ambiguous = err, true
			s.metrics.publishRetries.Inc()
			continue
		}
		if !ack.Duplicate {
			return published{ack: ack, ours: true}, nil
		}
		stored, err := s.storedEvent(ctx, ack.Sequence)
		if err != nil {
			if ambiguous {
				// It may be ours: keep the media and let the client retry.
				return published{}, fmt.Errorf("publish %s: read the stored event: %w", env.GetId(), err)
			}
			return published{ack: ack}, nil
		}
		if stored.GetRecording().GetMedia().GetKey() == env.GetRecording().GetMedia().GetKey() {
			return published{ack: ack, ours: true}, nil
		}
		return published{ack: ack, other: stored}, nil
	}
	return published{}, fmt.Errorf("publish %s: %d attempts: %w", env.GetId(), s.publish.Attempts, last)
}

// storedEvent reads the ingest event at seq.
func (s *Service) storedEvent(ctx context.Context, seq uint64) (*eventv1.Envelope, error) {
	if seq == 0 {
		return nil, errors.New("no sequence in the acknowledgement")
	}
	stream, err := s.js.Stream(ctx, s.names.IngestStream())
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", s.names.IngestStream(), err)
	}
	msg, err := stream.GetMsg(ctx, seq)
	if err != nil {
		return nil, fmt.Errorf("stream %s seq %d: %w", s.names.IngestStream(), seq, err)
	}
	return bus.DecodeEnvelope(msg.Data)
}
