package policy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/retention"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	"github.com/callvault/callvault/services/policy/internal/override"
)

// DefaultAdmitBatch is how many ingest events the admission consumer
// decides at a time unless Settings.AdmitBatch says otherwise.
const DefaultAdmitBatch = 256

// effectWorkers bounds the effects of a batch in flight at once.
const effectWorkers = 64

// admitItem is one ingest event of a batch, as admission works on it.
type admitItem struct {
	idx  int
	env  *eventv1.Envelope
	seq  uint64
	a    catalog.Artifact
	kind retention.Kind
	d    catalog.Decision
	// owed are the effects still to carry out, in order; done once the
	// item needs nothing more (or failed).
	owed []byte
	done bool
}

// handleBatch decides a batch of ingest events. Each message gets its own
// outcome: one that fails is retried alone, and the others are
// acknowledged.
func (s *Service) handleBatch(ctx context.Context, msgs []jetstream.Msg) []error {
	errs := make([]error, len(msgs))
	w, err := s.ensureState(ctx)
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	defer w.leave()
	seqs := make([]uint64, len(msgs))
	items := make([]*admitItem, 0, len(msgs))
	for i, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			errs[i] = bus.Poison(fmt.Errorf("message metadata: %w", err))
			continue
		}
		seqs[i] = md.Sequence.Stream
		env, err := bus.DecodeEnvelope(m.Data())
		if err != nil {
			errs[i] = err
			continue
		}
		items = append(items, &admitItem{idx: i, env: env, seq: md.Sequence.Stream})
	}
	s.admitMany(ctx, items, errs)
	// What is settled (admitted, refused, repeated, or dead-lettered as
	// poison) moves the applied mark once: that records that Redis holds
	// its effect, so that a dead-lettered last event does not make Redis
	// look behind the consumer that acknowledged it.
	var top uint64
	for i, err := range errs {
		if err == nil || bus.IsPoison(err) {
			top = max(top, seqs[i])
		}
	}
	// The generation is checked whether or not anything settled: a batch
	// whose every publish failed still wrote its decisions.
	if merr := s.settle(ctx, w, catalog.AppliedIngest, top); merr != nil {
		rebuilt := errors.Is(merr, catalog.ErrRebuiltMeanwhile)
		for i, err := range errs {
			// Nothing of the batch is settled: every event is retried (the
			// poison ones are dead-lettered then).
			if err == nil || bus.IsPoison(err) || rebuilt {
				errs[i] = merr
			}
		}
	}
	return errs
}

