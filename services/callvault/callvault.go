// Package callvault runs every callvault service in one process: an
// embedded NATS server with JetStream on local disk, a CDS on the local
// filesystem (or S3), and Redis at REDIS_URL or, where none answers, an
// in-process Redis-protocol server whose catalog is rebuilt from the
// streams at start.
package callvault

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/pkg/server"
	"github.com/callvault/callvault/services/culler"
	"github.com/callvault/callvault/services/gateway"
	"github.com/callvault/callvault/services/ingest"
	"github.com/callvault/callvault/services/policy"
	"github.com/callvault/callvault/services/router"
)

// Config of the single binary.
type Config struct {
	Platform   platform.Config
	DataDir    string `env:"CALLVAULT_DATA_DIR, default=./data"`
	HTTPAddr   string `env:"CALLVAULT_HTTP_ADDR, default=127.0.0.1:8080"`
	GRPCAddr   string `env:"CALLVAULT_GRPC_ADDR, default=127.0.0.1:9090"`
	NATSListen string `env:"CALLVAULT_NATS_LISTEN, default=127.0.0.1:4223"`
	// ExternalNATS uses CALLVAULT_NATS_URL instead of the embedded server.
	ExternalNATS bool `env:"CALLVAULT_EXTERNAL_NATS, default=false"`
	Limits       ingest.Limits
	Policy       policy.Settings
	Router       router.Settings
}

// EmbeddedRedis is the REDIS_URL value that skips probing and uses the
// in-process server at once.
const EmbeddedRedis = "embedded"

// App is a running single-binary callvault.
type App struct {
	cfg     Config
	log     *slog.Logger
	out     io.Writer
	cleanup []func()
}

// New returns an App; out receives the human-readable start banner.
func New(cfg Config, log *slog.Logger, out io.Writer) *App {
	return &App{cfg: cfg, log: log, out: out}
}

func (a *App) defer_(f func()) { a.cleanup = append(a.cleanup, f) }

func (a *App) close() {
	for i := len(a.cleanup) - 1; i >= 0; i-- {
		a.cleanup[i]()
	}
}

