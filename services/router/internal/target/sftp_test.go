package target

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// sftpTestServer is the OpenSSH server scripts/testenv.sh starts.
type sftpTestServer struct {
	host      string
	port      int
	user      string
	keyPEM    string
	hostKey   string
	otherKey  string
	uploadDir string
}

func sftpServer(t testing.TB) sftpTestServer {
	t.Helper()
	names := []string{
		"CALLVAULT_TEST_SFTP_ADDR", "CALLVAULT_TEST_SFTP_USER", "CALLVAULT_TEST_SFTP_KEY",
		"CALLVAULT_TEST_SFTP_HOSTKEY", "CALLVAULT_TEST_SFTP_OTHER_HOSTKEY", "CALLVAULT_TEST_SFTP_ROOT",
	}
	vals := make(map[string]string, len(names))
	for _, n := range names {
		if vals[n] = os.Getenv(n); vals[n] == "" {
			msg := n + " is not set: run scripts/testenv.sh start and source .test-env/env"
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	host, portText, err := net.SplitHostPort(vals["CALLVAULT_TEST_SFTP_ADDR"])
	if err != nil {
		t.Fatalf("CALLVAULT_TEST_SFTP_ADDR: %v", err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		t.Fatalf("CALLVAULT_TEST_SFTP_ADDR: %v", err)
	}
	key, err := os.ReadFile(vals["CALLVAULT_TEST_SFTP_KEY"])
	if err != nil {
		t.Fatalf("CALLVAULT_TEST_SFTP_KEY: %v", err)
	}
	return sftpTestServer{
		host: host, port: port, user: vals["CALLVAULT_TEST_SFTP_USER"], keyPEM: string(key),
		hostKey: vals["CALLVAULT_TEST_SFTP_HOSTKEY"], otherKey: vals["CALLVAULT_TEST_SFTP_OTHER_HOSTKEY"],
		uploadDir: vals["CALLVAULT_TEST_SFTP_ROOT"],
	}
}

// config logs in with the client key under a root of the test's own,
// which is removed when the test ends.
func (srv sftpTestServer) config(t *testing.T) SFTPConfig {
	t.Helper()
	name := strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	root := path.Join(srv.uploadDir, name+"-"+sftpRandom())
	t.Cleanup(func() {
		// t.Context is done by the time cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, c, err := srv.dialRaw(ctx)
		if err != nil {
			t.Errorf("removing %s: %v", root, err)
			return
		}
		defer s.Close()
		if err := c.RemoveAll(root); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("removing %s: %v", root, err)
		}
	})
	return SFTPConfig{
		Host: srv.host, Port: srv.port, User: srv.user,
		PrivateKeyPEM: srv.keyPEM, HostKeyFingerprint: srv.hostKey, Root: root,
	}
}

func (srv sftpTestServer) dialRaw(ctx context.Context) (*SFTP, *sftp.Client, error) {
	s, err := NewSFTP(SFTPConfig{
		Host: srv.host, Port: srv.port, User: srv.user,
		PrivateKeyPEM: srv.keyPEM, HostKeyFingerprint: srv.hostKey,
	})
	if err != nil {
		return nil, nil, err
	}
	c, err := s.client(ctx)
	if err != nil {
		_ = s.Close()
		return nil, nil, err
	}
	return s, c, nil
}

// raw is a plain SFTP client for looking at the server behind the
// target's back.
func (srv sftpTestServer) raw(t *testing.T) *sftp.Client {
	t.Helper()
	s, c, err := srv.dialRaw(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return c
}

func newTestSFTP(t *testing.T, cfg SFTPConfig) *SFTP {
	t.Helper()
	s, err := NewSFTP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// entries lists dir, nil when it does not exist.
func sftpEntries(t *testing.T, c *sftp.Client, dir string) []string {
	t.Helper()
	fis, err := c.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("listing %s: %v", dir, err)
	}
	var names []string
	for _, fi := range fis {
		names = append(names, fi.Name())
	}
	return names
}

func sftpRandomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func sftpSum(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func sftpReadAll(t *testing.T, s *SFTP, key string, offset, length int64) []byte {
	t.Helper()
	rc, err := s.Open(t.Context(), key, offset, length)
	if err != nil {
		t.Fatalf("Open(%q, %d, %d): %v", key, offset, length, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading %q: %v", key, err)
	}
	return b
}

func sftpWantReason(t *testing.T, err error, want Reason) *Failure {
	t.Helper()
	var f *Failure
	if !errors.As(err, &f) {
		t.Fatalf("error %v (%T) is not a *Failure, want reason %s", err, err, want)
	}
	if f.Reason != want {
		t.Fatalf("reason %s (%v), want %s", f.Reason, err, want)
	}
	t.Logf("as expected: %v", err)
	return f
}

func TestSFTPPutOpenRoundTrip(t *testing.T) {
	t.Parallel()
	srv := sftpServer(t)
	cfg := srv.config(t)
	s := newTestSFTP(t, cfg)
	body := sftpRandomBytes(t, 1<<20)
	key := "tenant-a/2024/06/call-1.opus"

	st, err := s.Put(t.Context(), key, bytes.NewReader(body), PutOptions{Size: int64(len(body)), SHA256: sftpSum(body)})
	if err != nil {
		t.Fatal(err)
	}
	want := Stored{
		Location: fmt.Sprintf("sftp://%s:%d%s/%s", srv.host, srv.port, cfg.Root, key),
		Key:      key, Size: int64(len(body)), SHA256: sftpSum(body),
	}
	if st != want {
		t.Errorf("Put stored %+v, want %+v", st, want)
	}
	if loc := s.Locate(key); loc != st.Location {
		t.Errorf("Locate(%q) = %q, Put said %q", key, loc, st.Location)
	}
	if got := sftpReadAll(t, s, key, 0, -1); !bytes.Equal(got, body) {
		t.Errorf("read back %d bytes hashing to %s, want %d hashing to %s", len(got), sftpSum(got), len(body), sftpSum(body))
	}
	ranges := []struct{ offset, length, wantFrom, wantTo int64 }{
		{offset: 1000, length: 5000, wantFrom: 1000, wantTo: 6000},
		{offset: 0, length: 1, wantFrom: 0, wantTo: 1},
		{offset: 300_000, length: -1, wantFrom: 300_000, wantTo: 1 << 20},
		{offset: 1<<20 - 10, length: 100, wantFrom: 1<<20 - 10, wantTo: 1 << 20},
		{offset: 1 << 20, length: 10, wantFrom: 1 << 20, wantTo: 1 << 20},
		{offset: 5, length: 0, wantFrom: 5, wantTo: 5},
	}
	for _, r := range ranges {
		if got := sftpReadAll(t, s, key, r.offset, r.length); !bytes.Equal(got, body[r.wantFrom:r.wantTo]) {
			t.Errorf("Open(%d, %d) read %d bytes, want bytes %d..%d", r.offset, r.length, len(got), r.wantFrom, r.wantTo)
		}
	}
	if names := sftpEntries(t, srv.raw(t), path.Join(cfg.Root, "tenant-a/2024/06")); len(names) != 1 || names[0] != "call-1.opus" {
		t.Errorf("the key's directory holds %q, want only call-1.opus", names)
	}

	// A stream of unknown size and hash, as encryption produces.
	st, err = s.Put(t.Context(), "tenant-a/stream", io.MultiReader(bytes.NewReader(body[:70_000]), bytes.NewReader(body[70_000:])), PutOptions{Size: -1})
	if err != nil {
		t.Fatal(err)
	}
	if st.Size != int64(len(body)) || st.SHA256 != sftpSum(body) {
		t.Errorf("streamed Put stored %d bytes hashing to %s", st.Size, st.SHA256)
	}

	if _, err := s.Open(t.Context(), "tenant-a/missing", 0, -1); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open of a missing key: %v, want ErrNotFound", err)
	}
	if _, err := s.Open(t.Context(), "tenant-a/2024", 0, -1); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open of a directory: %v, want ErrNotFound", err)
	}
}

func TestSFTPPutNeverOverwrites(t *testing.T) {
	t.Parallel()
	srv := sftpServer(t)
	cfg := srv.config(t)
	s := newTestSFTP(t, cfg)
	first := sftpRandomBytes(t, 100_000)
	if _, err := s.Put(t.Context(), "a/key", bytes.NewReader(first), PutOptions{Size: int64(len(first))}); err != nil {
		t.Fatal(err)
	}
	second := sftpRandomBytes(t, 50_000)
	_, err := s.Put(t.Context(), "a/key", bytes.NewReader(second), PutOptions{Size: int64(len(second))})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second Put: %v, want ErrExists", err)
	}
	if got := sftpReadAll(t, s, "a/key", 0, -1); !bytes.Equal(got, first) {
		t.Errorf("the object changed: %d bytes, want the first %d", len(got), len(first))
	}
	if names := sftpEntries(t, srv.raw(t), path.Join(cfg.Root, "a")); len(names) != 1 {
		t.Errorf("directory holds %q, want only the key", names)
	}
}

// sftpRacingBody creates the Put's key on the server behind its back the first
// time it is read, as another writer would between the existence check and
// the rename.
type sftpRacingBody struct {
	r      io.Reader
	create func() error
	once   sync.Once
	err    error
}

func (b *sftpRacingBody) Read(p []byte) (int, error) {
	b.once.Do(func() { b.err = b.create() })
	if b.err != nil {
		return 0, b.err
	}
	return b.r.Read(p)
}

func TestSFTPPutLosesRaceWithoutOverwriting(t *testing.T) {
	t.Parallel()
	srv := sftpServer(t)
	cfg := srv.config(t)
	s := newTestSFTP(t, cfg)
	raw := srv.raw(t)
	final := path.Join(cfg.Root, "race/key")
	intruder := []byte("written by someone else")
	body := &sftpRacingBody{r: bytes.NewReader(sftpRandomBytes(t, 200_000)), create: func() error {
		f, err := raw.OpenFile(final, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
		if err != nil {
			return err
		}
		if _, err := f.Write(intruder); err != nil {
			return err
		}
		return f.Close()
	}}
	_, err := s.Put(t.Context(), "race/key", body, PutOptions{Size: 200_000})
	if body.err != nil {
		t.Fatalf("creating the key behind the target's back: %v", body.err)
	}
	if !errors.Is(err, ErrExists) {
		t.Fatalf("Put: %v, want ErrExists", err)
	}
	t.Logf("as expected: %v", err)
	if got := sftpReadAll(t, s, "race/key", 0, -1); !bytes.Equal(got, intruder) {
		t.Errorf("the other writer's object was replaced by %d bytes", len(got))
	}
	if names := sftpEntries(t, raw, path.Dir(final)); len(names) != 1 {
		t.Errorf("directory holds %q, want only the key (no temporary file)", names)
	}
}

func TestSFTPHostKeyMismatch(t *testing.T) {
	t.Parallel()
	srv := sftpServer(t)
	cfg := srv.config(t)
	cfg.HostKeyFingerprint = srv.otherKey
	s := newTestSFTP(t, cfg)

	_, err := s.Put(t.Context(), "k", strings.NewReader("x"), PutOptions{Size: 1})
	f := sftpWantReason(t, err, ReasonHostKeyMismatch)
	if f.Op != "connect" || !strings.Contains(f.Detail, srv.hostKey) || !strings.Contains(f.Detail, srv.otherKey) {
		t.Errorf("failure %+v should be Op connect and name the offered %s and the expected %s", f, srv.hostKey, srv.otherKey)
	}
	if f := sftpWantReason(t, s.Probe(t.Context(), "p"), ReasonHostKeyMismatch); f.Op != "connect" {
		t.Errorf("Probe failure Op %q, want connect", f.Op)
	}
	if _, err := s.Open(t.Context(), "k", 0, -1); ReasonOf(err) != ReasonHostKeyMismatch {
		t.Errorf("Open: %v, want %s", err, ReasonHostKeyMismatch)
	}
	if _, err := srv.raw(t).Stat(cfg.Root); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the root exists after a refused host key: %v", err)
	}
}

func TestSFTPAuthRefused(t *testing.T) {
	t.Parallel()
	srv := sftpServer(t)
	_, otherKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(otherKey, "")
	if err != nil {
		t.Fatal(err)
	}
	const password = "not-the-password-4711"
	tests := []struct {
		name string
		edit func(*SFTPConfig)
	}{
		{"bad password", func(c *SFTPConfig) { c.PrivateKeyPEM, c.Password = "", password }},
		{"unknown client key", func(c *SFTPConfig) { c.PrivateKeyPEM = string(pem.EncodeToMemory(block)) }},
		{"unknown key and password", func(c *SFTPConfig) { c.PrivateKeyPEM, c.Password = string(pem.EncodeToMemory(block)), password }},
		{"other user", func(c *SFTPConfig) { c.User = "callvault-no-such-user" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := srv.config(t)
			tt.edit(&cfg)
			s := newTestSFTP(t, cfg)
			_, err := s.Put(t.Context(), "k", strings.NewReader("x"), PutOptions{Size: 1})
			f := sftpWantReason(t, err, ReasonAuth)
			if strings.Contains(err.Error(), password) || strings.Contains(f.Detail, "PRIVATE KEY") {
				t.Errorf("the failure leaks a secret: %v", err)
			}
			if f := sftpWantReason(t, s.Probe(t.Context(), ""), ReasonAuth); f.Op != "connect" {
				t.Errorf("Probe failure Op %q, want connect", f.Op)
			}
		})
	}
}

func TestSFTPUnreachable(t *testing.T) {
	t.Parallel()
	srv := sftpServer(t)

	t.Run("nothing listening", func(t *testing.T) {
		t.Parallel()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		cfg := srv.config(t)
		cfg.Port = port
		s := newTestSFTP(t, cfg)
		_, err = s.Put(t.Context(), "k", strings.NewReader("x"), PutOptions{Size: 1})
		if f := sftpWantReason(t, err, ReasonUnreachable); f.Op != "connect" {
			t.Errorf("Op %q, want connect", f.Op)
		}
	})

	t.Run("server never answers", func(t *testing.T) {
		t.Parallel()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		var conns []net.Conn
		var mu sync.Mutex
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
		t.Cleanup(func() {
			mu.Lock()
			defer mu.Unlock()
			for _, c := range conns {
				c.Close()
			}
		})
		cfg := srv.config(t)
		cfg.Port = l.Addr().(*net.TCPAddr).Port
		s := newTestSFTP(t, cfg)
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		err = s.Probe(ctx, "")
		if f := sftpWantReason(t, err, ReasonUnreachable); f.Op != "connect" {
			t.Errorf("Op %q, want connect", f.Op)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("the probe took %s to give up, past its context's deadline", d)
		}
	})
}

func TestSFTPRefusesUnsafeKeys(t *testing.T) {
	t.Parallel()
	srv := sftpServer(t)
	cfg := srv.config(t)
	s := newTestSFTP(t, cfg)
	keys := []string{
		"", "/etc/passwd", "../escape", "a/../../escape", "a/..", "..", ".", "./a", "a/./b",
		"a//b", "a/", `a\..\b`, "a\x00b",
	}
	for _, key := range keys {
		if _, err := s.Put(t.Context(), key, strings.NewReader("x"), PutOptions{Size: 1}); err == nil {
			t.Errorf("Put(%q) succeeded", key)
		}
		if _, err := s.Open(t.Context(), key, 0, -1); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("Open(%q): %v, want a refusal", key, err)
		}
	}
	if err := s.Probe(t.Context(), "../up"); err == nil {
		t.Error("Probe under ../up succeeded")
	}
	raw := srv.raw(t)
	if _, err := raw.Stat(cfg.Root); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the root was created by refused keys: %v", err)
	}
	for _, name := range []string{"escape", "up"} {
		if _, err := raw.Stat(path.Join(srv.uploadDir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s was written outside the root: %v", name, err)
		}
	}
}

func TestSFTPProbe(t *testing.T) {
	t.Parallel()
	srv := sftpServer(t)
	cfg := srv.config(t)
	s := newTestSFTP(t, cfg)
	raw := srv.raw(t)
	for _, prefix := range []string{"probes/tenant-a", "probes/tenant-a/", ""} {
		if err := s.Probe(t.Context(), prefix); err != nil {
			t.Fatalf("Probe(%q): %v", prefix, err)
		}
	}
	if names := sftpEntries(t, raw, path.Join(cfg.Root, "probes/tenant-a")); len(names) != 0 {
		t.Errorf("the probe left %q behind", names)
	}
	if names := sftpEntries(t, raw, cfg.Root); len(names) != 1 || names[0] != "probes" {
		t.Errorf("the root holds %q, want only the probes directory", names)
	}
}

// errSFTPBodyBroke wraps an error that, from the network, would mean the
// server went away.
var errSFTPBodyBroke = fmt.Errorf("the body broke: %w", io.ErrUnexpectedEOF)

type sftpFailingBody struct {
	r     io.Reader
	after int
	read  int
}

func (b *sftpFailingBody) Read(p []byte) (int, error) {
	if b.read >= b.after {
		return 0, errSFTPBodyBroke
	}
	if len(p) > b.after-b.read {
		p = p[:b.after-b.read]
	}
	n, err := b.r.Read(p)
	b.read += n
	return n, err
}

func TestSFTPFailedBodyLeavesNothing(t *testing.T) {
	t.Parallel()
	srv := sftpServer(t)
	cfg := srv.config(t)
	s := newTestSFTP(t, cfg)
	for _, size := range []int64{-1, 1 << 20} {
		body := &sftpFailingBody{r: bytes.NewReader(sftpRandomBytes(t, 1<<20)), after: 300_000}
		_, err := s.Put(t.Context(), "broken/key", body, PutOptions{Size: size})
		if !errors.Is(err, errSFTPBodyBroke) {
			t.Fatalf("Put with size %d: %v, want the body's error", size, err)
		}
		if f := (*Failure)(nil); errors.As(err, &f) {
			t.Errorf("the body's failure is blamed on the target: %v", err)
		}
		if _, err := s.Open(t.Context(), "broken/key", 0, -1); !errors.Is(err, ErrNotFound) {
			t.Errorf("Open after a broken body: %v, want ErrNotFound", err)
		}
		if names := sftpEntries(t, srv.raw(t), path.Join(cfg.Root, "broken")); len(names) != 0 {
			t.Errorf("a broken body left %q behind", names)
		}
	}
}

// sftpCancellingBody cancels its Put's context once after bytes are read.
type sftpCancellingBody struct {
	r      io.Reader
	after  int
	read   int
	cancel context.CancelFunc
}

func (b *sftpCancellingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if b.read += n; b.read >= b.after {
		b.cancel()
	}
	return n, err
}

func TestSFTPPutStopsWithItsContext(t *testing.T) {
	t.Parallel()
	srv := sftpServer(t)
	cfg := srv.config(t)
	s := newTestSFTP(t, cfg)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	body := &sftpCancellingBody{r: bytes.NewReader(sftpRandomBytes(t, 4<<20)), after: 1 << 20, cancel: cancel}
	_, err := s.Put(ctx, "cancelled/key", body, PutOptions{Size: 4 << 20})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Put: %v, want context.Canceled", err)
	}
	if body.read >= 4<<20 {
		t.Errorf("the whole body was read after the context ended")
	}
	if names := sftpEntries(t, srv.raw(t), path.Join(cfg.Root, "cancelled")); len(names) != 0 {
		t.Errorf("a cancelled Put left %q behind", names)
	}
	// The connection outlives one caller's context.
	if err := s.Probe(t.Context(), ""); err != nil {
		t.Errorf("Probe after a cancelled Put: %v", err)
	}
}

