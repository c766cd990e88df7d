// Package culler deletes what must or may go. Until its rules land it
// connects, reports readiness and deletes nothing.
package culler

import (
	"context"
	"net/http"

	"google.golang.org/grpc"

	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/platform"
	cullerv1 "github.com/callvault/callvault/proto/callvault/culler/v1"
)

// Config of a standalone culler process.
type Config struct {
	Platform platform.Config
	HTTPAddr string `env:"CALLVAULT_CULLER_HTTP_ADDR, default=127.0.0.1:8084"`
	GRPCAddr string `env:"CALLVAULT_CULLER_GRPC_ADDR, default=127.0.0.1:9094"`
}

// Service is the culler.
type Service struct{}

// New returns the service.
func New(*platform.Deps) *Service { return &Service{} }

// Run waits for ctx: with no rules defined there is nothing to sweep.
func (s *Service) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// RegisterHTTP mounts nothing yet.
func (s *Service) RegisterHTTP(*http.ServeMux, auth.Authenticator) {}

// RegisterGRPC registers CullerService.
func (s *Service) RegisterGRPC(g *grpc.Server) {
	cullerv1.RegisterCullerServiceServer(g, cullerv1.UnimplementedCullerServiceServer{})
}
