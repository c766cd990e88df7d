package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/pkg/testenv"
	"github.com/callvault/callvault/services/callvault"
	"github.com/callvault/callvault/services/gateway"
	"github.com/callvault/callvault/services/policy"
)

// TestAdminCommands: the CLI provisions a domain, issues, lists and
// revokes a token over the gRPC API, and a revoked token is refused.
func TestAdminCommands(t *testing.T) {
	store, err := cds.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := testenv.Deps(t, store)
	pol, err := policy.New(d, policy.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	g, _ := platform.NewGRPCServer(d.Tokens, d.Log)
	pol.RegisterGRPC(g)
	gateway.New(d, pol).RegisterGRPC(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)

	var cfg callvault.Config
	cfg.GRPCAddr, cfg.DataDir, cfg.Platform.BootstrapToken = lis.Addr().String(), t.TempDir(), testenv.BootstrapToken
	run := func(args ...string) ([]map[string]any, error) {
		t.Helper()
		var out bytes.Buffer
		err := admin(context.Background(), cfg, args[0], args[1:], &out)
		var rows []map[string]any
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			if line == "" {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("output %q: %v", line, err)
			}
			rows = append(rows, m)
		}
		return rows, err
	}

	rows, err := run("domain", "add", "a.example", "-reseller", "r1")
	if err != nil || len(rows) != 1 || rows[0]["created"] != true {
		t.Fatalf("domain add: %v, %v", rows, err)
	}
	if _, err := run("domain", "add", "-reseller", "r2", "a.example"); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("domain add to another reseller: %v", err)
	}
	rows, err = run("token", "issue", "-name", "pbx", "-level", "domain", "-reseller", "r1", "-domain", "a.example", "-expires-in", "1h")
	if err != nil || len(rows) != 1 {
		t.Fatalf("token issue: %v, %v", rows, err)
	}
	secret, _ := rows[0]["token"].(string)
	info, _ := rows[0]["info"].(map[string]any)
	id, _ := info["id"].(string)
	if secret == "" || id == "" || info["expires_at"] == nil {
		t.Fatalf("token issue printed %v", rows)
	}
	rows, err = run("token", "list")
	if err != nil || len(rows) != 1 || rows[0]["id"] != id || strings.Contains(rows[0]["name"].(string)+id, secret) {
		t.Fatalf("token list: %v, %v", rows, err)
	}
	rows, err = run("token", "revoke", id)
	if err != nil || len(rows) != 1 || rows[0]["revoked"] != true {
		t.Fatalf("token revoke: %v, %v", rows, err)
	}
	t.Setenv("CALLVAULT_TOKEN", secret)
	if _, err := run("token", "list"); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("the revoked token still works: %v", err)
	}
	if _, err := run("domain", "add"); err == nil || !strings.Contains(err.Error(), "exactly one domain") {
		t.Fatalf("domain add without a domain: %v", err)
	}
}
