package target

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

const (
	// sftpDialTimeout bounds the TCP connect, the SSH handshake and the
	// start of the SFTP subsystem together.
	sftpDialTimeout = 10 * time.Second
	// sftpMaxPacket is the data of one SFTP request: OpenSSH takes
	// messages up to 256 KiB, and large requests cost far fewer round
	// trips, packets and syscalls than the 32 KiB default.
	sftpMaxPacket = 252 << 10
	// sftpRequestsPerFile is how many SFTP requests one transfer keeps in
	// flight; a lone request per round trip would cap a transfer at one
	// request per RTT.
	sftpRequestsPerFile = 16
	// sftpReadBuffer is the size of the reads Open issues, so that each
	// one becomes several requests in flight rather than one.
	sftpReadBuffer = 512 << 10
)

// SFTPConfig names an SFTP server and how to log in to it.
type SFTPConfig struct {
	Host string
	// Port defaults to 22.
	Port     int
	User     string
	Password string
	// PrivateKeyPEM is an unencrypted private key in PEM or OpenSSH form.
	PrivateKeyPEM string
	// HostKeyFingerprint pins the server's host key, in the form
	// "SHA256:<base64>" that ssh-keygen -l prints. It is required: a
	// server offering any other key is refused.
	HostKeyFingerprint string
	// Root is the remote directory keys are relative to; empty means the
	// login directory.
	Root string
	// Conns is how many SSH connections uploads spread over (0: 4). One
	// connection is one server process on OpenSSH, so a single one caps a
	// transfer at one server core.
	Conns int
}

// SFTP is a Target on an SFTP server. It dials on first use and keeps up
// to Conns connections, used in turn, dialling a slot again once its
// connection breaks; it is safe for concurrent use.
type SFTP struct {
	addr        string
	user        string
	auth        []ssh.AuthMethod
	fingerprint string
	root        string

	mu     sync.Mutex // guards conns, next and closed; held while dialling
	conns  []*sftpConn
	next   int
	closed bool
}

var _ Target = (*SFTP)(nil)

type sftpConn struct {
	ssh  *ssh.Client
	sftp *sftp.Client
}

func (c *sftpConn) close() {
	_ = c.sftp.Close()
	_ = c.ssh.Close()
}

var errSFTPClosed = errors.New("sftp target is closed")

// NewSFTP checks cfg and returns a target that has not dialled yet.
func NewSFTP(cfg SFTPConfig) (*SFTP, error) {
	if cfg.Host == "" {
		return nil, errors.New("sftp: no host")
	}
	port := cfg.Port
	if port == 0 {
		port = 22
	}
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("sftp: port %d out of range", cfg.Port)
	}
	if cfg.User == "" {
		return nil, errors.New("sftp: no user")
	}
	fp, err := sftpFingerprint(cfg.HostKeyFingerprint)
	if err != nil {
		return nil, err
	}
	var auth []ssh.AuthMethod
	if cfg.PrivateKeyPEM != "" {
		signer, err := ssh.ParsePrivateKey([]byte(cfg.PrivateKeyPEM))
		var missing *ssh.PassphraseMissingError
		switch {
		case errors.As(err, &missing):
			return nil, errors.New("sftp: the private key is passphrase-protected")
		case err != nil:
			// The parser's messages name the problem, never key bytes.
			return nil, fmt.Errorf("sftp: private key: %w", err)
		}
		auth = append(auth, ssh.PublicKeys(signer))
	}
	if cfg.Password != "" {
		pw := cfg.Password
		// Servers that check passwords through PAM ask for them by
		// keyboard-interactive rather than the password method.
		auth = append(auth, ssh.Password(pw), ssh.KeyboardInteractive(
			func(_, _ string, questions []string, echos []bool) ([]string, error) {
				answers := make([]string, len(questions))
				for i := range questions {
					if !echos[i] {
						answers[i] = pw
					}
				}
				return answers, nil
			}))
	}
	if len(auth) == 0 {
		return nil, errors.New("sftp: neither a password nor a private key")
	}
	root := cfg.Root
	if strings.ContainsAny(root, "\\\x00") {
		return nil, errors.New("sftp: root holds a backslash or NUL")
	}
	if root != "" {
		root = path.Clean(root)
	}
	conns := cfg.Conns
	if conns <= 0 {
		conns = 4
	}
	return &SFTP{
		conns:       make([]*sftpConn, conns),
		addr:        net.JoinHostPort(cfg.Host, strconv.Itoa(port)),
		user:        cfg.User,
		auth:        auth,
		fingerprint: fp,
		root:        root,
	}, nil
}