// Run starts everything and serves until ctx ends, then stops in order:
// listeners, consumers (drained), connections, the embedded servers.
func (a *App) Run(ctx context.Context) error {
	defer a.close()
	// The lock comes first: nothing may touch the JetStream store of a
	// directory another process serves.
	lock, err := LockDataDir(a.cfg.DataDir)
	if err != nil {
		return err
	}
	a.defer_(lock.Unlock)
	tokenNote, err := a.bootstrapToken()
	if err != nil {
		return err
	}
	cfg := a.cfg
	natsURL, natsNote, natsOpts := cfg.Platform.NATSURL, "external", cfg.Platform.NATSOptions()
	if !cfg.ExternalNATS {
		dir := filepath.Join(cfg.DataDir, "jetstream")
		credsPath := CredentialsPath(cfg.DataDir)
		creds, err := bus.LoadOrCreateCredentials(credsPath)
		if err != nil {
			return err
		}
		emb, err := bus.StartEmbedded(cfg.NATSListen, dir, creds)
		if err != nil {
			return err
		}
		a.defer_(emb.Shutdown)
		natsURL, natsOpts = emb.ClientURL(), creds.Options()
		natsNote = "embedded JetStream in " + dir + ", fsync before ack; credentials in " + credsPath
	}
	natsShown := platform.RedactURL(natsURL)
	names, err := bus.NewNames(cfg.Platform.Namespace)
	if err != nil {
		return err
	}
	nc, js, err := platform.ConnectNATS(ctx, natsURL, "callvault", a.log, natsOpts...)
	if err != nil {
		return err
	}
	rdb, redisNote, err := a.redis(ctx)
	if err != nil {
		nc.Close()
		return err
	}
	store, cdsNote, err := platform.OpenCDS(ctx, cfg.Platform.CDS, cfg.DataDir)
	if err != nil {
		nc.Close()
		return err
	}
	d, err := platform.Assemble(ctx, cfg.Platform, a.log, names, nc, js, rdb, store)
	if err != nil {
		nc.Close()
		return err
	}
	a.defer_(d.Close)

	pol, err := policy.New(d, cfg.Policy)
	if err != nil {
		return err
	}
	if err := a.secretKey(&cfg.Router); err != nil {
		return err
	}
	rt, err := router.New(d, cfg.Router, policyRetention{pol})
	if err != nil {
		return err
	}
	gw := gateway.New(d, pol)
	gw.SetArchive(rt)
	gw.SetCdrs(pol.Ledger())
	services := []platform.Service{ingest.New(d, cfg.Limits, pol), pol, rt, culler.New(d), gw}
	// Nothing is served from Redis before it has caught up with the
	// streams: an in-process Redis starts empty, and so does a Redis that
	// restarted without its data or a fresh one on the default port.
	why, events, err := pol.CatchUp(ctx)
	if err != nil {
		return fmt.Errorf("redis is behind the streams (%s) and could not be rebuilt: %w", why, err)
	}
	if why != "" {
		redisNote += fmt.Sprintf("; %s: rebuilt from the streams (%d decisions replayed, config and tokens re-applied)", why, events)
		a.log.Warn("Redis rebuilt from the streams before serving", "why", why, "decisions", events)
	}

	mux := http.NewServeMux()
	d.Health.Register(mux, d.Registry)
	g, hs := platform.NewGRPCServer(d.Tokens, a.log)
	for _, s := range services {
		s.RegisterHTTP(mux, d.Tokens)
		s.RegisterGRPC(g)
	}
	grp, gctx := errgroup.WithContext(ctx)
	for _, s := range services {
		grp.Go(func() error { return s.Run(gctx) })
	}
	ready := make(chan [2]string, 1)
	grp.Go(func() error {
		return server.Serve(gctx, a.log, cfg.HTTPAddr, platform.NewHTTPHandler(mux, a.log), cfg.GRPCAddr, g, hs, ready)
	})
	select {
	case at := <-ready:
		a.log.Info("callvault ready", "http", at[0], "grpc", at[1], "nats", natsShown, "cds", cdsNote)
		fmt.Fprintf(a.out, "callvault is up\n  HTTP API  http://%s\n  gRPC      %s (reflection and health on)\n  NATS      %s (%s)\n  Redis     %s\n  CDS       %s\n  token     %s\n",
			at[0], at[1], natsShown, natsNote, redisNote, cdsNote, tokenNote)
	case <-gctx.Done():
	}
	err = grp.Wait()
	a.log.Info("callvault stopped")
	return err
}

// bootstrapToken uses CALLVAULT_BOOTSTRAP_TOKEN, or a token kept in the
// data directory (created on first start, mode 0600). The token itself is
// never logged.
func (a *App) bootstrapToken() (string, error) {
	if a.cfg.Platform.BootstrapToken != "" {
		return "from CALLVAULT_BOOTSTRAP_TOKEN", nil
	}
	path := filepath.Join(a.cfg.DataDir, "bootstrap-token")
	raw, err := os.ReadFile(path)
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist):
		b := make([]byte, 24)
		if _, err := rand.Read(b); err != nil {
			return "", fmt.Errorf("bootstrap token: %w", err)
		}
		raw = []byte("cvb_" + base64.RawURLEncoding.EncodeToString(b) + "\n")
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			return "", fmt.Errorf("bootstrap token: %w", err)
		}
	default:
		return "", fmt.Errorf("bootstrap token: %w", err)
	}
	a.cfg.Platform.BootstrapToken = strings.TrimSpace(string(raw))
	return "system-scope bootstrap token in " + path, nil
}

