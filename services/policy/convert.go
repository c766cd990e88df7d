package policy

import (
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/retention"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
	"github.com/callvault/callvault/services/policy/internal/hold"
	"github.com/callvault/callvault/services/policy/internal/override"
)

// kindOf maps DATA_KIND_RECORDING_AUTOMATIC to "recording_automatic".
func kindOf(k eventv1.DataKind, field string) (retention.Kind, error) {
	if k == eventv1.DataKind_DATA_KIND_UNSPECIFIED {
		return "", apierr.Invalid(field, "is required")
	}
	kind, err := retention.ParseKind(strings.ToLower(strings.TrimPrefix(k.String(), "DATA_KIND_")))
	if err != nil {
		return "", apierr.Invalid(field, "%v", err)
	}
	return kind, nil
}

func kindProto(k retention.Kind) eventv1.DataKind {
	return eventv1.DataKind(eventv1.DataKind_value["DATA_KIND_"+strings.ToUpper(string(k))])
}

// duration reads a months/days pair; nil when neither is set.
func duration(months, days *int32) *retention.Duration {
	if months == nil && days == nil {
		return nil
	}
	var d retention.Duration
	if months != nil {
		d.Months = int(*months)
	}
	if days != nil {
		d.Days = int(*days)
	}
	return &d
}

func fieldsOf(f *policyv1.PolicyFields) retention.Fields {
	var out retention.Fields
	out.MinStorage = duration(f.MinStorageMonths, f.MinStorageDays)
	if f.RetentionUnlimited != nil && f.GetRetentionUnlimited() {
		out.Retention = &retention.Retention{Unlimited: true}
	} else if d := duration(f.RetentionMonths, f.RetentionDays); d != nil {
		out.Retention = &retention.Retention{Duration: *d}
	}
	if c := f.GetCap(); c != nil {
		out.Cap = &retention.Cap{
			Limit:  c.GetLimit(),
			Action: retention.CapAction(strings.ToLower(strings.TrimPrefix(c.GetAction().String(), "CAP_ACTION_"))),
			Scope:  retention.CapScope(strings.ToLower(strings.TrimPrefix(c.GetScope().String(), "CAP_SCOPE_"))),
		}
	}
	out.NoCap = f.GetNoCap()
	if f.PurchasedDays != nil {
		d := int(f.GetPurchasedDays())
		out.PurchasedDays = &d
	}
	return out
}

func capProto(c *retention.Cap) *policyv1.Cap {
	if c == nil {
		return nil
	}
	return &policyv1.Cap{
		Limit:  c.Limit,
		Action: policyv1.CapAction(policyv1.CapAction_value["CAP_ACTION_"+strings.ToUpper(string(c.Action))]),
		Scope:  policyv1.CapScope(policyv1.CapScope_value["CAP_SCOPE_"+strings.ToUpper(string(c.Scope))]),
	}
}

func int32p(v int) *int32 {
	i := int32(v)
	return &i
}

func overrideProto(o override.Stored) *policyv1.Override {
	f := &policyv1.PolicyFields{Cap: capProto(o.Fields.Cap)}
	if p := o.Fields.PurchasedDays; p != nil {
		f.PurchasedDays = int32p(*p)
	}
	if m := o.Fields.MinStorage; m != nil {
		f.MinStorageMonths, f.MinStorageDays = int32p(m.Months), int32p(m.Days)
	}
	if r := o.Fields.Retention; r != nil {
		unlimited := r.Unlimited
		f.RetentionUnlimited = &unlimited
		if !r.Unlimited {
			f.RetentionMonths, f.RetentionDays = int32p(r.Months), int32p(r.Days)
		}
	}
	if o.Fields.NoCap {
		t := true
		f.NoCap = &t
	}
	sc := &policyv1.Scope{Level: levelProto(o.Node.Level), Reseller: o.Node.Reseller, Domain: o.Node.Domain, User: o.Node.User}
	if o.Node.Level > retention.LevelReseller {
		sc.Reseller = "" // a domain's reseller is the one of record, not part of the scope
	}
	return &policyv1.Override{Kind: kindProto(o.Kind), Scope: sc, Fields: f, UpdatedBy: o.UpdatedBy, UpdatedAt: timestamppb.New(o.UpdatedAt)}
}

func policyProto(p retention.Policy) *policyv1.EffectivePolicy {
	return &policyv1.EffectivePolicy{
		Kind:             kindProto(p.Kind),
		MinStorageMonths: int32(p.MinStorage.Months), MinStorageDays: int32(p.MinStorage.Days),
		RetentionMonths: int32(p.Retention.Months), RetentionDays: int32(p.Retention.Days), RetentionUnlimited: p.Retention.Unlimited,
		Cap: capProto(p.Cap), PurchasedDays: int32(p.PurchasedDays), PurchaseCapped: p.PurchaseCapped, RetentionClamped: p.RetentionClamped,
		RecordingCeilingMonths: int32(p.Ceiling.Months),
		MinStorageFrom:         levelProto(p.MinStorageFrom), RetentionFrom: levelProto(p.RetentionFrom), CapFrom: levelProto(p.CapFrom),
		Preset: p.Preset,
	}
}

func levelProto(l retention.Level) policyv1.Level {
	if l == retention.LevelPreset {
		return policyv1.Level_LEVEL_PRESET
	}
	return policyv1.Level(l) // system..user share their numbers
}

func holdProto(h hold.Hold) *policyv1.Hold {
	level := policyv1.Level_LEVEL_DOMAIN
	if h.User != "" {
		level = policyv1.Level_LEVEL_USER
	}
	placed := policyv1.Level(policyv1.Level_value["LEVEL_"+strings.ToUpper(h.PlacedLevel)])
	if h.PlacedLevel == "" {
		placed = policyv1.Level_LEVEL_SYSTEM // see hold.ReleasableBy
	}
	return &policyv1.Hold{
		Id: h.ID, Scope: &policyv1.Scope{Level: level, Reseller: h.Reseller, Domain: h.Domain, User: h.User},
		CallId: h.CallID, Reason: h.Reason, PlacedBy: h.PlacedBy, PlacedAt: timestamppb.New(h.PlacedAt), PlacedLevel: placed,
	}
}