// sftpFingerprint normalises a pinned host key fingerprint, padded or not.
func sftpFingerprint(s string) (string, error) {
	b64, ok := strings.CutPrefix(strings.TrimSpace(s), "SHA256:")
	if !ok {
		return "", errors.New(`sftp: the host key fingerprint must have the form "SHA256:<base64>"`)
	}
	b64 = strings.TrimRight(b64, "=")
	if raw, err := base64.RawStdEncoding.DecodeString(b64); err != nil || len(raw) != sha256.Size {
		return "", errors.New("sftp: the host key fingerprint is not a base64 SHA-256")
	}
	return "SHA256:" + b64, nil
}

// client is the next connection in turn, dialled when its slot has none.
func (s *SFTP) client(ctx context.Context) (*sftp.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, &Failure{Reason: ReasonOther, Op: "connect", Detail: errSFTPClosed.Error(), Err: errSFTPClosed}
	}
	slot := s.next % len(s.conns)
	s.next++
	if c := s.conns[slot]; c != nil {
		return c.sftp, nil
	}
	c, err := s.dial(ctx)
	if err != nil {
		return nil, err
	}
	s.conns[slot] = c
	go s.forget(c)
	return c.sftp, nil
}

// forget drops c once it shuts down, so the next call dials again.
func (s *SFTP) forget(c *sftpConn) {
	_ = c.sftp.Wait()
	_ = c.ssh.Close()
	s.mu.Lock()
	for i := range s.conns {
		if s.conns[i] == c {
			s.conns[i] = nil
		}
	}
	s.mu.Unlock()
}

func (s *SFTP) dial(parent context.Context) (*sftpConn, error) {
	ctx, cancel := context.WithTimeout(parent, sftpDialTimeout)
	defer cancel()
	d0, ok := parent.Deadline()
	callerFirst := ok && time.Until(d0) < sftpDialTimeout
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return nil, s.connectFailure(parent, callerFirst, err)
	}
	deadline, _ := ctx.Deadline()
	_ = nc.SetDeadline(deadline)
	// The handshake does not watch ctx; a past deadline makes it give up.
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })

	var mismatch *Failure
	cfg := &ssh.ClientConfig{
		User: s.user,
		Auth: s.auth,
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			if got := ssh.FingerprintSHA256(key); got != s.fingerprint {
				mismatch = &Failure{
					Reason: ReasonHostKeyMismatch,
					Op:     "connect",
					Detail: fmt.Sprintf("%s offered host key %s %s, expected %s", s.addr, key.Type(), got, s.fingerprint),
				}
				return mismatch
			}
			return nil
		},
	}
	cc, chans, reqs, err := ssh.NewClientConn(nc, s.addr, cfg)
	if err != nil {
		stop()
		_ = nc.Close()
		if mismatch != nil {
			return nil, mismatch
		}
		return nil, s.connectFailure(parent, callerFirst, err)
	}
	sc := ssh.NewClient(cc, chans, reqs)
	fc, err := sftp.NewClient(sc,
		sftp.UseConcurrentWrites(true),
		sftp.MaxPacketUnchecked(sftpMaxPacket),
		sftp.MaxConcurrentRequestsPerFile(sftpRequestsPerFile),
	)
	if !stop() && err == nil {
		err = ctx.Err()
		_ = fc.Close()
	}
	if err != nil {
		_ = sc.Close()
		if parent.Err() == nil && ctx.Err() == nil {
			return nil, &Failure{Reason: ReasonOther, Op: "connect", Detail: "starting the sftp subsystem: " + err.Error(), Err: err}
		}
		return nil, s.connectFailure(parent, callerFirst, err)
	}
	_ = nc.SetDeadline(time.Time{})
	return &sftpConn{ssh: sc, sftp: fc}, nil
}

