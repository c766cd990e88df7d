package policy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/tenant"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
)

// AlertPercent is when a tenant is warned that its storage is nearly full.
const AlertPercent = 95.0

// usageCategories are reported in this order; catalog categories map
// onto them and anything else counts as "other".
var usageCategories = []string{"recordings", "voicemail", "fax", "messages", "backups", "cdrs", "other"}

var categoryOf = map[string]string{"recording": "recordings", "voicemail": "voicemail", "fax": "fax", "messages": "messages", "backup": "backups", "cdr": "cdrs"}

// Usage is what a domain stores against its capacity.
type Usage struct {
	Bundle    string
	ByCat     map[string][2]int64 // bytes, count
	Used      int64
	Capacity  int64
	Free      int64
	AddedLast int64 // bytes admitted in the last 30 days
	// ForecastMonths is how many months of data still fit at the last 30
	// days' rate; -1 when nothing was added.
	ForecastMonths float64
}

// Usage reads a domain's usage, capacity and forecast.
func (s *Service) Usage(ctx context.Context, domain string, now time.Time) (Usage, error) {
	raw, err := s.catalog.Usage(ctx, domain)
	if err != nil {
		return Usage{}, err
	}
	a, err := s.Assignment(ctx, domain)
	if err != nil {
		return Usage{}, err
	}
	u := Usage{Bundle: a.Bundle, ByCat: map[string][2]int64{}}
	for cat, v := range raw {
		if cat == "total" {
			continue
		}
		name, ok := categoryOf[cat]
		if !ok {
			name = "other"
		}
		e := u.ByCat[name]
		u.ByCat[name] = [2]int64{e[0] + v.Bytes, e[1] + v.Count}
		u.Used += v.Bytes
	}
	if b, ok := s.bundles.Lookup(a.Bundle); ok {
		u.Capacity = b.CapacityBytes()
	}
	u.Free = max(0, u.Capacity-u.Used)
	u.AddedLast, err = s.catalog.AddedSince(ctx, domain, now.AddDate(0, 0, -29))
	if err != nil {
		return Usage{}, err
	}
	u.ForecastMonths = -1
	if u.AddedLast > 0 {
		u.ForecastMonths = float64(u.Free) / float64(u.AddedLast)
	}
	return u, nil
}

func (s *Service) alertKey(domain string) string {
	return s.d.Names.Namespace() + ":{" + domain + "}:usage:alert"
}

// thresholdCheck is one domain's total after an admission, with the
// admitted event.
type thresholdCheck struct {
	env   *eventv1.Envelope
	total int64
}

// checkThresholds publishes a usage.threshold event for each domain an
// admission took to 95 % of its capacity, reading every assignment and
// flag in one round trip; errors are per check. A flag remembers the
// crossing, so the event fires once; it is cleared when usage falls back
// below, and the next crossing fires again.
func (s *Service) checkThresholds(ctx context.Context, checks []thresholdCheck) []error {
	errs := make([]error, len(checks))
	pipe := s.d.Redis.Pipeline()
	assigned := make([]*redis.StringCmd, len(checks))
	flagged := make([]*redis.IntCmd, len(checks))
	for i, c := range checks {
		domain := c.env.GetTenant().GetDomain()
		assigned[i] = pipe.Get(ctx, s.bundleKey(domain))
		flagged[i] = pipe.Exists(ctx, s.alertKey(domain))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	for i, c := range checks {
		errs[i] = s.judgeThreshold(ctx, c.env, c.total, assigned[i], flagged[i])
	}
	return errs
}

// judgeThreshold acts on one domain's assignment and flag: a write only
// when the side of the threshold changes.
func (s *Service) judgeThreshold(ctx context.Context, env *eventv1.Envelope, total int64, assigned *redis.StringCmd, flagged *redis.IntCmd) error {
	domain := env.GetTenant().GetDomain()
	a, err := s.parseAssignment(domain, assigned)
	if err != nil {
		return err
	}
	b, ok := s.bundles.Lookup(a.Bundle)
	if !ok || b.CapacityBytes() == 0 {
		return nil
	}
	pct := 100 * float64(total) / float64(b.CapacityBytes())
	over, wasOver := pct >= AlertPercent, flagged.Val() == 1
	switch {
	case !over && wasOver:
		return s.d.Redis.Del(ctx, s.alertKey(domain)).Err()
	case !over || wasOver:
		return nil
	}
	first, err := s.d.Redis.SetNX(ctx, s.alertKey(domain), env.GetId(), 0).Result()
	if err != nil || !first {
		return err
	}
	ev := &eventv1.Envelope{
		Id: "usage-" + domain + "-" + env.GetId(), AcceptedAt: timestamppb.Now(), Tenant: &eventv1.Tenant{Reseller: env.GetTenant().GetReseller(), Domain: domain},
		Source: "policy",
		Body:   &eventv1.Envelope_UsageThreshold{UsageThreshold: &eventv1.UsageThreshold{UsedBytes: total, CapacityBytes: b.CapacityBytes(), Percent: pct, Bundle: b.Name}},
	}
	if _, err := bus.PublishEnvelope(ctx, s.d.JS, s.d.Names.UsageSubject(), ev.GetId(), ev); err != nil {
		// Let the next admission try again.
		_ = s.d.Redis.Del(ctx, s.alertKey(domain)).Err()
		return err
	}
	s.log.Warn("usage threshold crossed", "domain", domain, "percent", fmt.Sprintf("%.1f", pct), "bundle", b.Name)
	return nil
}

// GetUsage answers for a domain the caller covers.
func (s *Service) GetUsage(ctx context.Context, p auth.Principal, domain string) (*policyv1.GetUsageResponse, error) {
	if err := tenant.CheckDomain(domain); err != nil {
		return nil, apierr.Invalid("domain", "%v", err)
	}
	if _, err := s.catalog.AuthorizeDomain(ctx, p, domain); err != nil {
		return nil, err
	}
	u, err := s.Usage(ctx, domain, time.Now())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", apierr.ErrUnavailable, err)
	}
	out := &policyv1.GetUsageResponse{UsedBytes: u.Used, CapacityBytes: u.Capacity, FreeBytes: u.Free, ForecastMonths: u.ForecastMonths}
	for _, c := range usageCategories {
		v := u.ByCat[c]
		out.Categories = append(out.Categories, &policyv1.CategoryUsage{Category: c, Bytes: v[0], Count: v[1]})
	}
	return out, nil
}
