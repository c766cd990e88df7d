// Package cds is the central data store (CDS): where every recording,
// voicemail, fax, CDR segment and backup lives. Two backends share one
// contract: a local directory for the embedded default and any
// S3-compatible bucket for deployments.
package cds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
)

// ErrNotFound is returned for a key that holds no object.
var ErrNotFound = errors.New("cds: object not found")

// Object describes a stored object.
type Object struct {
	Key         string
	Size        int64
	ContentType string
	// Modified is when the object was last written (List fills it).
	Modified time.Time
}

// Lister is a store that can enumerate its objects: what a sweep of
// unreferenced media needs. Both backends implement it.
type Lister interface {
	// List calls fn for every object whose key starts with prefix, in no
	// promised order, with Key, Size and Modified set. An error from fn
	// stops the listing and is returned.
	List(ctx context.Context, prefix string, fn func(Object) error) error
}

// Store is the contract both backends keep. Delete of a missing key
// succeeds: deletions are retried and must be idempotent.
type Store interface {
	// Put streams r to key and returns the bytes written. A failed Put
	// leaves no object behind.
	Put(ctx context.Context, key string, r io.Reader, contentType string) (int64, error)
	// Open reads length bytes from offset; length < 0 reads to the end.
	Open(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
	Stat(ctx context.Context, key string) (Object, error)
	Delete(ctx context.Context, key string) error
}

var segmentRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// CheckKey rejects keys that could escape the store's root: absolute
// paths, empty or dot segments, and characters outside a safe set.
func CheckKey(key string) error {
	if key == "" || len(key) > 1024 {
		return fmt.Errorf("cds: key must be 1-1024 characters")
	}
	for _, seg := range strings.Split(key, "/") {
		if !segmentRE.MatchString(seg) || strings.Contains(seg, "..") {
			return fmt.Errorf("cds: key %q has an unsafe segment %q", key, seg)
		}
	}
	return nil
}

// limitedReadCloser reads at most n bytes and closes the underlying file.
type limitedReadCloser struct {
	io.Reader
	io.Closer
}