// secretKey uses CALLVAULT_SECRET_KEY, or a key kept in the data
// directory (created on first start, mode 0600), which seals the secrets
// of archive configurations. The key itself is never logged.
func (a *App) secretKey(set *router.Settings) error {
	if set.SecretKey != "" {
		return nil
	}
	path := filepath.Join(a.cfg.DataDir, "secret-key")
	raw, err := os.ReadFile(path)
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist):
		spec, err := router.NewSecretKeySpec("local-1")
		if err != nil {
			return fmt.Errorf("secret key: %w", err)
		}
		raw = []byte(spec + "\n")
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			return fmt.Errorf("secret key: %w", err)
		}
	default:
		return fmt.Errorf("secret key: %w", err)
	}
	set.SecretKey = strings.TrimSpace(string(raw))
	a.log.Info("archive configuration secrets are sealed with the key kept in the data directory", "path", path)
	return nil
}

// policyRetention answers the router's delete-by question from the policy
// service in this process.
type policyRetention struct{ pol *policy.Service }

func (r policyRetention) DeleteBy(ctx context.Context, domain, id string) (time.Time, error) {
	ex, err := r.pol.Explain(ctx, auth.Principal{Name: "router", Level: auth.LevelSystem}, domain, id)
	if err != nil {
		return time.Time{}, err
	}
	return ex.DeleteBy, nil
}

// redis connects to REDIS_URL or falls back to an in-process server. The
// fallback holds nothing at start; the catch-up before serving fills it.
func (a *App) redis(ctx context.Context) (redis.UniversalClient, string, error) {
	url := a.cfg.Platform.RedisURL
	if url != EmbeddedRedis {
		rdb, err := platform.ConnectRedis(ctx, url)
		if err == nil {
			return rdb, platform.RedactURL(url), nil
		}
		a.log.Warn("no Redis answers at REDIS_URL; using an in-process Redis-protocol server, rebuilt from the streams at every start", "err", err)
	}
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		return nil, "", fmt.Errorf("in-process redis: %w", err)
	}
	a.defer_(m.Close)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	a.defer_(func() { _ = rdb.Close() })
	return rdb, "in-process at " + m.Addr(), nil
}

// Rebuild replays the streams into Redis: the policy service's rebuild,
// which re-applies the config stream (tokens included) and the recorded
// decisions. It returns the decisions replayed.
func Rebuild(ctx context.Context, pol *policy.Service) (int, error) {
	n, err := pol.Rebuild(ctx)
	if err != nil {
		return n, fmt.Errorf("rebuild: %w", err)
	}
	return n, nil
}

// CredentialsPath is where the embedded NATS server's credentials live.
func CredentialsPath(dataDir string) string { return filepath.Join(dataDir, "nats-credentials") }

// CLINATS returns the URL and client options the operator commands use:
// the embedded server of cfg.DataDir with its credentials file, or the
// configured external NATS.
func CLINATS(cfg Config) (string, []nats.Option, error) {
	if cfg.ExternalNATS {
		return cfg.Platform.NATSURL, cfg.Platform.NATSOptions(), nil
	}
	path := CredentialsPath(cfg.DataDir)
	if _, err := os.Stat(path); err != nil {
		return "", nil, fmt.Errorf("embedded nats credentials: %w (run the command with the -data-dir of the running serve)", err)
	}
	creds, err := bus.LoadOrCreateCredentials(path)
	if err != nil {
		return "", nil, err
	}
	return "nats://" + cfg.NATSListen, creds.Options(), nil
}

// DeadLetters lists dead letters for the operator CLI.
func DeadLetters(ctx context.Context, natsURL string, opts []nats.Option, namespace string, from uint64, limit int) ([]bus.DeadLetter, error) {
	names, err := bus.NewNames(namespace)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(natsURL, append([]nats.Option{nats.Name("callvault-cli")}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", platform.RedactURL(natsURL), err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	return bus.ListDeadLetters(ctx, js, names, from, limit)
}
