// Command gateway runs the gateway service as its own process.
package main

import (
	"context"

	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/services/gateway"
)

func main() {
	platform.Main("gateway", func(ctx context.Context) error {
		var cfg gateway.Config
		return platform.RunService(ctx, "gateway", &cfg, &cfg.Platform, func(d *platform.Deps) (platform.Service, error) {
			return gateway.New(d, nil), nil // provisioning is served where policy runs
		}, func() (*string, *string) { return &cfg.HTTPAddr, &cfg.GRPCAddr })
	})
}
