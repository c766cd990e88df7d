// Command policy runs the policy service as its own process.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/services/policy"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := realMain(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "policy:", err)
		os.Exit(1)
	}
}

func realMain(ctx context.Context) error {
	var cfg policy.Config
	return platform.RunService(ctx, "policy", &cfg, &cfg.Platform, func(d *platform.Deps) (platform.Service, error) {
		return policy.New(d), nil
	}, func() (*string, *string) { return &cfg.HTTPAddr, &cfg.GRPCAddr })
}