func TestSFTPPutVerifiesAnnouncedBody(t *testing.T) {
	t.Parallel()
	srv := sftpServer(t)
	cfg := srv.config(t)
	s := newTestSFTP(t, cfg)
	body := sftpRandomBytes(t, 70_000)
	tests := []struct {
		name string
		opts PutOptions
	}{
		{"wrong hash", PutOptions{Size: int64(len(body)), SHA256: sftpSum([]byte("other"))}},
		{"short body", PutOptions{Size: int64(len(body)) + 1}},
		{"long body", PutOptions{Size: int64(len(body)) - 1}},
	}
	for _, tt := range tests {
		_, err := s.Put(t.Context(), "v/key", bytes.NewReader(body), tt.opts)
		sftpWantReason(t, err, ReasonVerify)
		if names := sftpEntries(t, srv.raw(t), path.Join(cfg.Root, "v")); len(names) != 0 {
			t.Errorf("%s: left %q behind", tt.name, names)
		}
	}
	if _, err := s.Put(t.Context(), "v/key", bytes.NewReader(body), PutOptions{Size: int64(len(body)), SHA256: strings.ToUpper(sftpSum(body))}); err != nil {
		t.Errorf("Put with an upper-case hash: %v", err)
	}
}

func TestSFTPConcurrentPuts(t *testing.T) {
	t.Parallel()
	srv := sftpServer(t)
	cfg := srv.config(t)
	s := newTestSFTP(t, cfg)
	bodies := make([][]byte, 8)
	for i := range bodies {
		bodies[i] = sftpRandomBytes(t, 256<<10+i)
	}
	errs := make([]error, len(bodies))
	var wg sync.WaitGroup
	for i, body := range bodies {
		wg.Go(func() {
			_, errs[i] = s.Put(t.Context(), fmt.Sprintf("many/dirs/%d/key", i), bytes.NewReader(body), PutOptions{Size: int64(len(body))})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Put %d: %v", i, err)
			continue
		}
		if got := sftpReadAll(t, s, fmt.Sprintf("many/dirs/%d/key", i), 0, -1); !bytes.Equal(got, bodies[i]) {
			t.Errorf("object %d differs from its body", i)
		}
	}
}

func TestSFTPRedialsAfterBrokenConnection(t *testing.T) {
	t.Parallel()
	srv := sftpServer(t)
	s := newTestSFTP(t, srv.config(t))
	if err := s.Probe(t.Context(), ""); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	broken := s.conns[(s.next-1)%len(s.conns)]
	s.mu.Unlock()
	_ = broken.ssh.Close()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		s.mu.Lock()
		dropped := !slices.Contains(s.conns, broken)
		s.mu.Unlock()
		if dropped {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the broken connection was never dropped")
		}
	}
	if err := s.Probe(t.Context(), ""); err != nil {
		t.Fatalf("Probe after the connection broke: %v", err)
	}
	_ = s.Close()
	if _, err := s.Put(t.Context(), "k", strings.NewReader("x"), PutOptions{Size: 1}); !errors.Is(err, errSFTPClosed) {
		t.Errorf("Put after Close: %v, want errSFTPClosed", err)
	}
}

