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
// KEYS: 1 art, 2 holds, 3 idx, 4 uidx, 5 call, 6 usage, 7 track.
// ARGV: 1 id, 2 minimum ends (ms, ” for explicit), 3 now (ms), 4 reason,
// 5 rule, 6 actor, 7 kind, 8 user, 9 call, 10 track type, 11 check ('1'
// decides; '0' applies a recorded tombstone), 12 pending, 13 category.
const gateScript = heldLua + removeLua + `
if redis.call('EXISTS', KEYS[1]) == 0 then return {'absent'} end
local f = redis.call('HMGET', KEYS[1], 'st', 'kind', 'user', 'call_id', 'size', 'pe')
local st = f[1] or 'a'
if st == 'd' then return {'already_deleted'} end
if st == 'r' then return {'absent'} end
if (f[2] or '') ~= ARGV[7] or (f[3] or '') ~= ARGV[8] or (f[4] or '') ~= ARGV[9] then return {'moved'} end
if ARGV[11] == '1' then
  local h = held(KEYS[2], ARGV[8], ARGV[9])
  if h then return {'held', h} end
  if ARGV[2] ~= '' and tonumber(ARGV[3]) < tonumber(ARGV[2]) then return {'within_minimum'} end
  if string.find(f[6] or '', 'P', 1, true) then return {'publish_pending'} end
end
remove(KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], ARGV[10], ARGV[1], tonumber(f[5] or '0'), ARGV[13])
redis.call('HSET', KEYS[1], 'st', 'd', 'rs', ARGV[4], 'ru', ARGV[5], 'ac', ARGV[6], 'dt', ARGV[3])
if ARGV[12] ~= '' then redis.call('HSET', KEYS[1], 'pe', ARGV[12]) else redis.call('HDEL', KEYS[1], 'pe') end
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
	for attempt := 0; attempt < 4; attempt++ {
		rec, err := c.Record(ctx, domain, id)
		if errors.Is(err, ErrNoRecord) {
			return DeleteResult{Outcome: Absent}, nil
		}
		if err != nil {
			return DeleteResult{}, err
		}
		switch rec.State {
		case StateDeleted:
			return DeleteResult{Outcome: AlreadyDeleted, Record: rec}, nil
		case StateRefused:
			return DeleteResult{Outcome: Absent, Record: rec}, nil
		}
		keys, trackType, category := c.gateKeys(rec)
		res, err := c.gateS.Run(ctx, c.rdb, keys, id, minEnds, now.UnixMilli(), reason, rule, actor, rec.Kind, rec.User, rec.CallID,
			trackType, flag(check), pending, category).StringSlice()
		if err != nil {
			return DeleteResult{}, fmt.Errorf("catalog delete %s: %w", id, err)
		}
		switch DeleteOutcome(res[0]) {
		case "moved":
			continue
		case "publish_pending":
			return DeleteResult{}, fmt.Errorf("catalog delete %s: %w", id, ErrPublishPending)
		case Held:
			return DeleteResult{Outcome: Held, HoldID: res[1], Record: rec}, nil
		case Deleted, AlreadyDeleted:
			rec, err = c.Record(ctx, domain, id)
			if err != nil {
				return DeleteResult{}, err
			}
			return DeleteResult{Outcome: DeleteOutcome(res[0]), Record: rec}, nil
		default:
			return DeleteResult{Outcome: DeleteOutcome(res[0]), Record: rec}, nil
		}
	}
	return DeleteResult{}, fmt.Errorf("catalog delete %s: the record kept changing", id)
}

// gateKeys derives the keys a deletion touches from the record: its
// indexes, call set, usage and cap-tracking set.
func (c *Catalog) gateKeys(rec Record) ([]string, string, string) {
	art, none := c.k.artifact(rec.Domain, rec.ID), c.k.absent(rec.Domain)
	uidx, call, track, trackType := none, none, none, ""
	if rec.User != "" {
		uidx = c.k.userIndex(rec.Domain, rec.User, rec.Kind)
	}
	if rec.CallID != "" {
		call = c.k.call(rec.Domain, rec.CallID)
	}
	category := KindRecording
	if rec.Kind != KindRecording {
		m := Message{Kind: rec.Kind}
		category = m.Category()
		switch {
		case rec.Kind == "voicemail" || rec.Kind == "fax_received":
			track, trackType = c.BoxKey(rec.Domain, rec.User), trackSet
		case rec.Kind == "sms":
			if rec.Folder != "" {
				track, trackType = c.FolderKey(rec.Domain, rec.User, rec.Folder), trackSet
			}
		}
	}
	return []string{art, c.k.holds(rec.Domain), c.k.index(rec.Domain, rec.Kind), uidx, call, c.k.usage(rec.Domain), track}, trackType, category
}

// gateKeysOf is gateKeys for an artifact being admitted: the keys its
// deletion touches once it is written.
func (c *Catalog) gateKeysOf(a Artifact) ([]string, string, string) {
	art, none := c.k.artifact(a.Domain, a.ID), c.k.absent(a.Domain)
	uidx, call, track, trackType := none, none, none, ""
	if a.User != "" {
		uidx = c.k.userIndex(a.Domain, a.User, a.Kind)
	}
	if a.CallID != "" {
		call = c.k.call(a.Domain, a.CallID)
	}
	if a.trackType == trackSet {
		track, trackType = a.trackKey, trackSet
	}
	return []string{art, c.k.holds(a.Domain), c.k.index(a.Domain, a.Kind), uidx, call, c.k.usage(a.Domain), track}, trackType, a.Category
}
