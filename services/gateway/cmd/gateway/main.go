// Command gateway runs the gateway service as its own process.
package main

import (
	"context"

	"github.com/callvault/callvault/pkg/cdrclient"
	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/pkg/policyclient"
	"github.com/callvault/callvault/pkg/routerclient"
	"github.com/callvault/callvault/services/gateway"
)

func main() {
	platform.Main("gateway", func(ctx context.Context) error {
		var cfg gateway.Config
		return platform.RunService(ctx, "gateway", &cfg, &cfg.Platform, func(d *platform.Deps) (platform.Service, error) {
			// The policy service owns the domain registry: reach it over
			// gRPC when its address is set.
			var domains gateway.Domains
			if cfg.PolicyAddr != "" {
				c, _, err := policyclient.Dial(cfg.PolicyAddr)
				if err != nil {
					return nil, err
				}
				domains = c
			}
			gw := gateway.New(d, domains)
			// The policy service serves the CDR ledger too, on the same
			// gRPC port.
			if cfg.PolicyAddr != "" {
				c, _, err := cdrclient.Dial(cfg.PolicyAddr)
				if err != nil {
					return nil, err
				}
				gw.SetCdrs(c)
			}
			if cfg.RouterAddr != "" {
				c, _, err := routerclient.Dial(cfg.RouterAddr)
				if err != nil {
					return nil, err
				}
				gw.SetArchive(c)
			}
			return gw, nil
		}, func() (*string, *string) { return &cfg.HTTPAddr, &cfg.GRPCAddr })
	})
}
