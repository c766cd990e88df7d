package ingest

import "github.com/nats-io/nats.go/jetstream"

// WrapCdrJetStream puts wrap's JetStream between the CDR publisher and the
// context it publishes with, so that a test can inject faults into the
// real server's answers.
func WrapCdrJetStream(s *Service, wrap func(jetstream.JetStream) jetstream.JetStream) {
	s.cdrJS = wrap(s.cdrJS)
}