// connectFailure classifies a failed dial; callerFirst says parent's
// deadline came before the dial timeout (its timer may not have fired yet
// when the connection's deadline did).
func (s *SFTP) connectFailure(parent context.Context, callerFirst bool, err error) *Failure {
	if perr := parent.Err(); perr != nil {
		return &Failure{Reason: sftpReason(perr), Op: "connect", Detail: fmt.Sprintf("connecting to %s: %v", s.addr, perr), Err: perr}
	}
	if strings.Contains(err.Error(), "unable to authenticate") {
		return &Failure{Reason: ReasonAuth, Op: "connect", Detail: fmt.Sprintf("%s refused user %q: %v", s.addr, s.user, err), Err: err}
	}
	reason := sftpReason(err)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		reason = ReasonUnreachable
		limit := fmt.Sprintf("within %s", sftpDialTimeout)
		if callerFirst {
			limit = "before the caller's deadline"
		}
		err = fmt.Errorf("no answer %s: %w", limit, err)
	}
	return &Failure{Reason: reason, Op: "connect", Detail: fmt.Sprintf("connecting to %s: %v", s.addr, err), Err: err}
}

// sftpReason classifies an error from the network or the SFTP server.
func sftpReason(err error) Reason {
	var (
		status *sftp.StatusError
		netErr net.Error
	)
	switch {
	case errors.Is(err, os.ErrPermission),
		errors.As(err, &status) && status.FxCode() == sftp.ErrSSHFxPermissionDenied:
		return ReasonPermission
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, sftp.ErrSSHFxConnectionLost),
		errors.Is(err, sftp.ErrSSHFxNoConnection),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.As(err, &netErr):
		return ReasonUnreachable
	}
	return ReasonOther
}

// sftpFail classifies err under op unless it is classified already.
func sftpFail(op string, err error) error {
	var f *Failure
	if errors.As(err, &f) {
		return err
	}
	return &Failure{Reason: sftpReason(err), Op: op, Detail: err.Error(), Err: err}
}

// sftpCheckKey refuses a key that could leave the root or that names a
// path differently from how it reads.
func sftpCheckKey(key string) error {
	switch {
	case key == "":
		return errors.New("empty key")
	case strings.HasPrefix(key, "/"):
		return fmt.Errorf("key %q is absolute", key)
	case strings.ContainsAny(key, "\\\x00"):
		return fmt.Errorf("key %q holds a backslash or NUL", key)
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch seg {
		case "":
			return fmt.Errorf("key %q has an empty segment", key)
		case ".", "..":
			return fmt.Errorf("key %q has a %q segment", key, seg)
		}
	}
	return nil
}

func (s *SFTP) remote(key string) string {
	if s.root == "" {
		return key
	}
	return path.Join(s.root, key)
}

func (s *SFTP) location(remote string) string {
	return "sftp://" + s.addr + "/" + strings.TrimPrefix(remote, "/")
}

// Locate is the Location a Put of key reports, without contacting the
// server.
func (s *SFTP) Locate(key string) string { return s.location(s.remote(key)) }

