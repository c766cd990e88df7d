// Command ingest runs call-ingest as its own process.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/services/ingest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := realMain(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "ingest:", err)
		os.Exit(1)
	}
}

func realMain(ctx context.Context) error {
	var cfg ingest.Config
	return platform.RunService(ctx, "ingest", &cfg, &cfg.Platform, func(d *platform.Deps) (platform.Service, error) {
		return ingest.New(d, cfg.Limits), nil
	}, func() (*string, *string) { return &cfg.HTTPAddr, &cfg.GRPCAddr })
}
