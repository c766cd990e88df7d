// Command culler runs the culler service as its own process.
package main

import (
	"context"

	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/services/culler"
)

func main() {
	platform.Main("culler", func(ctx context.Context) error {
		var cfg culler.Config
		return platform.RunService(ctx, "culler", &cfg, &cfg.Platform, func(d *platform.Deps) (platform.Service, error) {
			return culler.New(d), nil
		}, func() (*string, *string) { return &cfg.HTTPAddr, &cfg.GRPCAddr })
	})
}
