package catalog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// DeleteRequest asks the deletion gate to delete one artifact.
type DeleteRequest struct {
	Domain, ID string
	// MinimumEnds is when the artifact's guaranteed minimum storage
	// duration ends, under the policy in force now. The zero time marks an
	// explicit deletion (an admin's, or an extension's cascade), which the
	// brief lets through inside the minimum; holds still stop it.
	MinimumEnds time.Time
	// Now is the time of the decision: deletion is refused while Now is
	// before MinimumEnds.
	Now                 time.Time
	Reason, Rule, Actor string
}

// DeleteOutcome says what the gate decided.
type DeleteOutcome string

const (
	Deleted        DeleteOutcome = "deleted"
	AlreadyDeleted DeleteOutcome = "already_deleted" // a repeat: the recorded deletion stands
	Absent         DeleteOutcome = "absent"          // never admitted here: nothing to delete
	Held           DeleteOutcome = "held"            // a legal hold covers it
	WithinMinimum  DeleteOutcome = "within_minimum"  // its guaranteed minimum has not ended
)

// DeleteResult is the gate's answer.
type DeleteResult struct {
	Outcome DeleteOutcome
	// HoldID names the hold that stopped the deletion.
	HoldID string
	// Record is the artifact's record after the decision (for a deletion:
	// its pending effects, media key and size).
	Record Record
}

// gateScript checks holds and the minimum and removes the artifact in one
// atomic step, marking its record deleted with the effects still owed.
// KEYS: 1 bucket, 2 holds, 3 user index, 4 call bucket, 5 usage, 6 track.
// ARGV: 1 field, 2 encoded id, 3 minimum ends (ms, ” for explicit), 4 now
// (ms), 5 reason, 6 rule, 7 actor, 8 check ('1' decides; '0' applies a
// recorded tombstone), 9 pending, 10 category, 11 track type, 12 call
// field, 13 hour.
const gateScript = recLua + indexLua + `
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return {'absent'} end
local t = up(raw)
if t[2] ~= ARGV[2] then return {'absent'} end
local st = string.sub(t[1], 1, 1)
if st == 'd' then return {'already_deleted'} end
if st == 'r' then return {'absent'} end
if ARGV[8] == '1' then
  local h = held(KEYS[2], t[6], callOf(t))
  if h then return {'held', h} end
  if ARGV[3] ~= '' and tonumber(ARGV[4]) < tonumber(ARGV[3]) then return {'within_minimum'} end
  if string.find(t[1], 'P', 2, true) then return {'publish_pending'} end
end
unindex(t, ARGV[1], KEYS[3], KEYS[4], ARGV[12], ARGV[13], KEYS[5], KEYS[6], ARGV[11], ARGV[10])
redis.call('HSET', KEYS[1], ARGV[1], markDeleted(t, ARGV[9], ARGV[5], ARGV[6], ARGV[7], ARGV[4]))
return {'deleted'}
`

// Delete is the deletion gate: it deletes the artifact only if no legal
// hold covers it and its minimum has ended (or the deletion is explicit),
// checked in the same atomic step as the removal. The record is marked
// deleted with the effects still owed (remove the media, then publish the
// tombstone); the caller carries them out and confirms each with Done.
// Deleting again returns AlreadyDeleted with the record, so a retry
// finishes the same effects; an unknown artifact is Absent (success).
func (c *Catalog) Delete(ctx context.Context, req DeleteRequest) (DeleteResult, error) {
	minEnds := ""
	if !req.MinimumEnds.IsZero() {
		minEnds = strconv.FormatInt(req.MinimumEnds.UnixMilli(), 10)
	}
	return c.gate(ctx, req.Domain, req.ID, true, pendingDeleted, minEnds, req.Now, req.Reason, req.Rule, req.Actor)
}

// ApplyDeleted applies a recorded tombstone (replay): no checks, nothing
// owed.
func (c *Catalog) ApplyDeleted(ctx context.Context, domain, id string, at time.Time, reason, rule, actor string) error {
	_, err := c.gate(ctx, domain, id, false, "", "", at, reason, rule, actor)
	return err
}

