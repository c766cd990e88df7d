// Package target writes archived objects to a tenant's own storage: an
// S3-compatible bucket (AWS S3 Standard, S3 Glacier Instant Retrieval,
// Wasabi) or an SFTP server whose host key is pinned. A target never
// overwrites or deletes an object on its own: Put refuses a key that
// exists, and the only deletion is of the probe object TestConfig writes.
package target

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"
)

// Stored is what a target holds after a verified Put.
type Stored struct {
	// Location names the object for people and for playback, e.g.
	// "s3://bucket/key" or "sftp://host:port/path".
	Location string
	Key      string
	Size     int64
	// SHA256 is the hex SHA-256 of the bytes stored (after any
	// encryption), checked against the target after the write.
	SHA256 string
}

// PutOptions shape one upload.
type PutOptions struct {
	ContentType string
	// Size is the exact byte count of the body, or -1 when unknown (an
	// encrypted stream).
	Size int64
	// SHA256, when known (hex), is the body's hash: an S3 target sends it
	// so the server refuses a body that differs, and every target checks
	// the stored object against it.
	SHA256 string
	// RetainUntil, when set on a WORM S3 target, is the Object Lock
	// retain-until date of the object.
	RetainUntil time.Time
	// BeforeCommit, when set, is called with the SHA-256 (hex) and size of
	// the whole body once it is staged and just before the step that makes
	// the object appear at key (PutObject, CompleteMultipartUpload, the
	// SFTP rename); an error from it aborts the Put. A caller that cannot
	// compare the bytes later (encrypted ones) records them here.
	BeforeCommit func(sha256 string, size int64) error
}

// commit runs opts.BeforeCommit, if any.
func (o PutOptions) commit(sum []byte, size int64) error {
	if o.BeforeCommit == nil {
		return nil
	}
	return o.BeforeCommit(hex.EncodeToString(sum), size)
}

// Target is one configured remote storage.
type Target interface {
	// Put streams r to key and verifies what was stored. It never
	// overwrites: a key that already exists answers an error wrapping
	// ErrExists.
	Put(ctx context.Context, key string, r io.Reader, opts PutOptions) (Stored, error)
	// Open reads length bytes of key from offset (length < 0: to the end).
	// A missing key answers an error wrapping ErrNotFound.
	Open(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
	// Locate is the location Put reports for key.
	Locate(key string) string
	// Probe writes a small object under prefix, reads it back, compares
	// and deletes it; it reports the exact failure as a *Failure.
	Probe(ctx context.Context, prefix string) error
	// Close releases connections.
	Close() error
}

var (
	// ErrExists says a Put found its key taken.
	ErrExists = errors.New("an object already exists at that key")
	// ErrNotFound says a key holds no object.
	ErrNotFound = errors.New("no such object")
)

// Reason classifies a failure for the status tag and TestConfig.
type Reason string

// The reasons a target reports.
const (
	ReasonAuth            Reason = "auth"              // credentials refused
	ReasonBucketMissing   Reason = "bucket_missing"    // no such bucket
	ReasonPermission      Reason = "permission"        // authenticated but not allowed
	ReasonHostKeyMismatch Reason = "host_key_mismatch" // SFTP server offered another key
	ReasonUnreachable     Reason = "unreachable"       // connect, DNS or timeout
	ReasonNoObjectLock    Reason = "object_lock_missing"
	ReasonVerify          Reason = "verify_failed" // stored bytes differ from what was sent
	ReasonOther           Reason = "other"
)

// Failure is a classified target error. Detail never holds a secret.
type Failure struct {
	Reason Reason
	Op     string
	Detail string
	Err    error
}

func (f *Failure) Error() string {
	return fmt.Sprintf("%s: %s: %s", f.Op, f.Reason, f.Detail)
}

func (f *Failure) Unwrap() error { return f.Err }

// ReasonOf is err's reason, ReasonOther when it carries none.
func ReasonOf(err error) Reason {
	var f *Failure
	if errors.As(err, &f) {
		return f.Reason
	}
	return ReasonOther
}
