// Package server serves HTTP and gRPC until a context ends, then shuts both
// down gracefully within a bound.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
)

// ShutdownTimeout bounds a graceful stop.
const ShutdownTimeout = 15 * time.Second

// NewGRPC returns a gRPC server with health and reflection registered.
func NewGRPC(opts ...grpc.ServerOption) (*grpc.Server, *health.Server) {
	s := grpc.NewServer(opts...)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	return s, hs
}

// Serve runs the HTTP server on httpAddr and, when g is not nil, the gRPC
// server on grpcAddr, until ctx ends or one of them fails. The listeners
// are opened before Serve returns control to its goroutines, so a caller
// that logs the addresses after ready is closed knows they accept.
func Serve(ctx context.Context, log *slog.Logger, httpAddr string, h http.Handler, grpcAddr string, g *grpc.Server, hs *health.Server, ready chan<- [2]string) error {
	hl, err := net.Listen("tcp", httpAddr)
	if err != nil {
		return fmt.Errorf("listen http %s: %w", httpAddr, err)
	}
	var gl net.Listener
	if g != nil {
		gl, err = net.Listen("tcp", grpcAddr)
		if err != nil {
			hl.Close()
			return fmt.Errorf("listen grpc %s: %w", grpcAddr, err)
		}
	}
	hsrv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	errc := make(chan error, 2)
	go func() { errc <- hsrv.Serve(hl) }()
	grpcAt := ""
	if g != nil {
		grpcAt = gl.Addr().String()
		go func() { errc <- g.Serve(gl) }()
		if hs != nil {
			hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		}
	}
	if ready != nil {
		ready <- [2]string{hl.Addr().String(), grpcAt}
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	if hs != nil {
		hs.Shutdown()
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if err := hsrv.Shutdown(sctx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	if g != nil {
		done := make(chan struct{})
		go func() { g.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-sctx.Done():
			g.Stop()
		}
	}
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) && !errors.Is(serveErr, grpc.ErrServerStopped) {
		return fmt.Errorf("serve: %w", serveErr)
	}
	return nil
}
