package ingest

import (
	"context"
	"errors"
	"io"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/cdr"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	ingestv1 "github.com/callvault/callvault/proto/callvault/ingest/v1"
	"github.com/callvault/callvault/services/ingest/internal/meta"
)

type grpcServer struct {
	ingestv1.UnimplementedIngestServiceServer
	s *Service
}

// RegisterGRPC registers IngestService on g.
func (s *Service) RegisterGRPC(g *grpc.Server) {
	ingestv1.RegisterIngestServiceServer(g, &grpcServer{s: s})
}

// UploadRecording reads the metadata message, then streams the chunks
// into the CDS as they arrive.
func (g *grpcServer) UploadRecording(stream grpc.ClientStreamingServer[ingestv1.UploadRecordingRequest, ingestv1.UploadRecordingResponse]) error {
	p, _ := auth.FromContext(stream.Context())
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return apierr.GRPC(apierr.Invalid("metadata", "the first message must carry the metadata"))
	}
	if err != nil {
		return err
	}
	md := first.GetMetadata()
	if md == nil {
		return apierr.GRPC(apierr.Invalid("metadata", "the first message must carry the metadata"))
	}
	m := meta.Recording{
		ID: md.GetId(), CallID: md.GetCallId(), Reseller: md.GetReseller(), Domain: md.GetDomain(), User: md.GetUser(),
		Mode: modeString(md.GetMode()), DurationS: md.GetDurationS(), ContentType: md.GetContentType(),
	}
	if md.GetStartedAt() != nil {
		m.StartedAt = md.GetStartedAt().AsTime()
	}
	res, err := g.s.StoreRecording(stream.Context(), p, m, &chunkReader{stream: stream}, "ingest/grpc")
	if err != nil {
		return apierr.GRPC(err)
	}
	return stream.SendAndClose(&ingestv1.UploadRecordingResponse{
		Id: res.ID, Duplicate: res.Duplicate, SizeBytes: res.Size, Sha256: res.SHA256, StreamSequence: res.Sequence,
	})
}

func modeString(m eventv1.RecordingMode) string {
	switch m {
	case eventv1.RecordingMode_RECORDING_MODE_AUTOMATIC:
		return meta.ModeAutomatic
	case eventv1.RecordingMode_RECORDING_MODE_ON_DEMAND:
		return meta.ModeOnDemand
	default:
		return ""
	}
}

// chunkReader turns the rest of the stream into an io.Reader, one message
// at a time, so a recording is never held whole in memory.
type chunkReader struct {
	stream grpc.ClientStreamingServer[ingestv1.UploadRecordingRequest, ingestv1.UploadRecordingResponse]
	buf    []byte
}

func (c *chunkReader) Read(p []byte) (int, error) {
	for len(c.buf) == 0 {
		msg, err := c.stream.Recv()
		if err != nil {
			return 0, err
		}
		if msg.GetMetadata() != nil {
			return 0, apierr.Invalid("metadata", "may only be sent in the first message")
		}
		c.buf = msg.GetChunk()
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

// PublishCdrs answers a batch: the good CDRs published, the bad ones by
// index.
func (g *grpcServer) PublishCdrs(ctx context.Context, req *ingestv1.PublishCdrsRequest) (*ingestv1.PublishCdrsResponse, error) {
	p, _ := auth.FromContext(ctx)
	res, err := g.s.PublishCdrs(ctx, p, req.GetCdrs(), "ingest/grpc")
	if err != nil {
		return nil, grpcError(err)
	}
	return &ingestv1.PublishCdrsResponse{Accepted: uint32(res.Accepted), Duplicates: uint32(res.Duplicates), Rejected: rejectionsProto(res.Rejected)}, nil
}

// StreamCdrs gathers the CDRs of every message and answers them as one
// batch once the client closes its side: indexes count across the whole
// stream, and the stream as a whole carries at most cdr.MaxBatch CDRs
// (one more refuses it at once, before anything is published).
func (g *grpcServer) StreamCdrs(stream grpc.ClientStreamingServer[ingestv1.StreamCdrsRequest, ingestv1.StreamCdrsResponse]) error {
	p, _ := auth.FromContext(stream.Context())
	var cdrs []*cdrv1.Cdr
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if len(cdrs)+len(msg.GetCdrs()) > cdr.MaxBatch {
			return grpcError(errTooManyCdrs)
		}
		cdrs = append(cdrs, msg.GetCdrs()...)
	}
	res, err := g.s.PublishCdrs(stream.Context(), p, cdrs, "ingest/grpc")
	if err != nil {
		return grpcError(err)
	}
	return stream.SendAndClose(&ingestv1.StreamCdrsResponse{Accepted: uint32(res.Accepted), Duplicates: uint32(res.Duplicates), Rejected: rejectionsProto(res.Rejected)})
}

func rejectionsProto(rs []CdrRejection) []*ingestv1.CdrRejection {
	out := make([]*ingestv1.CdrRejection, len(rs))
	for i, r := range rs {
		out[i] = &ingestv1.CdrRejection{Index: uint32(r.Index), Id: r.ID, Field: r.Field, Reason: r.Reason}
	}
	return out
}

// grpcError is apierr.GRPC, but a limit names its field in the status
// details as a validation error does.
func grpcError(err error) error {
	var le *limitError
	if !errors.As(err, &le) {
		return apierr.GRPC(err)
	}
	st := status.New(codes.ResourceExhausted, le.Error())
	if withDetails, derr := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: le.field, Description: le.reason}}}); derr == nil {
		st = withDetails
	}
	return st.Err()
}
