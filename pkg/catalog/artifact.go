package catalog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// RecordingArtifact is a recording as admission decides on it. Recordings
// are tracked by a monthly counter per mode (the monthly recording cap).
func (c *Catalog) RecordingArtifact(r Recording) Artifact {
	return Artifact{
		ID: r.ID, Reseller: r.Reseller, Domain: r.Domain, User: r.User, CallID: r.CallID, Kind: KindRecording, Category: KindRecording,
		Score: r.StartedAt.UnixMilli(), Size: r.Size, ObjectKey: r.ObjectKey, Seq: r.StreamSeq, AcceptedAt: r.AcceptedAt,
		trackType: trackCounter, trackKey: c.MonthKey(r.Domain, "recording_"+r.Mode, r.AcceptedAt),
		rec: stored{
			State: StateAdmitted, ID: r.ID, Kind: KindRecording, Mode: r.Mode, At: r.StartedAt, Size: r.Size, User: r.User, CallID: r.CallID,
			SHA256: r.SHA256, ObjectKey: r.ObjectKey, AcceptedAt: r.AcceptedAt, Seq: r.StreamSeq, DurationS: r.DurationS, ContentType: r.ContentType,
		},
	}
}

// MessageArtifact is a voicemail, fax or SMS as admission decides on it.
// A user's box (voicemail and received faxes) and each SMS folder are
// tracked as sorted sets by time.
func (c *Catalog) MessageArtifact(m Message) Artifact {
	a := Artifact{
		ID: m.ID, Reseller: m.Reseller, Domain: m.Domain, User: m.User, Kind: m.Kind, Category: m.Category(),
		Score: m.ReceivedAt.UnixMilli(), Size: m.Size, ObjectKey: m.ObjectKey, Seq: m.StreamSeq, AcceptedAt: m.AcceptedAt,
		rec: stored{
			State: StateAdmitted, ID: m.ID, Kind: m.Kind, At: m.ReceivedAt, Size: m.Size, User: m.User, Folder: m.Folder,
			SHA256: m.SHA256, ObjectKey: m.ObjectKey, AcceptedAt: m.AcceptedAt, Seq: m.StreamSeq, From: m.From, To: m.To, ContentType: m.ContentType,
		},
	}
	switch {
	case m.Kind == "voicemail" || m.Kind == "fax_received":
		a.trackType, a.trackKey = trackSet, c.BoxKey(m.Domain, m.User)
	case m.Kind == "sms" && m.Folder != "":
		a.trackType, a.trackKey = trackSet, c.FolderKey(m.Domain, m.User, m.Folder)
	}
	return a
}

// Message is a voicemail, fax or SMS/MMS entry of the catalog.
type Message struct {
	ID          string
	Reseller    string
	Domain      string
	User        string
	Kind        string // voicemail, fax_received, fax_sent, fax_outbox, sms
	Folder      string // sms only: inbox, outbox, sent, deleted
	ReceivedAt  time.Time
	From, To    string
	Size        int64
	SHA256      string
	ObjectKey   string
	ContentType string
	AcceptedAt  time.Time
	StreamSeq   uint64
}

// Category is the usage category a message counts under.
func (m Message) Category() string {
	switch m.Kind {
	case "voicemail":
		return "voicemail"
	case "sms":
		return "messages"
	default:
		return "fax"
	}
}

// BoxKey is a user's mailbox: voicemails and received faxes by time
// (members: the ids' 8-byte hashes).
func (c *Catalog) BoxKey(domain, user string) string { return c.k.tag(domain) + "box:" + user }

// FolderKey is one SMS folder of a user, by time.
func (c *Catalog) FolderKey(domain, user, folder string) string {
	return c.k.tag(domain) + "sms:" + user + ":" + folder
}

// MonthKey counts admissions of a kind in the UTC month of t.
func (c *Catalog) MonthKey(domain, kind string, t time.Time) string {
	return c.k.tag(domain) + "month:" + t.UTC().Format("200601") + ":" + kind
}

// Count reads a cap's tracked count: a monthly counter or a set's size.
func (c *Catalog) Count(ctx context.Context, counter bool, key string) (int64, error) {
	if counter {
		n, err := c.rdb.Get(ctx, key).Int64()
		if errors.Is(err, redis.Nil) {
			return 0, nil
		}
		return n, err
	}
	return c.rdb.ZCard(ctx, key).Result()
}

// AddedSince sums the bytes admitted to a domain on the UTC days from
// since to today.
func (c *Catalog) AddedSince(ctx context.Context, domain string, since time.Time) (int64, error) {
	m, err := c.rdb.HGetAll(ctx, c.k.daily(domain)).Result()
	if err != nil {
		return 0, fmt.Errorf("catalog daily usage %s: %w", domain, err)
	}
	from := since.UTC().Format("20060102")
	var sum int64
	for day, v := range m {
		if day >= from {
			n, _ := strconv.ParseInt(v, 10, 64)
			sum += n
		}
	}
	return sum, nil
}
