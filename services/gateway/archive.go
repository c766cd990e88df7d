package gateway

import (
	"context"
	"io"
	"time"

	"github.com/callvault/callvault/pkg/auth"
	routerv1 "github.com/callvault/callvault/proto/callvault/router/v1"
)

// Archive is what the gateway asks the archive router, which owns the
// archive records: where each recording is archived, and its bytes when
// the central copy is gone. nil (a gateway without a router) shows no
// archive state and plays only central copies.
type Archive interface {
	ArchiveStates(ctx context.Context, p auth.Principal, domain string, ids []string) ([]*routerv1.ArchiveState, error)
	OpenArchived(ctx context.Context, p auth.Principal, domain, id string, offset, length int64) (io.ReadCloser, error)
}

// SetArchive connects the gateway to the archive router.
func (s *Service) SetArchive(a Archive) { s.archive = a }

// archiveJSON is a recording's archive state in the REST answers.
type archiveJSON struct {
	// "archived", "pending", "not_archived" or "unknown" (the router did
	// not answer).
	State      string `json:"state"`
	ConfigID   string `json:"config_id,omitempty"`
	ConfigName string `json:"config_name,omitempty"`
	Location   string `json:"location,omitempty"`
	ArchivedAt string `json:"archived_at,omitempty"`
	Reason     string `json:"reason,omitempty"`
	Encrypted  bool   `json:"encrypted,omitempty"`
}

// archiveStates asks the router for the states of one domain's
// recordings; a router that does not answer yields "unknown", never a
// failed listing.
func (s *Service) archiveStates(ctx context.Context, p auth.Principal, domain string, ids []string) map[string]*archiveJSON {
	if s.archive == nil || len(ids) == 0 {
		return nil
	}
	out := make(map[string]*archiveJSON, len(ids))
	states, err := s.archive.ArchiveStates(ctx, p, domain, ids)
	if err != nil {
		s.log.Warn("archive states unavailable", "domain", domain, "err", err)
		for _, id := range ids {
			out[id] = &archiveJSON{State: "unknown", Reason: "the archive router did not answer"}
		}
		return out
	}
	for _, st := range states {
		a := &archiveJSON{State: st.GetState(), ConfigID: st.GetConfigId(), ConfigName: st.GetConfigName(), Location: st.GetLocation(),
			Reason: st.GetReason(), Encrypted: st.GetEncrypted()}
		if st.GetArchivedAt() != nil {
			a.ArchivedAt = st.GetArchivedAt().AsTime().UTC().Format(time.RFC3339Nano)
		}
		out[st.GetArtifactId()] = a
	}
	return out
}
