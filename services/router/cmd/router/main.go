// Command router runs the router service as its own process.
package main

import (
	"context"

	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/services/router"
)

func main() {
	platform.Main("router", func(ctx context.Context) error {
		var cfg router.Config
		return platform.RunService(ctx, "router", &cfg, &cfg.Platform, func(d *platform.Deps) (platform.Service, error) {
			return router.New(d), nil
		}, func() (*string, *string) { return &cfg.HTTPAddr, &cfg.GRPCAddr })
	})
}