// admitMany is Admit for a batch, in stream order: the batch's caps are
// decided in DecideMany runs (exactly as one Decide after the other), the
// decision events are published concurrently and their confirmations
// written in one pipeline, and each item's error lands in errs at its
// index. Overrides and domain owners are read once per batch.
func (s *Service) admitMany(ctx context.Context, items []*admitItem, errs []error) {
	fail := func(it *admitItem, err error) {
		errs[it.idx], it.done = err, true
	}
	var valid []*admitItem
	var domains []string
	seen := map[string]bool{}
	for _, it := range items {
		a, kind, err := s.artifactOf(it.env, it.seq)
		if err != nil {
			fail(it, err)
			continue
		}
		it.a, it.kind = a, kind
		valid = append(valid, it)
		if !seen[a.Domain] {
			seen[a.Domain] = true
			domains = append(domains, a.Domain)
		}
	}
	owners, err := s.catalog.DomainOwners(ctx, domains)
	if err != nil {
		for _, it := range valid {
			fail(it, err)
		}
		return
	}
	var owned []*admitItem
	for _, it := range valid {
		a := it.a
		switch o, ok := owners[a.Domain]; {
		case !ok:
			fail(it, fmt.Errorf("artifact %s: domain %s is not provisioned", a.ID, a.Domain))
		case o != a.Reseller:
			fail(it, bus.Poison(fmt.Errorf("artifact %s: domain %s belongs to another reseller", a.ID, a.Domain)))
		default:
			owned = append(owned, it)
		}
	}
	policies := s.policiesFor(ctx, owned)
	var pending []catalog.Pending
	var deciding []*admitItem
	for _, it := range owned {
		r := policies[policyKey{it.kind, it.a.Reseller, it.a.Domain, it.a.User}]
		if r.err != nil {
			fail(it, r.err)
			continue
		}
		pending = append(pending, catalog.Pending{Artifact: it.a, Cap: capCheckOf(r.pol, it.a.AcceptedAt)})
		deciding = append(deciding, it)
	}
	// An artifact whose cap evicts is decided on its own, once everything
	// before it in the batch is decided and published: which entry it
	// evicts depends on them, and an entry whose admission is not
	// published yet may not be evicted (catalog.ErrPublishPending), so
	// deciding it with the others would refuse it and reorder the folder.
	for start := 0; start < len(deciding); {
		end := start + 1
		if pending[start].Cap.Mode != catalog.EvictOldest {
			for end < len(deciding) && pending[end].Cap.Mode != catalog.EvictOldest {
				end++
			}
		}
		s.decideSegment(ctx, pending[start:end], deciding[start:end], fail)
		start = end
	}
	last := map[string]*admitItem{}
	for _, it := range deciding {
		if !it.done && !it.d.Repeat && it.d.State == catalog.StateAdmitted {
			last[it.a.Domain] = it
		}
	}
	// The usage threshold is judged once per domain, on the total after
	// the batch's last admission there.
	var checks []thresholdCheck
	var checked []*admitItem
	for _, it := range last {
		checks = append(checks, thresholdCheck{it.env, it.d.TotalBytes})
		checked = append(checked, it)
	}
	for i, err := range s.checkThresholds(ctx, checks) {
		if err != nil {
			fail(checked[i], err)
		}
	}
	for _, it := range deciding {
		if it.done {
			continue
		}
		status := string(it.d.State)
		switch {
		case it.d.Repeat:
			status = "repeat"
		case it.d.State == catalog.StateAdmitted:
			status = "admitted"
		case it.d.State == catalog.StateRefused:
			status = "refused"
		}
		s.admitted.WithLabelValues(string(it.kind), status).Inc()
	}
}

// policyKey names whose effective policy of which kind.
type policyKey struct {
	kind                   retention.Kind
	reseller, domain, user string
}

type resolvedPolicy struct {
	pol retention.Policy
	err error
}

// policiesFor resolves the effective policy of every tenant and kind in
// items, reading the overrides of each kind in one pipeline.
func (s *Service) policiesFor(ctx context.Context, items []*admitItem) map[policyKey]resolvedPolicy {
	out := map[policyKey]resolvedPolicy{}
	byKind := map[retention.Kind][]policyKey{}
	for _, it := range items {
		k := policyKey{it.kind, it.a.Reseller, it.a.Domain, it.a.User}
		if _, ok := out[k]; !ok {
			out[k] = resolvedPolicy{}
			byKind[it.kind] = append(byKind[it.kind], k)
		}
	}
	for kind, keys := range byKind {
		nodes := make([]override.Node, len(keys))
		for i, k := range keys {
			nodes[i] = override.Node{Level: retention.LevelUser, Reseller: k.reseller, Domain: k.domain, User: k.user}
			if k.user == "" {
				nodes[i].Level = retention.LevelDomain
			}
		}
		chains, err := s.overrides.Chains(ctx, kind, nodes)
		for i, k := range keys {
			if err != nil {
				out[k] = resolvedPolicy{err: err}
				continue
			}
			pol, rerr := retention.Resolve(s.preset, kind, chains[i])
			if rerr != nil {
				rerr = bus.Poison(rerr)
			}
			out[k] = resolvedPolicy{pol: pol, err: rerr}
		}
	}
	return out
}

