package platform

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"

	"github.com/sethvargo/go-envconfig"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/obs"
	"github.com/callvault/callvault/pkg/server"
)

// Service is what every callvault service offers a process that hosts it.
type Service interface {
	RegisterHTTP(mux *http.ServeMux, a auth.Authenticator)
	RegisterGRPC(g *grpc.Server)
	// Run does the service's background work until ctx ends.
	Run(ctx context.Context) error
}

// Preparer is a Service with work that must finish before any listener
// serves: the policy service catches Redis up with the streams.
type Preparer interface {
	Prepare(ctx context.Context) error
}

// NewGRPCServer returns a gRPC server that authenticates every call but
// health checks and reflection, and that answers internal errors with a
// generic message and a correlation id, logging their text to log.
func NewGRPCServer(a auth.Authenticator, log *slog.Logger) (*grpc.Server, *health.Server) {
	g, hs := server.NewGRPC(
		grpc.ChainUnaryInterceptor(apierr.UnaryServerInterceptor(log), auth.UnaryInterceptor(a)),
		grpc.ChainStreamInterceptor(apierr.StreamServerInterceptor(log), auth.StreamInterceptor(a)),
	)
	return g, hs
}

// NewHTTPHandler is mux with the logger in every request's context, where
// apierr finds it for internal errors.
func NewHTTPHandler(mux *http.ServeMux, log *slog.Logger) http.Handler {
	return apierr.Middleware(log, mux)
}

// RunService is the whole life of a standalone service process: load cfg
// from the environment (flags override the listen addresses and log
// level), connect, serve HTTP and gRPC, and stop gracefully when ctx ends.
func RunService(ctx context.Context, name string, cfg any, pc *Config, build func(*Deps) (Service, error), addrs func() (*string, *string)) error {
	if err := envconfig.Process(ctx, cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	httpAddr, grpcAddr := addrs()
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(httpAddr, "http-addr", *httpAddr, "HTTP listen address (health, metrics, REST)")
	fs.StringVar(grpcAddr, "grpc-addr", *grpcAddr, "gRPC listen address")
	fs.StringVar(&pc.LogLevel, "log-level", pc.LogLevel, "debug, info, warn or error")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	log := obs.NewLogger(os.Stderr, pc.LogLevel).With("process", name)
	d, err := Open(ctx, *pc, name, log)
	if err != nil {
		return err
	}
	defer d.Close()
	svc, err := build(d)
	if err != nil {
		return err
	}
	return ServeService(ctx, log, d, svc, *httpAddr, *grpcAddr, nil)
}

// ServeService prepares svc (see Preparer), then serves it on HTTP and
// gRPC and runs its background work until ctx ends. ready, when not nil,
// receives the listen addresses once they accept.
func ServeService(ctx context.Context, log *slog.Logger, d *Deps, svc Service, httpAddr, grpcAddr string, ready chan<- [2]string) error {
	if p, ok := svc.(Preparer); ok {
		if err := p.Prepare(ctx); err != nil {
			return err
		}
	}
	mux := http.NewServeMux()
	d.Health.Register(mux, d.Registry)
	svc.RegisterHTTP(mux, d.Tokens)
	g, hs := NewGRPCServer(d.Tokens, log)
	svc.RegisterGRPC(g)

	grp, gctx := errgroup.WithContext(ctx)
	grp.Go(func() error { return svc.Run(gctx) })
	up := make(chan [2]string, 1)
	grp.Go(func() error {
		return server.Serve(gctx, log, httpAddr, NewHTTPHandler(mux, log), grpcAddr, g, hs, up)
	})
	select {
	case at := <-up:
		log.Info("serving", "http", at[0], "grpc", at[1])
		if ready != nil {
			ready <- at
		}
	case <-gctx.Done():
	}
	return grp.Wait()
}
