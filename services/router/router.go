// Package router is the archive router: it will send each admitted
// recording to the one best-matching enabled remote storage of its tenant.
// Until that lands it connects, reports readiness and moves no data.
package router

import (
	"context"
	"net/http"

	"google.golang.org/grpc"

	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/platform"
	routerv1 "github.com/callvault/callvault/proto/callvault/router/v1"
)

// Config of a standalone router process.
type Config struct {
	Platform platform.Config
	HTTPAddr string `env:"CALLVAULT_ROUTER_HTTP_ADDR, default=127.0.0.1:8083"`
	GRPCAddr string `env:"CALLVAULT_ROUTER_GRPC_ADDR, default=127.0.0.1:9093"`
}

// Service is the archive router.
type Service struct{}

// New returns the service.
func New(*platform.Deps) *Service { return &Service{} }

// Run waits for ctx: no offload work is defined yet, and the router takes
// no messages it could not yet handle, so nothing is lost meanwhile.
func (s *Service) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// RegisterHTTP mounts nothing yet.
func (s *Service) RegisterHTTP(*http.ServeMux, auth.Authenticator) {}

// RegisterGRPC registers RouterService.
func (s *Service) RegisterGRPC(g *grpc.Server) {
	routerv1.RegisterRouterServiceServer(g, routerv1.UnimplementedRouterServiceServer{})
}
