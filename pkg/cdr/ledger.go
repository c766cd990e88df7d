package cdr

import (
	"context"
	"io"

	"github.com/callvault/callvault/pkg/auth"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
)

// Ledger is what readers need of the CDR ledger, in process or over gRPC
// (CdrService). Every call is scoped by the principal: a domain outside
// its scope, or another tenant's export, is apierr.ErrNotFound; a bad
// query is an *apierr.ValidationError naming the field.
type Ledger interface {
	// Export calls fn with the CDRs q selects, in batches, in the order q
	// asks, de-duplicated by CDR id. It holds no more than a few segment
	// blocks in memory however many rows there are.
	Export(ctx context.Context, p auth.Principal, q *cdrv1.Query, fn func([]*cdrv1.Cdr) error) error
	// CreateExport starts a background export to a file in the CDS.
	CreateExport(ctx context.Context, p auth.Principal, q *cdrv1.Query, f cdrv1.ExportFormat) (*cdrv1.Export, error)
	GetExport(ctx context.Context, p auth.Principal, id string) (*cdrv1.Export, error)
	// OpenExport opens a finished export's file (apierr.ErrConflict while
	// it is not done).
	OpenExport(ctx context.Context, p auth.Principal, id string) (io.ReadCloser, *cdrv1.Export, error)
}
