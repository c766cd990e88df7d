// Command ingest runs the ingest service as its own process.
package main

import (
	"context"

	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/services/ingest"
)

func main() {
	platform.Main("ingest", func(ctx context.Context) error {
		var cfg ingest.Config
		return platform.RunService(ctx, "ingest", &cfg, &cfg.Platform, func(d *platform.Deps) (platform.Service, error) {
			return ingest.New(d, cfg.Limits, nil), nil // uploads to unprovisioned domains are refused
		}, func() (*string, *string) { return &cfg.HTTPAddr, &cfg.GRPCAddr })
	})
}
