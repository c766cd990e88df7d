// Command router runs the archive router as its own process.
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
			// Standalone, WORM objects are locked for WORMDefault: the
			// delete-by date is asked of the policy service in process only.
			return router.New(d, cfg.Settings, nil)
		}, func() (*string, *string) { return &cfg.HTTPAddr, &cfg.GRPCAddr })
	})
}