func TestNewSFTPValidates(t *testing.T) {
	t.Parallel()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(key, "")
	if err != nil {
		t.Fatal(err)
	}
	locked, err := ssh.MarshalPrivateKeyWithPassphrase(key, "", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	const fp = "SHA256:ciJKDzVVE36cWD/go0j2tIvAYBdLED8xlpRH1gFgT4s"
	good := SFTPConfig{Host: "sftp.example.net", User: "u", PrivateKeyPEM: string(pem.EncodeToMemory(block)), HostKeyFingerprint: fp}
	tests := []struct {
		name string
		edit func(*SFTPConfig)
		ok   bool
	}{
		{"key", func(*SFTPConfig) {}, true},
		{"password only", func(c *SFTPConfig) { c.PrivateKeyPEM, c.Password = "", "pw" }, true},
		{"padded fingerprint", func(c *SFTPConfig) { c.HostKeyFingerprint = fp + "=" }, true},
		{"no fingerprint", func(c *SFTPConfig) { c.HostKeyFingerprint = "" }, false},
		{"bare base64 fingerprint", func(c *SFTPConfig) { c.HostKeyFingerprint = strings.TrimPrefix(fp, "SHA256:") }, false},
		{"MD5 fingerprint", func(c *SFTPConfig) { c.HostKeyFingerprint = "MD5:16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48" }, false},
		{"short fingerprint", func(c *SFTPConfig) { c.HostKeyFingerprint = "SHA256:abcd" }, false},
		{"no host", func(c *SFTPConfig) { c.Host = "" }, false},
		{"no user", func(c *SFTPConfig) { c.User = "" }, false},
		{"no credentials", func(c *SFTPConfig) { c.PrivateKeyPEM = "" }, false},
		{"garbage key", func(c *SFTPConfig) {
			c.PrivateKeyPEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
		}, false},
		{"passphrase key", func(c *SFTPConfig) { c.PrivateKeyPEM = string(pem.EncodeToMemory(locked)) }, false},
		{"port out of range", func(c *SFTPConfig) { c.Port = 70000 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := good
			tt.edit(&cfg)
			s, err := NewSFTP(cfg)
			if (err == nil) != tt.ok {
				t.Fatalf("NewSFTP: %v, want ok=%v", err, tt.ok)
			}
			if err != nil && cfg.PrivateKeyPEM != "" && strings.Contains(err.Error(), strings.Split(cfg.PrivateKeyPEM, "\n")[1]) {
				t.Errorf("the error quotes the key: %v", err)
			}
			if s != nil && s.addr != "sftp.example.net:22" {
				t.Errorf("addr %q, want the default port", s.addr)
			}
		})
	}
}

func TestSFTPReason(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want Reason
	}{
		{&sftp.StatusError{Code: uint32(sftp.ErrSSHFxPermissionDenied)}, ReasonPermission},
		{fmt.Errorf("mkdir /x: %w", os.ErrPermission), ReasonPermission},
		{sftp.ErrSSHFxConnectionLost, ReasonUnreachable},
		{fmt.Errorf("upload: %w", context.DeadlineExceeded), ReasonUnreachable},
		{&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, ReasonUnreachable},
		{&sftp.StatusError{Code: uint32(sftp.ErrSSHFxFailure)}, ReasonOther},
		{context.Canceled, ReasonOther},
	}
	for _, tt := range tests {
		if got := sftpReason(tt.err); got != tt.want {
			t.Errorf("sftpReason(%v) = %s, want %s", tt.err, got, tt.want)
		}
	}
}

