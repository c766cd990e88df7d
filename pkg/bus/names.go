// Package bus is callvault's use of NATS JetStream: stream and subject
// names, stream setup, publishing with a business-key Nats-Msg-Id, pull
// consumers with explicit acks, and the dead-letter stream.
package bus

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Names derives every stream and subject from one namespace so that tests
// (and several installations on one NATS) never see each other's data.
type Names struct {
	ns string
}

var nsRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

// NewNames validates ns ("cv" by default in every service).
func NewNames(ns string) (Names, error) {
	if !nsRE.MatchString(ns) {
		return Names{}, fmt.Errorf("namespace %q: must match %s", ns, nsRE)
	}
	return Names{ns: ns}, nil
}

// Namespace returns the namespace.
func (n Names) Namespace() string { return n.ns }

// IngestStream holds every artifact event accepted from PBXs.
func (n Names) IngestStream() string { return strings.ToUpper(n.ns) + "_INGEST" }

// ConfigStream holds configuration events: tokens, policies, holds, storage
// configurations.
func (n Names) ConfigStream() string { return strings.ToUpper(n.ns) + "_CONFIG" }

// CdrStream holds CDRs between ingest and the segment writer. Unlike the
// ingest stream it is a work queue: a CDR leaves it when the writer acks
// it, which it does only once the CDR is in a segment that is durable in
// the CDS and recorded in the partition index. The segments, not the
// stream, are the CDRs' record.
func (n Names) CdrStream() string { return strings.ToUpper(n.ns) + "_CDR" }

// CdrSubject is where ingest publishes accepted CDRs.
func (n Names) CdrSubject() string { return n.ns + ".cdr.recorded" }

// CdrSubjects matches every subject of the CDR stream.
func (n Names) CdrSubjects() string { return n.ns + ".cdr.>" }

// DeadLetterStream holds messages no consumer could process, with the reason.
func (n Names) DeadLetterStream() string { return strings.ToUpper(n.ns) + "_DLQ" }

// RecordingSubject is where ingest publishes stored recordings.
func (n Names) RecordingSubject() string { return n.ns + ".ingest.recording" }

// MessageSubject is where voicemails, faxes and SMS/MMS are published.
func (n Names) MessageSubject() string { return n.ns + ".ingest.message" }

// RefusalSubject records artifacts admission refused, with the reason.
func (n Names) RefusalSubject() string { return n.ns + ".ingest.refused" }

// DeletionSubject records every deletion (tombstones).
func (n Names) DeletionSubject() string { return n.ns + ".ingest.deleted" }

// UsageSubject carries usage alerts (the 95 % threshold).
func (n Names) UsageSubject() string { return n.ns + ".ingest.usage" }

// IngestSubjects matches every subject of the ingest stream.
// AdmittedSubject carries the policy service's admission decisions: what
// the archive router and the culler consume, beside refused and deleted.
func (n Names) AdmittedSubject() string { return n.ns + ".ingest.admitted" }

// ArchivedSubject carries the archive router's records of where each
// admitted artifact was archived (or why it was not).
func (n Names) ArchivedSubject() string { return n.ns + ".ingest.archived" }

// DecisionSubjects are the subjects of recorded decisions, the ones a
// rebuild applies: admissions, refusals and tombstones.
func (n Names) DecisionSubjects() []string {
	return []string{n.AdmittedSubject(), n.RefusalSubject(), n.DeletionSubject()}
}

func (n Names) IngestSubjects() string { return n.ns + ".ingest.>" }

// TokenSubject carries token issue and revoke events.
func (n Names) TokenSubject() string { return n.ns + ".config.token" }

// HoldSubject carries legal hold placements and releases.
func (n Names) HoldSubject() string { return n.ns + ".config.hold" }

// PolicySubject carries retention override changes.
func (n Names) PolicySubject() string { return n.ns + ".config.policy" }

// ArchiveConfigSubject carries remote storage configuration changes.
func (n Names) ArchiveConfigSubject() string { return n.ns + ".config.archive" }

// DomainSubject carries the provisioning of one domain. One subject per
// domain lets a publish expect the subject to be empty, so the stream
// itself admits only the first provisioning of a domain. Domain names are
// validated DNS names: dots make extra tokens, never wildcards.
func (n Names) DomainSubject(domain string) string { return n.ns + ".config.domain." + domain }

// DomainSubjects matches every provisioning event.
func (n Names) DomainSubjects() string { return n.ns + ".config.domain.>" }

// ConfigSubjects matches every subject of the config stream.
func (n Names) ConfigSubjects() string { return n.ns + ".config.>" }

// DeadLetterSubject is where a consumer's poison messages go.
func (n Names) DeadLetterSubject(consumer string) string { return n.ns + ".dlq." + consumer }

// DeadLetterSubjects matches every dead-letter subject.
func (n Names) DeadLetterSubjects() string { return n.ns + ".dlq.>" }

// StreamOptions are the deployment choices for stream storage.
type StreamOptions struct {
	// Replicas is 1 embedded and 3 in a cluster.
	Replicas int
	// DuplicateWindow bounds how long the server remembers Nats-Msg-Ids;
	// consumers dedupe by artifact id beyond it.
	DuplicateWindow time.Duration
	// CdrMaxBytes bounds the CDRs waiting for the segment writer; when it
	// is reached new CDRs are refused (ingest answers 503), never old ones
	// dropped. 0 means 8 GiB.
	CdrMaxBytes int64
}

// AppliedKey is the Redis hash recording the last stream sequence applied
// to Redis, per stream. Its absence means Redis holds no current callvault
// state (emptied, or being rebuilt): nothing is answered from it then.
func AppliedKey(ns string) string { return ns + ":applied" }

// CatalogLayout names the catalog's key layout; the applied hash records
// it (field AppliedLayoutField) when the marks are written. A Redis whose
// marks name another layout (or none: an earlier version's) is answered
// from no more than an emptied one.
const (
	CatalogLayout      = "packed-1"
	AppliedLayoutField = "layout"
)
