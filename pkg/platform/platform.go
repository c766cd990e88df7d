// Package platform turns configuration into live connections: NATS
// JetStream, Redis and the CDS. Every service's main and the single binary
// build their dependencies through it.
package platform

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	neturl "net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/obs"
)

// Config is shared by every service. Each is read from the environment.
type Config struct {
	NATSURL string `env:"CALLVAULT_NATS_URL, default=nats://127.0.0.1:4222"`
	// NATSCreds is a NATS credentials file (user JWT and nkey seed) for
	// deployments with accounts; NATSUser and NATSPassword are the simpler
	// alternative. Credentials in the URL work too, but are redacted
	// wherever the URL is logged.
	NATSCreds       string        `env:"CALLVAULT_NATS_CREDS"`
	NATSUser        string        `env:"CALLVAULT_NATS_USER"`
	NATSPassword    string        `env:"CALLVAULT_NATS_PASSWORD"`
	RedisURL        string        `env:"REDIS_URL, default=redis://127.0.0.1:6379/0"`
	Namespace       string        `env:"CALLVAULT_NAMESPACE, default=cv"`
	StreamReplicas  int           `env:"CALLVAULT_STREAM_REPLICAS, default=1"`
	DuplicateWindow time.Duration `env:"CALLVAULT_DUPLICATE_WINDOW, default=1h"`
	// CdrStreamMaxBytes bounds the CDRs waiting for the segment writer.
	CdrStreamMaxBytes int64  `env:"CALLVAULT_CDR_STREAM_MAX_BYTES, default=1073741824"`
	LogLevel          string `env:"CALLVAULT_LOG_LEVEL, default=info"`
	BootstrapToken    string `env:"CALLVAULT_BOOTSTRAP_TOKEN"`
	CDS               CDSConfig
}

// CDSConfig picks the CDS backend: S3 when CALLVAULT_S3_BUCKET is set,
// otherwise a local directory.
type CDSConfig struct {
	Dir         string `env:"CALLVAULT_CDS_DIR"`
	S3Endpoint  string `env:"CALLVAULT_S3_ENDPOINT"`
	S3Region    string `env:"CALLVAULT_S3_REGION, default=us-east-1"`
	S3Bucket    string `env:"CALLVAULT_S3_BUCKET"`
	S3AccessKey string `env:"CALLVAULT_S3_ACCESS_KEY"`
	S3SecretKey string `env:"CALLVAULT_S3_SECRET_KEY"`
	S3PathStyle bool   `env:"CALLVAULT_S3_PATH_STYLE, default=true"`
}

// Deps are the live connections of one process.
type Deps struct {
	Log      *slog.Logger
	Names    bus.Names
	NC       *nats.Conn
	JS       jetstream.JetStream
	Redis    redis.UniversalClient
	CDS      cds.Store
	Registry *prometheus.Registry
	Health   *obs.Health
	Bus      *bus.Metrics
	Tokens   *auth.Store
}

// NATSOptions are the client options that authenticate as configured.
func (c Config) NATSOptions() []nats.Option {
	var opts []nats.Option
	if c.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(c.NATSCreds))
	}
	if c.NATSUser != "" {
		opts = append(opts, nats.UserInfo(c.NATSUser, c.NATSPassword))
	}
	return opts
}

