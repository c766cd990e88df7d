package router

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	"filippo.io/age"

	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	"github.com/callvault/callvault/services/router/internal/seal"
	"github.com/callvault/callvault/services/router/internal/target"
)

// open builds the target of a configuration, opening its secret.
func (s *Service) open(r *eventv1.ArchiveConfigRecord) (target.Target, error) {
	var secret string
	if sec := r.GetSecret(); len(sec.GetBox()) > 0 {
		plain, err := s.keys.Open(seal.Sealed{KeyID: sec.GetKeyId(), Box: sec.GetBox()}, r.GetId())
		if err != nil {
			return nil, fmt.Errorf("configuration %s: %w", r.GetId(), err)
		}
		secret = string(plain)
	}
	switch r.GetStorageType() {
	case typeS3, typeGlacierIR, typeWasabi:
		class := target.ClassStandard
		if r.GetStorageType() == typeGlacierIR {
			class = target.ClassGlacierIR
		}
		mode := ""
		switch r.GetWormMode() {
		case "governance":
			mode = "GOVERNANCE"
		case "compliance":
			mode = "COMPLIANCE"
		}
		return target.NewS3(target.S3Config{
			Endpoint: r.GetEndpoint(), Region: r.GetRegion(), Bucket: r.GetBucket(), Prefix: r.GetPrefix(),
			AccessKey: r.GetAccessKeyId(), SecretKey: secret, StorageClass: class,
			// A service of its own (Wasabi, an S3-compatible store) is
			// addressed by path; AWS by virtual host.
			PathStyle: r.GetEndpoint() != "", WORM: mode != "", WORMMode: mode,
		})
	case typeSFTP:
		cfg := target.SFTPConfig{
			Host: r.GetHost(), Port: int(r.GetPort()), User: r.GetUsername(),
			HostKeyFingerprint: r.GetHostKeyFingerprint(), Root: r.GetPrefix(),
		}
		if r.GetSecret().GetKind() == "private_key" {
			cfg.PrivateKeyPEM = secret
		} else {
			cfg.Password = secret
		}
		return target.NewSFTP(cfg)
	}
	return nil, fmt.Errorf("configuration %s: storage type %q has no target", r.GetId(), r.GetStorageType())
}

// targetCache keeps one target (and its connections) per configuration
// version. A target replaced by a newer version, or forgotten, closes only
// once the last operation using it has released it, so a change to a
// configuration never cuts an upload in flight.
type targetCache struct {
	open func(*eventv1.ArchiveConfigRecord) (target.Target, error)
	mu   sync.Mutex
	m    map[string]*cachedTarget
}

type cachedTarget struct {
	version int64
	t       target.Target
	refs    int
	stale   bool
}

func newTargetCache(open func(*eventv1.ArchiveConfigRecord) (target.Target, error)) *targetCache {
	return &targetCache{open: open, m: map[string]*cachedTarget{}}
}

// get returns the target of r's version and the function that releases it.
func (c *targetCache) get(r *eventv1.ArchiveConfigRecord) (target.Target, func(), error) {
	return c.getAs(r.GetId(), r)
}

// getAs is get for a variant of a configuration cached under its own name.
func (c *targetCache) getAs(name string, r *eventv1.ArchiveConfigRecord) (target.Target, func(), error) {
	version := r.GetUpdatedAt().AsTime().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	ct, ok := c.m[name]
	if ok && ct.version != version {
		c.retire(name, ct)
		ok = false
	}
	if !ok {
		t, err := c.open(r)
		if err != nil {
			return nil, nil, err
		}
		ct = &cachedTarget{version: version, t: t}
		c.m[name] = ct
	}
	ct.refs++
	var once sync.Once
	return ct.t, func() { once.Do(func() { c.release(ct) }) }, nil
}

func (c *targetCache) release(ct *cachedTarget) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ct.refs--
	if ct.stale && ct.refs == 0 {
		_ = ct.t.Close()
	}
}

// retire drops ct from the cache; it closes now if unused, else on its
// last release. c.mu is held.
func (c *targetCache) retire(id string, ct *cachedTarget) {
	delete(c.m, id)
	ct.stale = true
	if ct.refs == 0 {
		_ = ct.t.Close()
	}
}

func (c *targetCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, name := range []string{id, id + rootVariant} {
		if ct, ok := c.m[name]; ok {
			c.retire(name, ct)
		}
	}
}

// rootVariant names a configuration's target without its prefix.
const rootVariant = "#root"

func (c *targetCache) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, ct := range c.m {
		c.retire(id, ct)
	}
}

// semaphores bound uploads per configuration.
type semaphores struct {
	n  int
	mu sync.Mutex
	m  map[string]chan struct{}
}

func newSemaphores(n int) *semaphores { return &semaphores{n: n, m: map[string]chan struct{}{}} }

func (s *semaphores) acquire(ctx context.Context, id string) (func(), error) {
	s.mu.Lock()
	ch, ok := s.m[id]
	if !ok {
		ch = make(chan struct{}, s.n)
		s.m[id] = ch
	}
	s.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// checkedReader hashes what it reads and fails at the end when the bytes
// are not the ones the catalog recorded, so a corrupt central copy never
// becomes a "verified" archive.
type checkedReader struct {
	r    io.Reader
	h    hash.Hash
	want string
	n    int64
	size int64
}

func newCheckedReader(r io.Reader, wantSHA string, size int64) *checkedReader {
	return &checkedReader{r: r, h: sha256.New(), want: wantSHA, size: size}
}

var errSourceMismatch = errors.New("the central copy does not match the SHA-256 and size the catalog recorded")

func (c *checkedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	if errors.Is(err, io.EOF) {
		if (c.want != "" && hex.EncodeToString(c.h.Sum(nil)) != c.want) || (c.size >= 0 && c.n != c.size) {
			return n, errSourceMismatch
		}
	}
	return n, err
}

// encrypting streams r encrypted to recipient through a pipe.
func encrypting(r io.Reader, recipient string) (io.ReadCloser, error) {
	rcpt, err := age.ParseX25519Recipient(recipient)
	if err != nil {
		return nil, fmt.Errorf("age recipient: %w", err)
	}
	pr, pw := io.Pipe()
	go func() {
		w, err := age.Encrypt(pw, rcpt)
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		if _, err := io.Copy(w, r); err != nil {
			pw.CloseWithError(err)
			return
		}
		pw.CloseWithError(w.Close())
	}()
	return pr, nil
}
