package gateway

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/catalog"
	authv1 "github.com/callvault/callvault/proto/callvault/auth/v1"
	catalogv1 "github.com/callvault/callvault/proto/callvault/catalog/v1"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
)

type grpcServer struct {
	catalogv1.UnimplementedCatalogServiceServer
	s *Service
}

// RegisterGRPC registers CatalogService and TokenService.
func (s *Service) RegisterGRPC(g *grpc.Server) {
	catalogv1.RegisterCatalogServiceServer(g, &grpcServer{s: s})
	authv1.RegisterTokenServiceServer(g, &tokenServer{s: s})
}

func (g *grpcServer) ListRecordings(ctx context.Context, req *catalogv1.ListRecordingsRequest) (*catalogv1.ListRecordingsResponse, error) {
	p, _ := auth.FromContext(ctx)
	v := &apierr.ValidationError{}
	q := catalog.Query{Domain: req.GetDomain(), User: req.GetUser(), CallID: req.GetCallId(), Cursor: req.GetPageToken(), Limit: int(req.GetPageSize())}
	switch {
	case q.Limit == 0:
		q.Limit = defaultLimit
	case q.Limit < 0 || q.Limit > maxLimit:
		v.Add("page_size", "must be from 1 to %d, or 0 for %d", maxLimit, defaultLimit)
	}
	if req.GetFrom() != nil {
		q.From = req.GetFrom().AsTime()
	}
	if req.GetTo() != nil {
		q.To = req.GetTo().AsTime()
	}
	if !q.From.IsZero() && !q.To.IsZero() && !q.From.Before(q.To) {
		v.Add("to", "must be after from")
	}
	if err := v.Err(); err != nil {
		return nil, apierr.GRPC(err)
	}
	domain, user, err := g.s.listDomain(ctx, p, q.Domain, q.User)
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	q.Domain, q.User = domain, user
	page, err := g.s.catalog.ListRecordings(ctx, q)
	if errors.Is(err, catalog.ErrBadCursor) {
		return nil, apierr.GRPC(apierr.Invalid("page_token", "is not a token this API issued"))
	}
	if err != nil {
		return nil, apierr.GRPC(fmt.Errorf("%w: %w", apierr.ErrUnavailable, err))
	}
	out := &catalogv1.ListRecordingsResponse{NextPageToken: page.Next}
	for _, r := range page.Recordings {
		out.Recordings = append(out.Recordings, toProto(r))
	}
	return out, nil
}

func (g *grpcServer) GetRecording(ctx context.Context, req *catalogv1.GetRecordingRequest) (*catalogv1.GetRecordingResponse, error) {
	p, _ := auth.FromContext(ctx)
	r, err := g.s.recording(ctx, p, req.GetId())
	if err != nil {
		return nil, apierr.GRPC(err)
	}
	if req.GetDomain() != "" && req.GetDomain() != r.Domain {
		return nil, apierr.GRPC(fmt.Errorf("%w: recording %s", apierr.ErrNotFound, req.GetId()))
	}
	return &catalogv1.GetRecordingResponse{Recording: toProto(r)}, nil
}

func toProto(r catalog.Recording) *catalogv1.Recording {
	mode := eventv1.RecordingMode_RECORDING_MODE_AUTOMATIC
	if r.Mode == "on_demand" {
		mode = eventv1.RecordingMode_RECORDING_MODE_ON_DEMAND
	}
	return &catalogv1.Recording{
		Id: r.ID, CallId: r.CallID, Tenant: &eventv1.Tenant{Reseller: r.Reseller, Domain: r.Domain, User: r.User},
		Mode: mode, StartedAt: timestamppb.New(r.StartedAt), DurationS: r.DurationS, ContentType: r.ContentType,
		SizeBytes: r.Size, Sha256: r.SHA256, AcceptedAt: timestamppb.New(r.AcceptedAt),
	}
}