// The server keeps what it is sent, so the read-back check is driven
// directly against a file whose claimed size or hash is wrong.
func TestSFTPVerifyReadsBack(t *testing.T) {
	t.Parallel()
	srv := sftpServer(t)
	cfg := srv.config(t)
	s := newTestSFTP(t, cfg)
	body := sftpRandomBytes(t, 100_000)
	if _, err := s.Put(t.Context(), "vb/key", bytes.NewReader(body), PutOptions{Size: int64(len(body))}); err != nil {
		t.Fatal(err)
	}
	c, err := s.client(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	name := s.remote("vb/key")
	if err := s.verify(t.Context(), c, name, int64(len(body)), sftpSum(body)); err != nil {
		t.Errorf("verify of a faithful copy: %v", err)
	}
	sftpWantReason(t, s.verify(t.Context(), c, name, int64(len(body))+1, sftpSum(body)), ReasonVerify)
	flipped := bytes.Clone(body)
	flipped[len(flipped)/2] ^= 1
	sftpWantReason(t, s.verify(t.Context(), c, name, int64(len(body)), sftpSum(flipped)), ReasonVerify)
}

// BenchmarkSFTPPut measures a verified upload of an 8 MiB object, with its
// size announced and without (an encrypted stream).
func BenchmarkSFTPPut(b *testing.B) {
	for _, sized := range []bool{true, false} {
		b.Run(fmt.Sprintf("sized=%v", sized), func(b *testing.B) {
			srv := sftpServer(b)
			root := path.Join(srv.uploadDir, "bench-"+sftpRandom())
			s, err := NewSFTP(SFTPConfig{Host: srv.host, Port: srv.port, User: srv.user, PrivateKeyPEM: srv.keyPEM, HostKeyFingerprint: srv.hostKey, Root: root})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			body := make([]byte, 8<<20)
			_, _ = rand.Read(body)
			size := int64(len(body))
			if !sized {
				size = -1
			}
			b.SetBytes(int64(len(body)))
			for i := 0; b.Loop(); i++ {
				if _, err := s.Put(b.Context(), fmt.Sprintf("k%d", i), bytes.NewReader(body), PutOptions{Size: size}); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			c, err := s.client(context.Background())
			if err == nil {
				err = c.RemoveAll(root)
			}
			if err != nil {
				b.Errorf("removing %s: %v", root, err)
			}
		})
	}
}