// ConnectNATS connects to url, retrying until ctx ends, and returns the
// JetStream context. With sync_interval always, async publishing needs a
// longer stall wait than the default. extra carries the credentials.
func ConnectNATS(ctx context.Context, url, name string, log *slog.Logger, extra ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	opts := append([]nats.Option{
		nats.Name(name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", "url", c.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Warn("nats error", "err", err) }),
	}, extra...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect nats %s: %w", RedactURL(url), err)
	}
	for nc.Status() != nats.CONNECTED {
		select {
		case <-ctx.Done():
			nc.Close()
			err := ctx.Err()
			if lerr := nc.LastError(); lerr != nil {
				err = fmt.Errorf("%w (last error: %w)", err, lerr)
			}
			return nil, nil, fmt.Errorf("connect nats %s: %w", RedactURL(url), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// ConnectRedis connects to Redis and checks it answers. The URL chooses
// the client: redis:// or rediss:// is one node (go-redis ParseURL);
// redis-cluster:// or rediss-cluster:// is a Redis Cluster, named by one
// or more seed nodes separated by commas
// (redis-cluster://user:pass@10.0.0.1:6379,10.0.0.2:6379), and any
// query options of go-redis's ParseClusterURL. Every key callvault uses
// in one script or transaction shares a hash tag, so both work alike.
func ConnectRedis(ctx context.Context, url string) (redis.UniversalClient, error) {
	rdb, addr, err := NewRedisClient(url)
	if err != nil {
		// A parse error quotes the whole URL, password included.
		var ue *neturl.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if strings.Contains(url, "@") {
			// go-redis quotes what it misread, which may be the tail of
			// the password (a "/" or "?" in it ends the host early).
			err = errors.New("does not parse")
		}
		return nil, fmt.Errorf("redis url %s: %w", RedactURL(url), err)
	}
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redis %s: %w", addr, err)
	}
	return rdb, nil
}

// NewRedisClient builds the client a Redis URL names (see ConnectRedis)
// without contacting it, and returns the address it names for messages.
func NewRedisClient(url string) (redis.UniversalClient, string, error) {
	if rest, ok := cutScheme(url, "redis-cluster://", "rediss-cluster://"); ok {
		opts, err := parseClusterURL(rest)
		if err != nil {
			return nil, "", fmt.Errorf("redis cluster url: %w", err)
		}
		opts.DialTimeout = 2 * time.Second
		return redis.NewClusterClient(opts), strings.Join(opts.Addrs, ","), nil
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, "", fmt.Errorf("redis url: %w", err)
	}
	opts.DialTimeout = 2 * time.Second
	return redis.NewClient(opts), opts.Addr, nil
}

// cutScheme reports whether url starts with one of the cluster schemes and
// returns it rewritten to the single-node scheme of the same security.
func cutScheme(url string, plain, tls string) (string, bool) {
	switch {
	case strings.HasPrefix(url, plain):
		return "redis://" + strings.TrimPrefix(url, plain), true
	case strings.HasPrefix(url, tls):
		return "rediss://" + strings.TrimPrefix(url, tls), true
	}
	return "", false
}

// parseClusterURL reads redis://[user:pass@]host:port[,host:port...][?opts]
// into cluster options: the first address is the URL's host, the others
// become go-redis's addr parameters. A database number is refused: a
// cluster has only database 0.
func parseClusterURL(u string) (*redis.ClusterOptions, error) {
	scheme, rest, _ := strings.Cut(u, "://")
	auth, hosts := "", rest
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		auth, hosts = rest[:i+1], rest[i+1:]
	}
	query := ""
	if i := strings.IndexAny(hosts, "/?"); i >= 0 {
		hosts, query = hosts[:i], hosts[i:]
	}
	if path, _, _ := strings.Cut(query, "?"); path != "" && path != "/" && path != "/0" {
		return nil, fmt.Errorf("a cluster has only database 0, not %q", strings.TrimPrefix(path, "/"))
	}
	_, params, _ := strings.Cut(query, "?")
	addrs := strings.Split(hosts, ",")
	if addrs[0] == "" {
		return nil, errors.New("no cluster node address")
	}
	for _, a := range addrs[1:] {
		if a == "" {
			return nil, errors.New("an empty cluster node address")
		}
		if params != "" {
			params += "&"
		}
		params += "addr=" + a
	}
	out := scheme + "://" + auth + addrs[0]
	if params != "" {
		out += "?" + params
	}
	return redis.ParseClusterURL(out)
}

// OpenCDS opens the configured store. dataDir is the fallback root for the
// local backend.
func OpenCDS(ctx context.Context, c CDSConfig, dataDir string) (cds.Store, string, error) {
	if c.S3Bucket != "" {
		s, err := cds.NewS3(cds.S3Config{Endpoint: c.S3Endpoint, Region: c.S3Region, Bucket: c.S3Bucket,
			AccessKey: c.S3AccessKey, SecretKey: c.S3SecretKey, PathStyle: c.S3PathStyle})
		if err != nil {
			return nil, "", err
		}
		if err := s.EnsureBucket(ctx); err != nil {
			return nil, "", err
		}
		return s, "s3://" + c.S3Bucket, nil
	}
	dir := c.Dir
	if dir == "" {
		if dataDir == "" {
			return nil, "", errors.New("cds: set CALLVAULT_S3_BUCKET or CALLVAULT_CDS_DIR")
		}
		dir = filepath.Join(dataDir, "cds")
	}
	s, err := cds.NewFS(dir)
	if err != nil {
		return nil, "", err
	}
	return s, "file://" + dir, nil
}

// Open connects everything a standalone service needs.
func Open(ctx context.Context, cfg Config, service string, log *slog.Logger) (*Deps, error) {
	names, err := bus.NewNames(cfg.Namespace)
	if err != nil {
		return nil, err
	}
	nc, js, err := ConnectNATS(ctx, cfg.NATSURL, "callvault-"+service, log, cfg.NATSOptions()...)
	if err != nil {
		return nil, err
	}
	rdb, err := ConnectRedis(ctx, cfg.RedisURL)
	if err != nil {
		nc.Close()
		return nil, err
	}
	store, where, err := OpenCDS(ctx, cfg.CDS, "")
	if err != nil {
		nc.Close()
		rdb.Close()
		return nil, err
	}
	log.Info("connected", "nats", nc.ConnectedUrlRedacted(), "cds", where)
	return Assemble(ctx, cfg, log, names, nc, js, rdb, store)
}

// Assemble finishes Deps from existing connections: it ensures the streams
// and registers the readiness checks.
func Assemble(ctx context.Context, cfg Config, log *slog.Logger, names bus.Names, nc *nats.Conn, js jetstream.JetStream, rdb redis.UniversalClient, store cds.Store) (*Deps, error) {
	if err := bus.EnsureStreams(ctx, js, names, bus.StreamOptions{Replicas: cfg.StreamReplicas, DuplicateWindow: cfg.DuplicateWindow, CdrMaxBytes: cfg.CdrStreamMaxBytes}); err != nil {
		return nil, err
	}
	reg := obs.NewRegistry()
	h := obs.NewHealth(log)
	h.Add("nats", func(context.Context) error {
		if s := nc.Status(); s != nats.CONNECTED {
			return fmt.Errorf("nats: %s", s)
		}
		return nil
	})
	h.Add("redis", func(ctx context.Context) error { return rdb.Ping(ctx).Err() })
	tokens, err := auth.NewStore(rdb, js, names, cfg.BootstrapToken, catalog.New(rdb, names.Namespace()))
	if err != nil {
		return nil, err
	}
	return &Deps{Log: log, Names: names, NC: nc, JS: js, Redis: rdb, CDS: store, Registry: reg, Health: h, Bus: bus.NewMetrics(reg), Tokens: tokens}, nil
}

// Close releases the connections. NATS is drained so buffered publishes
// and acks are flushed.
func (d *Deps) Close() {
	if d.NC != nil {
		_ = d.NC.Drain()
		for d.NC.IsDraining() {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if d.Redis != nil {
		_ = d.Redis.Close()
	}
}

// RedisStateInterval is how often readiness re-checks Redis against the
// streams.
const RedisStateInterval = 10 * time.Second

// RequireCurrentRedis makes readiness fail while Redis is behind the
// streams, for a service that serves from Redis but does not rebuild it
// (the policy service does). The check logs why; call it once at start.
func (d *Deps) RequireCurrentRedis(log *slog.Logger) *catalog.LagCheck {
	c := catalog.NewLagCheck(d.JS, d.Names, catalog.New(d.Redis, d.Names.Namespace()), log, RedisStateInterval)
	d.Health.Add("redis-state", c.Check)
	return c
}
