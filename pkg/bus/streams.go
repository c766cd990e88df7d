package bus

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamConfigs returns the configuration of every callvault stream. The
// ingest and config streams keep everything (limits retention with no age):
// they are the log that all derived state is rebuilt from.
func StreamConfigs(n Names, o StreamOptions) []jetstream.StreamConfig {
	if o.Replicas < 1 {
		o.Replicas = 1
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
		},
		{
			Name:        n.ConfigStream(),
			Description: "configuration changes: tokens, policies, holds, storage configurations",
			Subjects:    []string{n.ConfigSubjects()},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    o.Replicas,
			Duplicates:  o.DuplicateWindow,
		},
		{
			Name:        n.DeadLetterStream(),
			Description: "messages a consumer could not process, with the reason",
			Subjects:    []string{n.DeadLetterSubjects()},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    o.Replicas,
		},
	}
}

// EnsureStreams creates or updates every stream.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, n Names, o StreamOptions) error {
	for _, cfg := range StreamConfigs(n, o) {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}