// Put uploads r under a temporary name beside key, reads the upload back
// to check its size and hash, and only then renames it to key. SFTP's
// rename refuses an existing target on OpenSSH, so a key taken meanwhile
// is never overwritten.
func (s *SFTP) Put(ctx context.Context, key string, r io.Reader, opts PutOptions) (Stored, error) {
	if err := sftpCheckKey(key); err != nil {
		return Stored{}, fmt.Errorf("sftp put: %w", err)
	}
	want := strings.ToLower(opts.SHA256)
	if want != "" {
		if raw, err := hex.DecodeString(want); err != nil || len(raw) != sha256.Size {
			return Stored{}, fmt.Errorf("sftp put %s: PutOptions.SHA256 is not a hex SHA-256", key)
		}
	}
	c, err := s.client(ctx)
	if err != nil {
		return Stored{}, err
	}
	final := s.remote(key)
	if _, err := c.Lstat(final); err == nil {
		return Stored{}, fmt.Errorf("sftp put %s: %w", key, ErrExists)
	} else if !errors.Is(err, os.ErrNotExist) {
		return Stored{}, sftpFail("write", fmt.Errorf("stat %s: %w", final, err))
	}
	dir := path.Dir(final)
	if err := c.MkdirAll(dir); err != nil {
		return Stored{}, sftpFail("write", fmt.Errorf("mkdir %s: %w", dir, err))
	}

	tmp := path.Join(dir, "."+path.Base(final)+".partial-"+sftpRandom())
	f, err := c.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return Stored{}, sftpFail("write", fmt.Errorf("create %s: %w", tmp, err))
	}
	keep := false
	defer func() {
		if !keep {
			_ = c.Remove(tmp) // best effort: the upload already failed
		}
	}()

	h := sha256.New()
	size := opts.Size
	if size < 0 {
		size = -1
	}
	src := &sftpSource{ctx: ctx, r: r, h: h, size: size}
	n, err := io.Copy(f, src)
	if err != nil {
		_ = f.Close()
		if src.err != nil {
			// The caller's body failed, not the target.
			return Stored{}, fmt.Errorf("sftp put %s: reading the body: %w", key, src.err)
		}
		return Stored{}, sftpFail("write", fmt.Errorf("upload %s: %w", tmp, err))
	}
	if err := f.Close(); err != nil {
		return Stored{}, sftpFail("write", fmt.Errorf("close %s: %w", tmp, err))
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if opts.Size >= 0 && n != opts.Size {
		return Stored{}, sftpVerifyFailure("the body held %d bytes, %d were announced", n, opts.Size)
	}
	if want != "" && sum != want {
		return Stored{}, sftpVerifyFailure("the body hashed to %s, %s was announced", sum, want)
	}
	if err := s.verify(ctx, c, tmp, n, sum); err != nil {
		return Stored{}, err
	}
	if raw, _ := hex.DecodeString(sum); opts.BeforeCommit != nil {
		if err := opts.commit(raw, n); err != nil {
			return Stored{}, fmt.Errorf("sftp put %s: %w", key, err)
		}
	}

	if err := c.Rename(tmp, final); err != nil {
		if _, serr := c.Lstat(final); serr == nil {
			return Stored{}, fmt.Errorf("sftp put %s: %w", key, ErrExists)
		}
		return Stored{}, sftpFail("write", fmt.Errorf("rename %s to %s: %w", tmp, final, err))
	}
	keep = true
	return Stored{Location: s.location(final), Key: key, Size: n, SHA256: sum}, nil
}

// verify checks that the server holds size bytes hashing to sum at name.
func (s *SFTP) verify(ctx context.Context, c *sftp.Client, name string, size int64, sum string) error {
	fi, err := c.Stat(name)
	if err != nil {
		return sftpFail("verify", fmt.Errorf("stat %s: %w", name, err))
	}
	if fi.Size() != size {
		return sftpVerifyFailure("the server holds %d bytes, %d were sent", fi.Size(), size)
	}
	f, err := c.Open(name)
	if err != nil {
		return sftpFail("verify", fmt.Errorf("reopen %s: %w", name, err))
	}
	defer f.Close()
	h := sha256.New()
	// File.WriteTo reads with several requests in flight.
	if _, err := io.Copy(sftpSink{ctx: ctx, w: h}, f); err != nil {
		return sftpFail("verify", fmt.Errorf("read back %s: %w", name, err))
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return sftpVerifyFailure("the server's copy hashes to %s, %s was sent", got, sum)
	}
	return nil
}

func sftpVerifyFailure(format string, args ...any) *Failure {
	return &Failure{Reason: ReasonVerify, Op: "verify", Detail: fmt.Sprintf(format, args...)}
}

// Open reads length bytes of key from offset; length < 0 reads to the end.
func (s *SFTP) Open(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := sftpCheckKey(key); err != nil {
		return nil, fmt.Errorf("sftp open: %w", err)
	}
	if offset < 0 {
		return nil, fmt.Errorf("sftp open %s: negative offset %d", key, offset)
	}
	c, err := s.client(ctx)
	if err != nil {
		return nil, err
	}
	name := s.remote(key)
	f, err := c.Open(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("sftp open %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, sftpFail("read", fmt.Errorf("open %s: %w", name, err))
	}
	// OpenSSH opens a directory as readily as a file.
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		_ = f.Close()
		if err != nil {
			return nil, sftpFail("read", fmt.Errorf("stat %s: %w", name, err))
		}
		return nil, fmt.Errorf("sftp open %s: not a file: %w", key, ErrNotFound)
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		_ = f.Close()
		return nil, sftpFail("read", fmt.Errorf("seek %s: %w", name, err))
	}
	var r io.Reader = f
	if length >= 0 {
		r = io.LimitReader(f, length)
	}
	return &sftpObject{Reader: bufio.NewReaderSize(&sftpSource{ctx: ctx, r: r, size: -1}, sftpReadBuffer), f: f}, nil
}

