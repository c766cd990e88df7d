package bus

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamConfigs returns the configuration of every callvault stream. The
// ingest and config streams keep everything (limits retention with no age):
// they are the log that all derived state is rebuilt from. No stream allows
// a purge or the deletion of a message: nothing in callvault removes stream
// messages (deletions are tombstone events), so a client that could would
// only be able to erase the record Redis is rebuilt from. The server never
// lets these flags be cleared again once set.
func StreamConfigs(n Names, o StreamOptions) []jetstream.StreamConfig {
	if o.Replicas < 1 {
		o.Replicas = 1
	}
	if o.CdrMaxBytes <= 0 {
		o.CdrMaxBytes = DefaultCdrMaxBytes
	}
	return []jetstream.StreamConfig{
		{
			Name:        n.IngestStream(),
			Description: "artifacts accepted from PBXs: recordings, CDRs, messages",
			Subjects:    []string{n.IngestSubjects()},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    o.Replicas,
			Duplicates:  o.DuplicateWindow,
			Discard:     jetstream.DiscardOld,
			DenyDelete:  true,
			DenyPurge:   true,
		},
		{
			Name:        n.ConfigStream(),
			Description: "configuration changes: tokens, policies, holds, storage configurations",
			Subjects:    []string{n.ConfigSubjects()},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    o.Replicas,
			Duplicates:  o.DuplicateWindow,
			DenyDelete:  true,
			DenyPurge:   true,
		},
		{
			Name:        n.CdrStream(),
			Description: "CDRs waiting for the segment writer; each leaves once it is in a durable, indexed segment",
			Subjects:    []string{n.CdrSubjects()},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    o.Replicas,
			Duplicates:  o.DuplicateWindow,
			MaxBytes:    o.CdrMaxBytes,
			Discard:     jetstream.DiscardNew,
			DenyDelete:  true,
			DenyPurge:   true,
		},
		{
			Name:        n.DeadLetterStream(),
			Description: "messages a consumer could not process, with the reason",
			Subjects:    []string{n.DeadLetterSubjects()},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    o.Replicas,
			DenyDelete:  true,
			DenyPurge:   true,
		},
	}
}

// DefaultCdrMaxBytes bounds the CDR stream when nothing else is set.
const DefaultCdrMaxBytes = 1 << 30

// EnsureStreams creates or updates every stream.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, n Names, o StreamOptions) error {
	for _, cfg := range StreamConfigs(n, o) {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}
