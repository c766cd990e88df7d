package policy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/retention"
)

// DeleteRequest asks the deletion gate to delete one artifact.
type DeleteRequest struct {
	Domain, ID string
	// Explicit marks a deletion the brief lets through inside the minimum
	// (an admin's delete, an extension's cascade). Holds stop it all the
	// same.
	Explicit            bool
	Reason, Rule, Actor string
}

// Delete is the one way anything is deleted: the gate checks legal holds
// and the minimum (resolved now, for the artifact's own kind) in the same
// atomic step as the removal and records the deletion with its effects
// owed; then the media is removed and the tombstone published. Deleting
// again finishes whatever is still owed and answers AlreadyDeleted; an
// unknown artifact is Absent, which callers treat as done.
func (s *Service) Delete(ctx context.Context, req DeleteRequest) (catalog.DeleteResult, error) {
	v := &apierr.ValidationError{}
	if req.Domain == "" {
		v.Add("domain", "is required")
	}
	if req.ID == "" {
		v.Add("id", "is required")
	}
	if req.Reason == "" {
		v.Add("reason", "is required: every deletion says why")
	}
	if err := v.Err(); err != nil {
		return catalog.DeleteResult{}, err
	}
	// A deletion writes the catalog: it registers as a writer, so it never
	// runs while a rebuild empties the catalog (which would answer Absent
	// for an artifact the rebuild is about to restore).
	w, err := s.ensureState(ctx)
	if err != nil {
		return catalog.DeleteResult{}, err
	}
	defer w.leave()
	rec, err := s.catalog.Record(ctx, req.Domain, req.ID)
	if err != nil {
		if errors.Is(err, catalog.ErrNoRecord) {
			return catalog.DeleteResult{Outcome: catalog.Absent}, nil
		}
		return catalog.DeleteResult{}, err
	}
	now := time.Now().UTC()
	gate := catalog.DeleteRequest{Domain: req.Domain, ID: req.ID, Now: now, Reason: req.Reason, Rule: req.Rule, Actor: req.Actor}
	if !req.Explicit && rec.State == catalog.StateAdmitted {
		pol, err := s.policyOf(ctx, rec)
		if err != nil {
			return catalog.DeleteResult{}, err
		}
		gate.MinimumEnds = pol.CullableAt(rec.StartedAt)
	}
	res, err := s.catalog.Delete(ctx, gate)
	if err != nil {
		return res, err
	}
	if res.Outcome == catalog.Deleted || res.Outcome == catalog.AlreadyDeleted {
		if err := s.finishDeletion(ctx, res.Record.Reseller, req.Domain, req.ID); err != nil {
			return res, fmt.Errorf("delete %s: %w", req.ID, err)
		}
	}
	return res, nil
}

// policyOf resolves the effective policy of a stored artifact's own kind.
func (s *Service) policyOf(ctx context.Context, rec catalog.Record) (retention.Policy, error) {
	kind := retention.Kind(rec.Kind)
	if rec.Kind == catalog.KindRecording {
		kind = retention.RecordingAutomatic
		if rec.Mode == "on_demand" {
			kind = retention.RecordingOnDemand
		}
	}
	chain, err := s.overrides.Chain(ctx, kind, rec.Reseller, rec.Domain, rec.User)
	if err != nil {
		return retention.Policy{}, err
	}
	return retention.Resolve(s.preset, kind, chain)
}
