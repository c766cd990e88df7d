package bus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
)

// PublishEnvelope publishes env on subject with Nats-Msg-Id = msgID and
// waits for the stream's acknowledgement. The caller may answer its own
// client only after this returns without error. opts add expectations,
// such as jetstream.WithExpectLastSequencePerSubject.
func PublishEnvelope(ctx context.Context, js jetstream.JetStream, subject, msgID string, env *eventv1.Envelope, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	msg, err := EnvelopeMsg(subject, env)
	if err != nil {
		return nil, err
	}
	ack, err := js.PublishMsg(ctx, msg, append([]jetstream.PublishOpt{jetstream.WithMsgID(msgID)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("publish %s: %w", subject, err)
	}
	return ack, nil
}

// EnvelopeContentType is the Content-Type header of every event message.
const EnvelopeContentType = "application/x-protobuf; messageType=callvault.event.v1.Envelope"

// EnvelopeMsg is env as a message on subject, ready for a synchronous or
// an asynchronous publish.
func EnvelopeMsg(subject string, env *eventv1.Envelope) (*nats.Msg, error) {
	data, err := proto.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("publish %s: marshal: %w", subject, err)
	}
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	msg.Header.Set("Content-Type", EnvelopeContentType)
	return msg, nil
}

// IsWrongLastSequence reports whether a publish was refused because its
// subject already holds a message it expected not to be there: the
// compare-and-set of WithExpectLastSequencePerSubject lost.
func IsWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// DecodeEnvelope parses a message body. A failure is poison: the same bytes
// will never parse.
func DecodeEnvelope(data []byte) (*eventv1.Envelope, error) {
	env := &eventv1.Envelope{}
	if err := proto.Unmarshal(data, env); err != nil {
		return nil, Poison(fmt.Errorf("decode envelope: %w", err))
	}
	if env.GetId() == "" {
		return nil, Poison(fmt.Errorf("decode envelope: no id"))
	}
	return env, nil
}

// ArtifactID is the artifact an event is about: artifact_id, or the
// event's id for schema version 1 events, which used one id for both.
func ArtifactID(env *eventv1.Envelope) string {
	if id := env.GetArtifactId(); id != "" {
		return id
	}
	return env.GetId()
}

// SchemaVersion is the envelope schema this code writes.
const SchemaVersion = 2
