// Command policy runs the policy service as its own process.
package main

import (
	"context"

	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/services/policy"
)

func main() {
	platform.Main("policy", func(ctx context.Context) error {
		var cfg policy.Config
		return platform.RunService(ctx, "policy", &cfg, &cfg.Platform, func(d *platform.Deps) (platform.Service, error) {
			return policy.New(d, cfg.Settings)
		}, func() (*string, *string) { return &cfg.HTTPAddr, &cfg.GRPCAddr })
	})
}
