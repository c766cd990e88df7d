// Command callvault runs every service in one process ("serve", the
// default) and carries the operator subcommands.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/sethvargo/go-envconfig"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/obs"
	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/services/callvault"
	"github.com/callvault/callvault/services/policy"
	"github.com/callvault/callvault/services/policy/ledger"
)

const usage = `usage: callvault <command> [flags]

commands:
  serve            run every service in one process (the default)
  dlq list         print dead letters as JSON lines (-data-dir of the serve)
  replay catalog   rebuild the Redis catalog and tokens from the streams
  replay cdr-index rebuild the CDR partition index from the segment objects
  domain add D     provision domain D (-reseller R; a reseller token may omit it)
  domain list      list the provisioned domains the token covers (-reseller R)
  token issue      issue a token (-name -level -reseller -domain -user -expires-in)
  token list       list the tokens inside the token's scope (never their secrets)
  token revoke ID  revoke a token by its id
  help             show this text

Configuration comes from environment variables (see README.md); flags
override the listen addresses:
  callvault serve -http-addr 127.0.0.1:8080 -grpc-addr 127.0.0.1:9090 -data-dir ./data

The domain and token commands call the running server's gRPC API
(-grpc-addr) with CALLVAULT_TOKEN, or the bootstrap token of the data
directory, and print JSON lines:
  callvault domain add a.example -reseller r1
  CALLVAULT_TOKEN=... callvault token issue -name pbx -level domain -reseller r1 -domain a.example -expires-in 720h
`

func main() {
	platform.Main("callvault", func(ctx context.Context) error { return realMain(ctx, os.Args[1:]) })
}

func realMain(ctx context.Context, args []string) error {
	var cfg callvault.Config
	if err := envconfig.Process(ctx, &cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	cmd := "serve"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	log := obs.NewLogger(os.Stderr, cfg.Platform.LogLevel)
	switch cmd {
	case "serve":
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		fs.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "HTTP listen address")
		fs.StringVar(&cfg.GRPCAddr, "grpc-addr", cfg.GRPCAddr, "gRPC listen address")
		fs.StringVar(&cfg.NATSListen, "nats-listen", cfg.NATSListen, "embedded NATS listen address")
		fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "data directory")
		if err := fs.Parse(args); err != nil {
			return err
		}
		return callvault.New(cfg, log, os.Stdout).Run(ctx)
	case "dlq":
		fs := flag.NewFlagSet("dlq", flag.ContinueOnError)
		url := fs.String("nats-url", "", "NATS URL (default: the embedded server of -data-dir)")
		fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "data directory of the running serve")
		from := fs.Uint64("from", 1, "first sequence")
		limit := fs.Int("limit", 100, "how many")
		if len(args) == 0 || args[0] != "list" {
			return errors.New("dlq: want 'dlq list'")
		}
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		natsURL, opts := *url, cfg.Platform.NATSOptions()
		if natsURL == "" {
			var err error
			if natsURL, opts, err = callvault.CLINATS(cfg); err != nil {
				return err
			}
		}
		dls, err := callvault.DeadLetters(ctx, natsURL, opts, cfg.Platform.Namespace, *from, *limit)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(os.Stdout)
		for _, dl := range dls {
			if err := enc.Encode(dl); err != nil {
				return err
			}
		}
		return nil
	case "replay":
		if len(args) == 0 || (args[0] != "catalog" && args[0] != "cdr-index") {
			return errors.New("replay: want 'replay catalog' or 'replay cdr-index'")
		}
		fs := flag.NewFlagSet("replay", flag.ContinueOnError)
		fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "data directory of the running serve")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if args[0] == "cdr-index" {
			return replayCdrIndex(ctx, cfg, log, os.Stdout)
		}
		return replayCatalog(ctx, cfg, log)
	case "domain", "token":
		return admin(ctx, cfg, cmd, args, os.Stdout)
	case "help", "-h", "--help":
		fmt.Print(usage)
		return nil
	default:
		fmt.Fprint(os.Stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

// replayCdrIndex rebuilds the CDR partition index from the segment
// objects in the CDS: it needs Redis and the CDS, not the streams.
func replayCdrIndex(ctx context.Context, cfg callvault.Config, log *slog.Logger, out io.Writer) error {
	names, err := bus.NewNames(cfg.Platform.Namespace)
	if err != nil {
		return err
	}
	rdb, err := platform.ConnectRedis(ctx, cfg.Platform.RedisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	store, where, err := platform.OpenCDS(ctx, cfg.Platform.CDS, cfg.DataDir)
	if err != nil {
		return err
	}
	st, err := ledger.New(nil, names, rdb, store, nil, cfg.Policy.Ledger, log, nil).RebuildIndex(ctx)
	if err != nil {
		return err
	}
	log.Info("CDR index rebuilt", "cds", where, "domains", st.Domains, "partitions", st.Partitions, "segments", st.Segments)
	fmt.Fprintf(out, "rebuilt the CDR index from %s: %d domains, %d partitions, %d segments (%d replaced by a compaction left out, %d other objects skipped)\n",
		where, st.Domains, st.Partitions, st.Segments, st.Replaced, st.Skipped)
	return nil
}

// replayCatalog rebuilds Redis from the streams of a running installation.
func replayCatalog(ctx context.Context, cfg callvault.Config, log *slog.Logger) error {
	names, err := bus.NewNames(cfg.Platform.Namespace)
	if err != nil {
		return err
	}
	url, opts, err := callvault.CLINATS(cfg)
	if err != nil {
		return err
	}
	nc, js, err := platform.ConnectNATS(ctx, url, "callvault-cli", log, opts...)
	if err != nil {
		return err
	}
	rdb, err := platform.ConnectRedis(ctx, cfg.Platform.RedisURL)
	if err != nil {
		nc.Close()
		return err
	}
	d, err := platform.Assemble(ctx, cfg.Platform, log, names, nc, js, rdb, nil)
	if err != nil {
		nc.Close()
		return err
	}
	defer d.Close()
	pol, err := policy.New(d, cfg.Policy)
	if err != nil {
		return err
	}
	n, err := callvault.Rebuild(ctx, pol)
	if err != nil {
		return err
	}
	log.Info("replayed", "decisions", n)
	fmt.Printf("replayed the config stream and %d recorded decisions\n", n)
	return nil
}