// decideSegment decides a run of a batch in one DecideMany and carries
// out what its decisions owe, evictions last.
func (s *Service) decideSegment(ctx context.Context, pending []catalog.Pending, items []*admitItem, fail func(*admitItem, error)) {
	ds, derrs := s.catalog.DecideMany(ctx, pending)
	for i, it := range items {
		if derrs[i] != nil {
			fail(it, derrs[i])
			continue
		}
		it.d = ds[i]
		if it.d.Repeat {
			// Another object under a decided id is dropped. What the
			// decision still owes is carried out by the delivery of the
			// event that made it (not acknowledged until it is done), never
			// with this event's body: a decision event must say what was
			// decided, from the event it was decided on.
			other, decidedBy, err := s.repeatOf(ctx, it.a)
			if err != nil || other {
				fail(it, err)
				continue
			}
			if decidedBy != 0 && decidedBy != it.seq {
				continue
			}
		}
		it.owed = []byte(it.d.Pending)
	}
	s.finishMany(ctx, items, fail)
	for _, it := range items {
		if !it.done && it.d.EvictedID != "" {
			ectx, cancel := context.WithTimeout(ctx, 2*effectTimeout)
			err := s.finishDeletion(ectx, it.env.GetTenant().GetReseller(), it.a.Domain, it.d.EvictedID)
			cancel()
			if err != nil {
				fail(it, err)
			}
		}
	}
}

// finishMany carries out what the decisions owe, an effect at a time
// across the batch: the first owed effect of every item, all at once and
// each under its own deadline (a store that hangs on one media delete
// fails that item only), confirmed in one pipeline; then the second. An
// item whose effect fails owes the rest still; its event is retried and
// the redelivery finds the decision recorded and finishes it.
func (s *Service) finishMany(ctx context.Context, items []*admitItem, fail func(*admitItem, error)) {
	for round := 0; ; round++ {
		var now []*admitItem
		for _, it := range items {
			if !it.done && round < len(it.owed) {
				now = append(now, it)
			}
		}
		if len(now) == 0 {
			return
		}
		errs := s.carryOut(ctx, now, round)
		var confirm []catalog.Confirmed
		var confirming []*admitItem
		for i, it := range now {
			if errs[i] != nil {
				fail(it, errs[i])
				continue
			}
			confirm = append(confirm, catalog.Confirmed{Domain: it.a.Domain, ID: it.a.ID, Effect: it.owed[round]})
			confirming = append(confirming, it)
		}
		for i, err := range s.catalog.DoneMany(ctx, confirm) {
			if err != nil {
				fail(confirming[i], err)
			}
		}
	}
}

// effectTimeout bounds one effect (a media delete, a publish) of a batch.
const effectTimeout = 5 * time.Second

// carryOut runs effect number round of each item concurrently, each under
// its own deadline. Decision events go out under their own Nats-Msg-Id (a
// retry is dropped by the stream as a duplicate); their order in the
// stream does not matter to a rebuild: no decision event reads another's,
// and what would (a deletion or an eviction of an artifact) waits until
// the artifact's own admission is published (catalog.ErrPublishPending).
func (s *Service) carryOut(ctx context.Context, items []*admitItem, round int) []error {
	errs := make([]error, len(items))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(effectWorkers, len(items)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				it := items[i]
				ectx, cancel := context.WithTimeout(ctx, effectTimeout)
				switch it.owed[round] {
				case catalog.EffectRemoveMedia:
					if it.a.ObjectKey != "" {
						if err := s.d.CDS.Delete(ectx, it.a.ObjectKey); err != nil {
							errs[i] = fmt.Errorf("remove refused media %s: %w", it.a.ObjectKey, err)
						}
					}
				case catalog.EffectPublish:
					ev := decisionEvent(it.env, it.a, it.kind, it.d, it.seq)
					_, errs[i] = bus.PublishEnvelope(ectx, s.d.JS, ev.subject(s.d.Names), ev.env.GetId(), ev.env)
				}
				cancel()
			}
		}()
	}
	for i := range items {
		next <- i
	}
	close(next)
	wg.Wait()
	return errs
}
