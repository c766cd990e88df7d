package policy

import (
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/retention"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	"github.com/callvault/callvault/services/policy/internal/hold"
	"github.com/callvault/callvault/services/policy/internal/override"
)

// Typed config payloads (schema version 2). The JSON fields of older
// events are still read by applyChange.

// Event types of the policy service's config events.
const (
	typeHoldPlaced      = "config.hold.placed"
	typeHoldReleased    = "config.hold.released"
	typeOverrideSet     = "config.override.set"
	typeOverrideDeleted = "config.override.deleted"
	typeBundleAssigned  = "config.bundle.assigned"
	configSchema        = 2
)

func holdPayload(h *hold.Hold) *eventv1.ConfigPayload {
	if h == nil {
		return nil
	}
	return &eventv1.ConfigPayload{Value: &eventv1.ConfigPayload_Hold{Hold: &eventv1.LegalHold{
		Id: h.ID, Reseller: h.Reseller, Domain: h.Domain, User: h.User, CallId: h.CallID, Reason: h.Reason,
		PlacedBy: h.PlacedBy, PlacedAt: timestamppb.New(h.PlacedAt), PlacedLevel: h.PlacedLevel,
	}}}
}

func holdFromPayload(p *eventv1.ConfigPayload) (hold.Hold, bool) {
	h := p.GetHold()
	if h == nil {
		return hold.Hold{}, false
	}
	return hold.Hold{
		ID: h.GetId(), Reseller: h.GetReseller(), Domain: h.GetDomain(), User: h.GetUser(), CallID: h.GetCallId(), Reason: h.GetReason(),
		PlacedBy: h.GetPlacedBy(), PlacedAt: h.GetPlacedAt().AsTime(), PlacedLevel: h.GetPlacedLevel(),
	}, true
}

func durationPayload(d *retention.Duration) *eventv1.CalendarDuration {
	if d == nil {
		return nil
	}
	return &eventv1.CalendarDuration{Months: int32(d.Months), Days: int32(d.Days)}
}

func durationFromPayload(d *eventv1.CalendarDuration) *retention.Duration {
	if d == nil {
		return nil
	}
	return &retention.Duration{Months: int(d.GetMonths()), Days: int(d.GetDays())}
}

var levelNames = map[string]retention.Level{"system": retention.LevelSystem, "reseller": retention.LevelReseller, "domain": retention.LevelDomain, "user": retention.LevelUser}

func overridePayload(o *override.Stored) *eventv1.ConfigPayload {
	if o == nil {
		return nil
	}
	f := o.Fields
	out := &eventv1.RetentionOverride{
		Kind: kindProto(o.Kind), Level: o.Node.Level.String(), Reseller: o.Node.Reseller, Domain: o.Node.Domain, User: o.Node.User,
		MinStorage: durationPayload(f.MinStorage), NoCap: f.NoCap, UpdatedBy: o.UpdatedBy, UpdatedAt: timestamppb.New(o.UpdatedAt),
	}
	if r := f.Retention; r != nil {
		if r.Unlimited {
			out.RetentionUnlimited = true
		} else {
			out.Retention = durationPayload(&r.Duration)
		}
	}
	if c := f.Cap; c != nil {
		out.Cap = &eventv1.OverrideCap{Limit: c.Limit, Action: string(c.Action), Scope: string(c.Scope)}
	}
	if p := f.PurchasedDays; p != nil {
		out.PurchasedDays = int32p(*p)
	}
	return &eventv1.ConfigPayload{Value: &eventv1.ConfigPayload_Override{Override: out}}
}

func overrideFromPayload(p *eventv1.ConfigPayload) (override.Stored, bool) {
	o := p.GetOverride()
	if o == nil {
		return override.Stored{}, false
	}
	level, ok := levelNames[o.GetLevel()]
	if !ok {
		return override.Stored{}, false
	}
	kind, err := retention.ParseKind(strings.ToLower(strings.TrimPrefix(o.GetKind().String(), "DATA_KIND_")))
	if err != nil {
		return override.Stored{}, false
	}
	f := retention.Fields{MinStorage: durationFromPayload(o.GetMinStorage()), NoCap: o.GetNoCap()}
	switch {
	case o.GetRetentionUnlimited():
		f.Retention = &retention.Retention{Unlimited: true}
	case o.GetRetention() != nil:
		f.Retention = &retention.Retention{Duration: *durationFromPayload(o.GetRetention())}
	}
	if c := o.GetCap(); c != nil {
		f.Cap = &retention.Cap{Limit: c.GetLimit(), Action: retention.CapAction(c.GetAction()), Scope: retention.CapScope(c.GetScope())}
	}
	if o.PurchasedDays != nil {
		d := int(o.GetPurchasedDays())
		f.PurchasedDays = &d
	}
	return override.Stored{
		Kind: kind, Node: override.Node{Level: level, Reseller: o.GetReseller(), Domain: o.GetDomain(), User: o.GetUser()},
		Fields: f, UpdatedBy: o.GetUpdatedBy(), UpdatedAt: o.GetUpdatedAt().AsTime(),
	}, true
}

func bundlePayload(a Assignment) *eventv1.ConfigPayload {
	return &eventv1.ConfigPayload{Value: &eventv1.ConfigPayload_Bundle{Bundle: &eventv1.BundleAssignment{
		Domain: a.Domain, Bundle: a.Bundle, DataRotationMonths: int32(a.RotationMonths), AssignedBy: a.AssignedBy, AssignedAt: timestamppb.New(a.AssignedAt),
	}}}
}

func bundleFromPayload(p *eventv1.ConfigPayload) (Assignment, bool) {
	b := p.GetBundle()
	if b == nil {
		return Assignment{}, false
	}
	a := Assignment{Domain: b.GetDomain(), Bundle: b.GetBundle(), RotationMonths: int(b.GetDataRotationMonths()), AssignedBy: b.GetAssignedBy()}
	if b.GetAssignedAt() != nil {
		a.AssignedAt = b.GetAssignedAt().AsTime()
	}
	return a, true
}
