package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/callvault/callvault/proto/callvault/auth/v1"
	policyv1 "github.com/callvault/callvault/proto/callvault/policy/v1"
	"github.com/callvault/callvault/services/callvault"
)

// The admin subcommands call the gRPC API of a running installation with a
// token, so they are authorized exactly like any other client: the token
// comes from CALLVAULT_TOKEN, or else the bootstrap token (the variable,
// or the file the server keeps in its data directory).

// parseMixed parses flags that may come before or after the positional
// arguments and returns the positional ones.
func parseMixed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos, args = append(pos, args[0]), args[1:]
	}
}

// adminToken finds the token the CLI acts with; it is never printed.
func adminToken(cfg callvault.Config) (string, error) {
	if t := os.Getenv("CALLVAULT_TOKEN"); t != "" {
		return t, nil
	}
	if cfg.Platform.BootstrapToken != "" {
		return cfg.Platform.BootstrapToken, nil
	}
	raw, err := os.ReadFile(filepath.Join(cfg.DataDir, "bootstrap-token"))
	if err != nil {
		return "", fmt.Errorf("no token: set CALLVAULT_TOKEN (or run where the server's data directory is): %w", err)
	}
	return strings.TrimSpace(string(raw)), nil
}

// admin runs "domain ..." and "token ..." against the server at
// cfg.GRPCAddr (or -grpc-addr), printing one JSON object per line.
func admin(ctx context.Context, cfg callvault.Config, cmd string, args []string, out io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%s: want a subcommand (see callvault help)", cmd)
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet(cmd+" "+sub, flag.ContinueOnError)
	addr := fs.String("grpc-addr", cfg.GRPCAddr, "gRPC address of the running server")
	reseller := fs.String("reseller", "", "reseller")
	name := fs.String("name", "", "token name")
	level := fs.String("level", "", "token level: system, reseller, domain or user")
	domain := fs.String("domain", "", "domain of a domain or user token")
	user := fs.String("user", "", "user of a user token")
	expires := fs.Duration("expires-in", 0, "token lifetime, e.g. 720h; 0 for no expiry")
	pos, err := parseMixed(fs, args)
	if err != nil {
		return err
	}
	token, err := adminToken(cfg)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connect %s: %w", *addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	one := func(what string) (string, error) {
		if len(pos) != 1 {
			return "", fmt.Errorf("%s %s: want exactly one %s", cmd, sub, what)
		}
		return pos[0], nil
	}
	pol, tok := policyv1.NewPolicyServiceClient(conn), authv1.NewTokenServiceClient(conn)
	var msgs []proto.Message
	switch cmd + " " + sub {
	case "domain add":
		d, err := one("domain")
		if err != nil {
			return err
		}
		res, err := pol.ProvisionDomain(ctx, &policyv1.ProvisionDomainRequest{Domain: d, Reseller: *reseller})
		if err != nil {
			return err
		}
		msgs = append(msgs, res)
	case "domain list":
		res, err := pol.ListDomains(ctx, &policyv1.ListDomainsRequest{Reseller: *reseller})
		if err != nil {
			return err
		}
		for _, d := range res.GetDomains() {
			msgs = append(msgs, d)
		}
	case "token issue":
		req := &authv1.IssueTokenRequest{Name: *name, Level: *level, Reseller: *reseller, Domain: *domain, User: *user}
		if *expires > 0 {
			req.ExpiresAt = timestamppb.New(time.Now().Add(*expires))
		}
		res, err := tok.IssueToken(ctx, req)
		if err != nil {
			return err
		}
		msgs = append(msgs, res)
	case "token list":
		res, err := tok.ListTokens(ctx, &authv1.ListTokensRequest{})
		if err != nil {
			return err
		}
		for _, t := range res.GetTokens() {
			msgs = append(msgs, t)
		}
	case "token revoke":
		id, err := one("token id")
		if err != nil {
			return err
		}
		res, err := tok.RevokeToken(ctx, &authv1.RevokeTokenRequest{Id: id})
		if err != nil {
			return err
		}
		msgs = append(msgs, res.GetInfo())
	default:
		return errors.New("unknown command " + cmd + " " + sub)
	}
	for _, m := range msgs {
		raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
		if err != nil {
			return err
		}
		var compact json.RawMessage = raw
		line, err := json.Marshal(compact)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(out, "%s\n", line); err != nil {
			return err
		}
	}
	return nil
}
