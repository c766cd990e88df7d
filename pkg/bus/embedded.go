package bus

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Credentials are the user and password a NATS server requires.
type Credentials struct {
	User     string
	Password string
}

// Options returns the client options that present c.
func (c Credentials) Options() []nats.Option {
	if c.User == "" {
		return nil
	}
	return []nats.Option{nats.UserInfo(c.User, c.Password)}
}

// embeddedUser is the one user of the embedded server.
const embeddedUser = "callvault"

// LoadOrCreateCredentials reads the credentials file at path, or creates it
// (mode 0600) with a random password. The file is a few key=value lines;
// the password never leaves it except to the server and its clients.
func LoadOrCreateCredentials(path string) (Credentials, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		b := make([]byte, 24)
		if _, err := rand.Read(b); err != nil {
			return Credentials{}, fmt.Errorf("nats credentials: %w", err)
		}
		c := Credentials{User: embeddedUser, Password: hex.EncodeToString(b)}
		body := "# Credentials of the embedded NATS server. Keep this file private.\nuser=" + c.User + "\npassword=" + c.Password + "\n"
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return Credentials{}, fmt.Errorf("nats credentials %s: %w", path, err)
		}
		_, werr := f.WriteString(body)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return Credentials{}, fmt.Errorf("nats credentials %s: %w", path, werr)
		}
		return c, nil
	}
	if err != nil {
		return Credentials{}, fmt.Errorf("nats credentials %s: %w", path, err)
	}
	var c Credentials
	for _, line := range strings.Split(string(raw), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		switch {
		case !ok:
		case k == "user":
			c.User = v
		case k == "password":
			c.Password = v
		}
	}
	if c.User == "" || c.Password == "" {
		return Credentials{}, fmt.Errorf("nats credentials %s: want user= and password= lines", path)
	}
	return c, nil
}

// Embedded is an in-process NATS server with JetStream on local disk.
type Embedded struct {
	srv *server.Server
}

// StartEmbedded starts a NATS server listening on listen ("host:port") with
// JetStream stored under dir, accepting only clients that present creds, so
// no other local process can publish events or read the streams. It fsyncs
// every write before acknowledging it (sync_interval: always): at the
// default interval an acknowledged write can be lost on power failure.
func StartEmbedded(listen, dir string, creds Credentials) (*Embedded, error) {
	if creds.User == "" || creds.Password == "" {
		return nil, errors.New("embedded nats: credentials are required")
	}
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: listen address %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: listen port %q: %w", portStr, err)
	}
	opts := &server.Options{
		ServerName: "callvault-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		SyncAlways: true,
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: 8 << 20,
		Users:      []*server.User{{Username: creds.User, Password: creds.Password}},
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(15 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded nats: not ready on %s within 15s", listen)
	}
	return &Embedded{srv: srv}, nil
}

// ClientURL is the URL clients connect to. It carries no credentials.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Shutdown stops the server and waits for it to finish writing.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}