type sftpObject struct {
	*bufio.Reader
	f *sftp.File
}

func (o *sftpObject) Close() error { return o.f.Close() }

// Probe puts a small random object under prefix, reads it back and
// removes it; the failure's Op names the step that failed.
func (s *SFTP) Probe(ctx context.Context, prefix string) error {
	key := ".callvault-probe-" + sftpRandom()
	if prefix = strings.TrimSuffix(prefix, "/"); prefix != "" {
		key = prefix + "/" + key
	}
	if err := sftpCheckKey(key); err != nil {
		return &Failure{Reason: ReasonOther, Op: "write", Detail: "probe prefix: " + err.Error(), Err: err}
	}
	if _, err := s.client(ctx); err != nil {
		return err
	}
	body := []byte("callvault probe " + sftpRandom() + "\n")
	sum := sha256.Sum256(body)
	if _, err := s.Put(ctx, key, bytes.NewReader(body), PutOptions{Size: int64(len(body)), SHA256: hex.EncodeToString(sum[:])}); err != nil {
		return sftpProbeStep("write", err)
	}
	readErr := s.probeRead(ctx, key, body)
	// The object is removed even when reading it back failed.
	c, err := s.client(ctx)
	if err == nil {
		err = c.Remove(s.remote(key))
	}
	if err != nil {
		if readErr != nil {
			return readErr
		}
		return sftpProbeStep("delete", fmt.Errorf("remove %s: %w", s.remote(key), err))
	}
	return readErr
}

func (s *SFTP) probeRead(ctx context.Context, key string, body []byte) error {
	rc, err := s.Open(ctx, key, 0, -1)
	if err != nil {
		return sftpProbeStep("read", err)
	}
	defer rc.Close()
	got, err := io.ReadAll(io.LimitReader(rc, int64(len(body))+1))
	if err != nil {
		return sftpProbeStep("read", err)
	}
	if !bytes.Equal(got, body) {
		return &Failure{Reason: ReasonVerify, Op: "read", Detail: fmt.Sprintf("read back %d bytes that differ from the %d written", len(got), len(body))}
	}
	return nil
}

// sftpProbeStep reports err, whichever Put or Open step it came from, as
// a failure of the probe's step op.
func sftpProbeStep(op string, err error) error {
	var f *Failure
	if errors.As(err, &f) {
		if f.Op == "connect" {
			return f
		}
		return &Failure{Reason: f.Reason, Op: op, Detail: f.Detail, Err: f.Err}
	}
	return &Failure{Reason: sftpReason(err), Op: op, Detail: err.Error(), Err: err}
}

// Close drops the connection; the target cannot be used afterwards.
func (s *SFTP) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for i, c := range s.conns {
		if c != nil {
			c.close()
			s.conns[i] = nil
		}
	}
	return nil
}

// sftpSource reads r until ctx ends, hashing what it reads into h (when
// set). Size tells File.ReadFrom how much to expect: without it, pkg/sftp
// would send one write request at a time.
type sftpSource struct {
	ctx  context.Context
	r    io.Reader
	h    io.Writer
	size int64
	// err is r's own failure, told apart from the server's.
	err error
}

func (s *sftpSource) Read(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := s.r.Read(p)
	if s.h != nil {
		s.h.Write(p[:n])
	}
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// Size is the announced body size, -1 when unknown.
func (s *sftpSource) Size() int64 { return s.size }

// sftpSink writes to w until ctx ends.
type sftpSink struct {
	ctx context.Context
	w   io.Writer
}

func (s sftpSink) Write(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	return s.w.Write(p)
}

func sftpRandom() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
