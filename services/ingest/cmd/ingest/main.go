// Command ingest runs the ingest service as its own process.
package main

import (
	"context"

	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/pkg/policyclient"
	"github.com/callvault/callvault/services/ingest"
)

func main() {
	platform.Main("ingest", func(ctx context.Context) error {
		var cfg ingest.Config
		return platform.RunService(ctx, "ingest", &cfg, &cfg.Platform, func(d *platform.Deps) (platform.Service, error) {
			// The policy service owns the domain registry: reach it over
			// gRPC when its address is set.
			var domains ingest.Provisioner
			if cfg.PolicyAddr != "" {
				c, _, err := policyclient.Dial(cfg.PolicyAddr)
				if err != nil {
					return nil, err
				}
				domains = c
			}
			return ingest.New(d, cfg.Limits, domains), nil
		}, func() (*string, *string) { return &cfg.HTTPAddr, &cfg.GRPCAddr })
	})
}