func (c *Catalog) gate(ctx context.Context, domain, id string, check bool, pending, minEnds string, now time.Time, reason, rule, actor string) (DeleteResult, error) {
	st, key, err := c.find(ctx, domain, id)
	if errors.Is(err, ErrNoRecord) {
		return DeleteResult{Outcome: Absent}, nil
	}
	if err != nil {
		return DeleteResult{}, err
	}
	reseller, _, err := c.DomainOwner(ctx, domain)
	if err != nil {
		return DeleteResult{}, err
	}
	rec := st.record(domain, reseller)
	switch {
	case st.State == StateDeleted:
		return DeleteResult{Outcome: AlreadyDeleted, Record: rec}, nil
	case st.State == StateRefused || key == c.k.refused(domain):
		return DeleteResult{Outcome: Absent, Record: rec}, nil
	}
	g := c.gateOf(domain, st)
	res, err := c.gateS.Run(ctx, c.rdb, g.keys, g.field, encodeID(id), minEnds, now.UnixMilli(), reason, rule, actor, flag(check), pending,
		g.category, g.trackType, g.ch, g.hour).StringSlice()
	if err != nil {
		return DeleteResult{}, fmt.Errorf("catalog delete %s: %w", id, err)
	}
	switch DeleteOutcome(res[0]) {
	case "publish_pending":
		return DeleteResult{}, fmt.Errorf("catalog delete %s: %w", id, ErrPublishPending)
	case Held:
		return DeleteResult{Outcome: Held, HoldID: res[1], Record: rec}, nil
	case Deleted:
		// The record as the script wrote it (markDeleted), without
		// reading it back.
		rec.State, rec.Pending, rec.Reason, rec.Rule, rec.Actor = StateDeleted, pending, reason, rule, actor
		rec.DeletedAt = time.UnixMilli(now.UnixMilli()).UTC()
		return DeleteResult{Outcome: Deleted, Record: rec}, nil
	case AlreadyDeleted:
		// Deleted meanwhile by another caller: its record says what is owed.
		rec, err = c.Record(ctx, domain, id)
		if err != nil {
			return DeleteResult{}, err
		}
		return DeleteResult{Outcome: AlreadyDeleted, Record: rec}, nil
	default:
		return DeleteResult{Outcome: DeleteOutcome(res[0]), Record: rec}, nil
	}
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// gated is what the gate script is given for one record: the keys its
// deletion touches and the arguments that name its entries.
type gated struct {
	keys                       []string
	field, category, trackType string
	ch, hour                   string
}

// gateOf derives them from a stored record: its bucket, user index, call
// entry, usage and cap-tracking set. Every one follows from fields that
// never change once the record is written.
func (c *Catalog) gateOf(domain string, s stored) gated {
	a := Artifact{ID: s.ID, Domain: domain, User: s.User, Kind: s.Kind, Score: s.At.UnixMilli()}
	if s.Kind == KindRecording {
		a.CallID = s.CallID
	}
	if s.Kind != KindRecording {
		a = c.MessageArtifact(Message{ID: s.ID, Domain: domain, User: s.User, Kind: s.Kind, Folder: s.Folder, ReceivedAt: s.At})
	} else {
		a.Category = KindRecording
	}
	return c.gateOfArtifact(a, s.Level, a.Category)
}

// gateOfArtifact is gateOf for an artifact being admitted: what its
// deletion touches once it is written.
func (c *Catalog) gateOfArtifact(a Artifact, level int, category string) gated {
	p := c.place(a, level)
	track, trackType := c.k.absent(a.Domain), ""
	if a.trackType == trackSet {
		track, trackType = a.trackKey, trackSet
	}
	return gated{
		keys:  []string{p.bucket, c.k.holds(a.Domain), p.uidx, p.callKey, c.k.usage(a.Domain), track},
		field: p.field, category: category, trackType: trackType, ch: p.ch, hour: strconv.FormatInt(p.hour, 10),
	}
}
