package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DeadLetter is one message of the dead-letter stream.
type DeadLetter struct {
	Sequence       uint64    `json:"sequence"`
	Time           time.Time `json:"time"`
	Consumer       string    `json:"consumer"`
	Reason         string    `json:"reason"`
	SourceStream   string    `json:"source_stream"`
	SourceSubject  string    `json:"source_subject"`
	SourceSequence string    `json:"source_sequence"`
	Attempts       string    `json:"attempts"`
	Size           int       `json:"size_bytes"`
}

// ListDeadLetters returns up to limit dead letters starting at sequence from.
func ListDeadLetters(ctx context.Context, js jetstream.JetStream, n Names, from uint64, limit int) ([]DeadLetter, error) {
	stream, err := js.Stream(ctx, n.DeadLetterStream())
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	if from < info.State.FirstSeq {
		from = info.State.FirstSeq
	}
	var out []DeadLetter
	for seq := from; seq <= info.State.LastSeq && len(out) < limit; seq++ {
		raw, err := stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("dead letter %d: %w", seq, err)
		}
		out = append(out, DeadLetter{
			Sequence:       raw.Sequence,
			Time:           raw.Time,
			Consumer:       raw.Header.Get(HeaderDeadConsumer),
			Reason:         raw.Header.Get(HeaderDeadReason),
			SourceStream:   raw.Header.Get(HeaderDeadStream),
			SourceSubject:  raw.Header.Get(HeaderDeadSubject),
			SourceSequence: raw.Header.Get(HeaderDeadSequence),
			Attempts:       raw.Header.Get(HeaderDeadAttempts),
			Size:           len(raw.Data),
		})
	}
	return out, nil
}

// PublishDeadLetter writes a dead letter for work that left its stream
// before it proved poison (a job a consumer kept aside): the message data,
// the reason, and where it came from (stream, subject, sequence), as the
// consumer's own dead letters carry. msgID (the Nats-Msg-Id) makes a
// repeat of the same dead letter a duplicate the stream drops.
func PublishDeadLetter(ctx context.Context, js jetstream.JetStream, names Names, consumer, stream, subject string, seq uint64, data []byte, reason, msgID string) error {
	dl := &nats.Msg{Subject: names.DeadLetterSubject(consumer), Data: data, Header: nats.Header{}}
	dl.Header.Set(HeaderDeadReason, reason)
	dl.Header.Set(HeaderDeadStream, stream)
	dl.Header.Set(HeaderDeadSubject, subject)
	dl.Header.Set(HeaderDeadConsumer, consumer)
	dl.Header.Set(HeaderDeadSequence, strconv.FormatUint(seq, 10))
	dl.Header.Set(HeaderDeadAttempts, "1")
	ctx, cancel := context.WithTimeout(ctx, DeadLetterTimeout)
	defer cancel()
	if _, err := js.PublishMsg(ctx, dl, jetstream.WithMsgID(msgID)); err != nil {
		return fmt.Errorf("dead letter: %w", err)
	}
	return nil
}
