package ingest

import (
	"errors"
	"io"

	"google.golang.org/grpc"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
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
