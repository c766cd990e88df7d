package target

import (
	"bytes"
	"context"
	"crypto/md5" //nolint:gosec // Content-MD5 is the part checksum every S3-compatible server verifies, not a security hash
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/callvault/callvault/pkg/cds"
)

// S3Class is the storage class archived objects are written in.
type S3Class string

// The storage classes an S3 target accepts.
const (
	ClassStandard  S3Class = "STANDARD"
	ClassGlacierIR S3Class = "GLACIER_IR" // S3 Glacier Instant Retrieval
)

// S3Config addresses a tenant's bucket.
type S3Config struct {
	Endpoint     string // empty for AWS itself; else e.g. https://s3.wasabisys.com
	Region       string
	Bucket       string
	Prefix       string // joined before every key
	AccessKey    string
	SecretKey    string //nolint:gosec // a credential, never logged
	StorageClass S3Class
	PathStyle    bool
	// WORM writes every object under Object Lock retention in WORMMode
	// ("GOVERNANCE" or "COMPLIANCE") until PutOptions.RetainUntil.
	WORM     bool
	WORMMode string
}

// S3 is a Target in an S3-compatible bucket.
type S3 struct {
	client   *s3.Client
	bucket   string
	prefix   string
	class    types.StorageClass
	worm     bool
	wormMode types.ObjectLockMode
	secret   string
	// lockSeen records that the bucket has Object Lock enabled, which
	// cannot be turned off again, so WORM Puts check it only once.
	lockSeen atomic.Bool
}

var _ Target = (*S3)(nil)

const (
	// s3PartSize bounds the memory of one Put: the body is read into one
	// buffer of this size at a time, whatever the recording's length.
	s3PartSize = 8 << 20
	s3MaxParts = 10000
	// s3CleanupTimeout bounds aborts and probe deletes, which run even
	// when the caller's context has ended so nothing is left behind.
	s3CleanupTimeout = 30 * time.Second
	s3MaxKeyBytes    = 1024
)

// NewS3 validates cfg and builds a client. It does not contact the server.
func NewS3(cfg S3Config) (*S3, error) {
	return newS3(cfg)
}

// newS3 lets tests adjust the client, e.g. to watch the requests sent.
func newS3(cfg S3Config, optFns ...func(*s3.Options)) (*S3, error) {
	if cfg.Bucket == "" || strings.ContainsAny(cfg.Bucket, "/\\ ") {
		return nil, fmt.Errorf("s3 target: invalid bucket name %q", cfg.Bucket)
	}
	if cfg.AccessKey == "" || cfg.SecretKey == "" {
		return nil, errors.New("s3 target: access key and secret key are required")
	}
	region := cfg.Region
	if cfg.Endpoint != "" {
		u, err := url.Parse(cfg.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("s3 target: endpoint %q is not an http(s) URL", cfg.Endpoint)
		}
		if region == "" {
			// Most S3-compatible servers ignore the region but SigV4 needs one.
			region = "us-east-1"
		}
	} else if region == "" {
		return nil, errors.New("s3 target: region is required for AWS")
	}
	class := types.StorageClass(ClassStandard)
	switch cfg.StorageClass {
	case "", ClassStandard:
	case ClassGlacierIR:
		class = types.StorageClassGlacierIr
	default:
		return nil, fmt.Errorf("s3 target: unsupported storage class %q", cfg.StorageClass)
	}
	var mode types.ObjectLockMode
	switch {
	case !cfg.WORM && cfg.WORMMode != "":
		return nil, fmt.Errorf("s3 target: WORM mode %q given but WORM is off", cfg.WORMMode)
	case !cfg.WORM:
	case cfg.WORMMode == string(types.ObjectLockModeGovernance), cfg.WORMMode == string(types.ObjectLockModeCompliance):
		mode = types.ObjectLockMode(cfg.WORMMode)
	default:
		return nil, fmt.Errorf("s3 target: WORM mode must be GOVERNANCE or COMPLIANCE, not %q", cfg.WORMMode)
	}
	prefix := strings.Trim(cfg.Prefix, "/")
	if prefix != "" {
		if err := checkS3Key(prefix); err != nil {
			return nil, fmt.Errorf("s3 target: prefix: %w", err)
		}
	}

	// One behaviour everywhere, AWS included: checksums only where an
	// operation requires them. Put does its own integrity work that every
	// provider understands: x-amz-checksum-sha256 on a single PutObject,
	// Content-MD5 on each part (which also satisfies Object Lock's checksum
	// requirement), and a read-back hash; the path tested here is the path
	// AWS gets.
	client := cds.NewS3Client(cds.S3Config{Endpoint: cfg.Endpoint, Region: region, AccessKey: cfg.AccessKey, SecretKey: cfg.SecretKey, PathStyle: cfg.PathStyle}, optFns...)
	return &S3{
		client:   client,
		bucket:   cfg.Bucket,
		prefix:   prefix,
		class:    class,
		worm:     cfg.WORM,
		wormMode: mode,
		secret:   cfg.SecretKey,
	}, nil
}

// checkS3Key refuses keys that could escape the prefix or that other
// targets (a file system over SFTP) could not hold the same way.
func checkS3Key(key string) error {
	switch {
	case key == "":
		return errors.New("empty key")
	case strings.HasPrefix(key, "/"):
		return fmt.Errorf("key %q is absolute", key)
	case strings.ContainsAny(key, "\\\x00"):
		return fmt.Errorf("key %q holds a backslash or NUL", key)
	}
	for _, seg := range strings.Split(key, "/") {
		switch seg {
		case "":
			return fmt.Errorf("key %q has an empty segment", key)
		case ".", "..":
			return fmt.Errorf("key %q has a %q segment", key, seg)
		}
	}
	return nil
}

func (s *S3) objectKey(key string) (string, error) {
	if err := checkS3Key(key); err != nil {
		return "", err
	}
	if s.prefix != "" {
		key = s.prefix + "/" + key
	}
	if len(key) > s3MaxKeyBytes {
		return "", fmt.Errorf("object key is %d bytes, more than S3's %d", len(key), s3MaxKeyBytes)
	}
	return key, nil
}

func (s *S3) location(objKey string) string { return "s3://" + s.bucket + "/" + objKey }

// Locate is the Location a Put of key answers, for an object found
// already stored there.
func (s *S3) Locate(key string) string {
	if s.prefix != "" {
		key = s.prefix + "/" + key
	}
	return s.location(key)
}

// Put streams r to key, never overwriting, and verifies what was stored.
// Stored.Key is key as given (what Open takes); Location names the full
// object key, prefix included. A body that fits one part is sent with a
// single PutObject, else as a multipart upload that is aborted on any
// failure. When opts.SHA256 differs from the body nothing is written.
func (s *S3) Put(ctx context.Context, key string, r io.Reader, opts PutOptions) (Stored, error) {
	objKey, err := s.objectKey(key)
	if err != nil {
		return Stored{}, fmt.Errorf("s3 put: %w", err)
	}
	var want []byte
	if opts.SHA256 != "" {
		want, err = hex.DecodeString(opts.SHA256)
		if err != nil || len(want) != sha256.Size {
			return Stored{}, fmt.Errorf("s3 put %s: %q is not a hex SHA-256", objKey, opts.SHA256)
		}
	}
	if opts.Size < -1 {
		return Stored{}, fmt.Errorf("s3 put %s: invalid size %d", objKey, opts.Size)
	}
	lock, err := s.lockFor(opts)
	if err != nil {
		return Stored{}, fmt.Errorf("s3 put %s: %w", objKey, err)
	}
	if s.worm && !s.lockSeen.Load() {
		// Some servers (versitygw) answer Object Lock headers on a bucket
		// without it with an error yet store the object unlocked; a retry
		// would then find the key taken and the recording never locked.
		if _, err := s.objectLock(ctx); err != nil {
			return Stored{}, err
		}
	}
	// The conditional write is what guarantees no overwrite; asking first
	// spares uploading a whole recording only to be refused, and guards on
	// servers that ignore If-None-Match.
	if err := s.refuseExisting(ctx, objKey); err != nil {
		return Stored{}, err
	}

	bufLen := s3PartSize
	if opts.Size >= 0 && opts.Size <= s3PartSize {
		bufLen = int(opts.Size) + 1 // one more byte shows a body longer than declared
	}
	buf := make([]byte, bufLen)
	n, rerr := io.ReadFull(r, buf)
	var (
		size   int64
		digest []byte
	)
	switch {
	case rerr == io.EOF || rerr == io.ErrUnexpectedEOF:
		if opts.Size >= 0 && int64(n) != opts.Size {
			return Stored{}, fmt.Errorf("s3 put %s: body is %d bytes, %d declared", objKey, n, opts.Size)
		}
		size = int64(n)
		if digest, err = s.putSingle(ctx, objKey, buf[:n], opts, want, lock); err != nil {
			return Stored{}, err
		}
	case rerr != nil:
		return Stored{}, fmt.Errorf("s3 put %s: read body: %w", objKey, rerr)
	case opts.Size >= 0 && opts.Size <= s3PartSize:
		return Stored{}, fmt.Errorf("s3 put %s: body is longer than the %d bytes declared", objKey, opts.Size)
	default:
		if size, digest, err = s.putMultipart(ctx, objKey, buf, r, opts, want, lock); err != nil {
			return Stored{}, err
		}
		if err := s.verify(ctx, objKey, size, digest); err != nil {
			return Stored{}, err
		}
	}
	return Stored{Location: s.location(objKey), Key: key, Size: size, SHA256: hex.EncodeToString(digest)}, nil
}

type s3Lock struct {
	mode  types.ObjectLockMode
	until *time.Time
}

func (s *S3) lockFor(opts PutOptions) (s3Lock, error) {
	if !s.worm {
		return s3Lock{}, nil
	}
	if opts.RetainUntil.IsZero() {
		return s3Lock{}, errors.New("WORM target needs a retain-until date")
	}
	if !opts.RetainUntil.After(time.Now()) {
		return s3Lock{}, fmt.Errorf("retain-until %s is not in the future", opts.RetainUntil.Format(time.RFC3339))
	}
	until := opts.RetainUntil.UTC()
	return s3Lock{mode: s.wormMode, until: &until}, nil
}

func (s *S3) refuseExisting(ctx context.Context, objKey string) error {
	_, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(objKey)})
	switch {
	case err == nil:
		return fmt.Errorf("s3 put %s: %w", s.location(objKey), ErrExists)
	case isS3NotFound(err), s3Status(err) == 403:
		// 403 is what AWS answers for a missing key without s3:ListBucket;
		// the conditional write still refuses an existing one.
		return nil
	default:
		return s.fail("write", s.location(objKey), err)
	}
}

// putSingle writes body with one PutObject and answers its SHA-256.
func (s *S3) putSingle(ctx context.Context, objKey string, body []byte, opts PutOptions, want []byte, lock s3Lock) ([]byte, error) {
	sum := sha256.Sum256(body)
	if want != nil && !bytes.Equal(sum[:], want) {
		return nil, s.mismatch(objKey, sum[:], want)
	}
	// The declared digest, when there is one, so the server checks the
	// bytes it received against the caller's hash, not only against ours.
	declared := sum[:]
	if want != nil {
		declared = want
	}
	b64 := base64.StdEncoding.EncodeToString(declared)
	in := &s3.PutObjectInput{
		Bucket: aws.String(s.bucket),
		Key:    aws.String(objKey),
		// A seekable body: over plain http SigV4 hashes the payload, and
		// retries rewind it.
		Body:                      bytes.NewReader(body),
		ContentLength:             aws.Int64(int64(len(body))),
		ChecksumSHA256:            aws.String(b64),
		IfNoneMatch:               aws.String("*"),
		StorageClass:              s.class,
		ObjectLockMode:            lock.mode,
		ObjectLockRetainUntilDate: lock.until,
	}
	if opts.ContentType != "" {
		in.ContentType = aws.String(opts.ContentType)
	}
	if err := opts.commit(sum[:], int64(len(body))); err != nil {
		return nil, fmt.Errorf("s3 put %s: %w", objKey, err)
	}
	out, err := s.client.PutObject(ctx, in)
	if err != nil {
		if err := s.settle(ctx, objKey, int64(len(body)), sum[:], s.writeErr(objKey, err)); err != nil {
			return nil, err
		}
		return sum[:], nil
	}
	// The server checked the body against x-amz-checksum-sha256; its echo
	// says so. Without one, the object is read back.
	switch echo := aws.ToString(out.ChecksumSHA256); echo {
	case b64:
		return sum[:], nil
	case "":
		return sum[:], s.verify(ctx, objKey, int64(len(body)), sum[:])
	default:
		return nil, &Failure{Reason: ReasonVerify, Op: "verify", Detail: fmt.Sprintf(
			"%s: server reports SHA-256 %s, %s was sent; the object is left in place", s.location(objKey), echo, b64)}
	}
}

// putMultipart uploads first and the rest of r in parts of s3PartSize,
// reusing first as the only buffer. It answers the size and SHA-256 sent.
func (s *S3) putMultipart(ctx context.Context, objKey string, first []byte, r io.Reader, opts PutOptions, want []byte, lock s3Lock) (size int64, digest []byte, err error) {
	in := &s3.CreateMultipartUploadInput{
		Bucket:                    aws.String(s.bucket),
		Key:                       aws.String(objKey),
		StorageClass:              s.class,
		ObjectLockMode:            lock.mode,
		ObjectLockRetainUntilDate: lock.until,
	}
	if opts.ContentType != "" {
		in.ContentType = aws.String(opts.ContentType)
	}
	created, err := s.client.CreateMultipartUpload(ctx, in)
	if err != nil {
		return 0, nil, s.writeErr(objKey, err)
	}
	uploadID := created.UploadId
	completed := false
	defer func() {
		if completed {
			return
		}
		if aerr := s.abort(ctx, objKey, uploadID); aerr != nil {
			err = errors.Join(err, aerr)
		}
	}()

	h := sha256.New()
	var parts []types.CompletedPart
	buf, n := first, len(first)
	for num := int32(1); n > 0; num++ {
		if num > s3MaxParts {
			return 0, nil, fmt.Errorf("s3 put %s: body exceeds %d parts of %d bytes", objKey, s3MaxParts, s3PartSize)
		}
		chunk := buf[:n]
		h.Write(chunk)
		size += int64(n)
		md := md5.Sum(chunk) //nolint:gosec // see import
		out, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
			Bucket:        aws.String(s.bucket),
			Key:           aws.String(objKey),
			UploadId:      uploadID,
			PartNumber:    aws.Int32(num),
			Body:          bytes.NewReader(chunk),
			ContentLength: aws.Int64(int64(n)),
			ContentMD5:    aws.String(base64.StdEncoding.EncodeToString(md[:])),
		})
		if err != nil {
			return 0, nil, s.writeErr(objKey, err)
		}
		parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(num)})
		if n < len(buf) {
			break // a short read was the last one
		}
		var rerr error
		n, rerr = io.ReadFull(r, buf)
		if rerr != nil && rerr != io.EOF && rerr != io.ErrUnexpectedEOF {
			return 0, nil, fmt.Errorf("s3 put %s: read body: %w", objKey, rerr)
		}
	}
	if opts.Size >= 0 && size != opts.Size {
		return 0, nil, fmt.Errorf("s3 put %s: body is %d bytes, %d declared", objKey, size, opts.Size)
	}
	digest = h.Sum(nil)
	if want != nil && !bytes.Equal(digest, want) {
		return 0, nil, s.mismatch(objKey, digest, want)
	}
	if err := opts.commit(digest, size); err != nil {
		return 0, nil, fmt.Errorf("s3 put %s: %w", objKey, err)
	}
	_, err = s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket:          aws.String(s.bucket),
		Key:             aws.String(objKey),
		UploadId:        uploadID,
		IfNoneMatch:     aws.String("*"),
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		if err = s.settle(ctx, objKey, size, digest, s.writeErr(objKey, err)); err != nil {
			return 0, nil, err
		}
	}
	completed = true
	return size, digest, nil
}

// abort drops an unfinished upload so its parts are neither kept nor
// billed, also when ctx has ended (the likeliest reason it is unfinished).
func (s *S3) abort(ctx context.Context, objKey string, uploadID *string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s3CleanupTimeout)
	defer cancel()
	_, err := s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket: aws.String(s.bucket), Key: aws.String(objKey), UploadId: uploadID,
	})
	var nsu *types.NoSuchUpload
	if err != nil && !errors.As(err, &nsu) {
		return s.fail("abort", s.location(objKey)+" upload "+aws.ToString(uploadID), err)
	}
	return nil
}

// verify reads objKey back and compares it with what was sent. A
// mismatch is reported, never repaired: the object stays for inspection.
func (s *S3) verify(ctx context.Context, objKey string, size int64, digest []byte) error {
	n, got, err := s.readBack(ctx, objKey)
	if err != nil {
		return s.fail("verify", s.location(objKey), err)
	}
	if n != size || !bytes.Equal(got, digest) {
		return &Failure{Reason: ReasonVerify, Op: "verify", Detail: fmt.Sprintf(
			"%s holds %d bytes with SHA-256 %x; %d bytes with %x were sent; the object is left in place",
			s.location(objKey), n, got, size, digest)}
	}
	return nil
}

// readBack reads objKey whole and answers its size and SHA-256.
func (s *S3) readBack(ctx context.Context, objKey string) (int64, []byte, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(objKey)})
	if err != nil {
		return 0, nil, err
	}
	defer out.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, out.Body)
	if err != nil {
		return n, nil, err
	}
	return n, h.Sum(nil), nil
}

func (s *S3) mismatch(objKey string, got, want []byte) error {
	return &Failure{Reason: ReasonVerify, Op: "write", Detail: fmt.Sprintf(
		"%s: body has SHA-256 %x, %x was declared; nothing was written", s.location(objKey), got, want)}
}

// writeErr maps a refused conditional write to ErrExists.
func (s *S3) writeErr(objKey string, err error) error {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode() == "PreconditionFailed" {
		return fmt.Errorf("s3 put %s: %w", s.location(objKey), ErrExists)
	}
	return s.fail("write", s.location(objKey), err)
}

// settle decides a conditional write whose answer was lost to the
// network: the server may have stored the body, refused it early (a
// server answering 412 before reading the body resets the connection
// under it) or never seen it. The object is read back: the very bytes
// sent are this write's success, other bytes a taken key, no object
// the original failure, to be retried.
func (s *S3) settle(ctx context.Context, objKey string, size int64, digest []byte, err error) error {
	var f *Failure
	var apiErr smithy.APIError
	if !errors.As(err, &f) || errors.As(err, &apiErr) || ctx.Err() != nil {
		return err
	}
	n, got, rerr := s.readBack(ctx, objKey)
	switch {
	case rerr != nil:
		return err
	case n == size && bytes.Equal(got, digest):
		return nil
	default:
		return fmt.Errorf("s3 put %s: %w", s.location(objKey), ErrExists)
	}
}

// Open reads length bytes of key from offset (length < 0: to the end).
func (s *S3) Open(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	objKey, err := s.objectKey(key)
	if err != nil {
		return nil, fmt.Errorf("s3 open: %w", err)
	}
	if offset < 0 {
		return nil, fmt.Errorf("s3 open %s: negative offset %d", objKey, offset)
	}
	in := &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(objKey)}
	switch {
	case length == 0:
		// Nothing to read, but the object must exist.
		if _, err := s.size(ctx, objKey); err != nil {
			return nil, err
		}
		return io.NopCloser(bytes.NewReader(nil)), nil
	default:
		in.Range = cds.ByteRange(offset, length)
	}
	out, err := s.client.GetObject(ctx, in)
	var apiErr smithy.APIError
	if err != nil && errors.As(err, &apiErr) && apiErr.ErrorCode() == "InvalidRange" {
		// A range from the end onwards reads nothing, as a file does.
		if size, serr := s.size(ctx, objKey); serr == nil && offset >= size {
			return io.NopCloser(bytes.NewReader(nil)), nil
		}
	}
	if err != nil {
		if isS3NotFound(err) {
			return nil, fmt.Errorf("s3 open %s: %w", s.location(objKey), ErrNotFound)
		}
		return nil, s.fail("read", s.location(objKey), err)
	}
	return out.Body, nil
}

func (s *S3) size(ctx context.Context, objKey string) (int64, error) {
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(objKey)})
	if err != nil {
		if isS3NotFound(err) {
			return 0, fmt.Errorf("s3 open %s: %w", s.location(objKey), ErrNotFound)
		}
		return 0, s.fail("read", s.location(objKey), err)
	}
	return aws.ToInt64(out.ContentLength), nil
}

// Probe checks the bucket, Object Lock for WORM configs, then writes a
// small object under prefix, reads it back and deletes it.
//
// The probe object carries no retention, so it can be deleted like any
// object. When a WORM bucket has a default retention rule, which would
// otherwise lock the probe (for years, in COMPLIANCE mode), the probe
// instead gets an explicit short GOVERNANCE retention and is deleted with
// the governance bypass, which the credentials must then allow. Deletes
// name the version written, so a versioned bucket keeps no copy either.
func (s *S3) Probe(ctx context.Context, prefix string) error {
	if err := s.headBucket(ctx); err != nil {
		return err
	}
	var bypass bool
	if s.worm {
		hasDefault, err := s.objectLock(ctx)
		if err != nil {
			return err
		}
		bypass = hasDefault
	}

	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	key := ".callvault-probe-" + hex.EncodeToString(nonce[:])
	if p := strings.Trim(prefix, "/"); p != "" {
		key = p + "/" + key
	}
	objKey, err := s.objectKey(key)
	if err != nil {
		return &Failure{Reason: ReasonOther, Op: "write", Detail: "invalid probe prefix: " + err.Error(), Err: err}
	}
	body := make([]byte, 256)
	_, _ = rand.Read(body)
	sum := sha256.Sum256(body)
	in := &s3.PutObjectInput{
		Bucket:         aws.String(s.bucket),
		Key:            aws.String(objKey),
		Body:           bytes.NewReader(body),
		ContentLength:  aws.Int64(int64(len(body))),
		ContentType:    aws.String("application/octet-stream"),
		ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(sum[:])),
		IfNoneMatch:    aws.String("*"),
		// The configured class, so a provider refusing it shows here
		// rather than on the first recording.
		StorageClass: s.class,
	}
	if bypass {
		in.ObjectLockMode = types.ObjectLockModeGovernance
		in.ObjectLockRetainUntilDate = aws.Time(time.Now().Add(time.Hour).UTC())
	}
	out, err := s.client.PutObject(ctx, in)
	if err != nil {
		return s.fail("write", s.location(objKey), err)
	}
	readErr := s.probeRead(ctx, objKey, body)
	delErr := s.probeDelete(ctx, objKey, out.VersionId, bypass)
	if readErr != nil {
		var f *Failure
		if delErr != nil && errors.As(readErr, &f) {
			f.Detail += "; the probe object could not be deleted either: " + delErr.Error()
		}
		return readErr
	}
	return delErr
}

func (s *S3) probeRead(ctx context.Context, objKey string, want []byte) error {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(objKey)})
	if err != nil {
		return s.fail("read", s.location(objKey), err)
	}
	defer out.Body.Close()
	got, err := io.ReadAll(io.LimitReader(out.Body, int64(len(want))+1))
	if err != nil {
		return s.fail("read", s.location(objKey), err)
	}
	if !bytes.Equal(got, want) {
		return &Failure{Reason: ReasonVerify, Op: "read", Detail: fmt.Sprintf(
			"%s: read back %d bytes that differ from the %d written", s.location(objKey), len(got), len(want))}
	}
	return nil
}

func (s *S3) probeDelete(ctx context.Context, objKey string, versionID *string, bypass bool) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s3CleanupTimeout)
	defer cancel()
	in := &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(objKey)}
	if aws.ToString(versionID) != "" {
		in.VersionId = versionID
	}
	if bypass {
		in.BypassGovernanceRetention = aws.Bool(true)
	}
	if _, err := s.client.DeleteObject(ctx, in); err != nil {
		return s.fail("delete", s.location(objKey), err)
	}
	return nil
}

// headBucket checks the bucket exists and the credentials reach it.
func (s *S3) headBucket(ctx context.Context) error {
	subject := "bucket " + s.bucket
	_, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.bucket)})
	if err == nil {
		return nil
	}
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) {
		return s.fail("bucket", subject, err)
	}
	// A HEAD answer has no body, so its error is a bare status: a wrong
	// secret reads 403 and, on some servers, an unknown access key 404.
	// A listing of one key needs the same permission and names the code.
	if _, lerr := s.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), MaxKeys: aws.Int32(1)}); lerr != nil {
		return s.fail("bucket", subject, lerr)
	}
	f := s.fail("bucket", subject, err)
	if s3Status(err) == 404 {
		f.Reason = ReasonBucketMissing
	}
	return f
}

// CheckObjectLock reports, as a *Failure with Op "object_lock", when the
// bucket cannot hold WORM objects.
func (s *S3) CheckObjectLock(ctx context.Context) error {
	_, err := s.objectLock(ctx)
	return err
}

// objectLock answers whether the bucket's Object Lock has a default
// retention rule.
func (s *S3) objectLock(ctx context.Context) (bool, error) {
	subject := "bucket " + s.bucket
	out, err := s.client.GetObjectLockConfiguration(ctx, &s3.GetObjectLockConfigurationInput{Bucket: aws.String(s.bucket)})
	if err != nil {
		var apiErr smithy.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode() == "NotImplemented" {
			return false, &Failure{Reason: ReasonNoObjectLock, Op: "object_lock", Err: err,
				Detail: subject + ": the server does not support Object Lock, so WORM retention cannot be honoured"}
		}
		return false, s.fail("object_lock", subject, err)
	}
	cfg := out.ObjectLockConfiguration
	if cfg == nil || cfg.ObjectLockEnabled != types.ObjectLockEnabledEnabled {
		return false, &Failure{Reason: ReasonNoObjectLock, Op: "object_lock",
			Detail: subject + " has no Object Lock enabled, so WORM retention cannot be honoured"}
	}
	s.lockSeen.Store(true)
	return cfg.Rule != nil && cfg.Rule.DefaultRetention != nil, nil
}

// Close releases nothing: the SDK's HTTP client needs no closing.
func (s *S3) Close() error { return nil }

// fail classifies err and names what it concerned, keeping the secret
// out of the detail should any server echo it.
func (s *S3) fail(op, subject string, err error) *Failure {
	var f *Failure
	if !errors.As(classifyS3(op, err), &f) {
		f = &Failure{Reason: ReasonOther, Op: op, Detail: err.Error(), Err: err}
	}
	f.Detail = subject + ": " + f.Detail
	if s.secret != "" {
		f.Detail = strings.ReplaceAll(f.Detail, s.secret, "[redacted]")
	}
	return f
}

// classifyS3 turns an SDK error into a *Failure with a Reason.
func classifyS3(op string, err error) error {
	if err == nil {
		return nil
	}
	f := &Failure{Reason: ReasonOther, Op: op, Detail: err.Error(), Err: err}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		code, msg := apiErr.ErrorCode(), apiErr.ErrorMessage()
		f.Detail = code
		if st := s3Status(err); st != 0 {
			f.Detail += " (HTTP " + strconv.Itoa(st) + ")"
		}
		if msg != "" {
			f.Detail += ": " + msg
		}
		switch code {
		case "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
			"RequestTimeTooSkewed", "XAdminUserNotFound": // versitygw's unknown access key
			f.Reason = ReasonAuth
		case "NoSuchBucket":
			f.Reason = ReasonBucketMissing
		case "AccessDenied", "AllAccessDisabled", "Forbidden":
			f.Reason = ReasonPermission
		case "BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch":
			f.Reason = ReasonVerify
		case "ObjectLockConfigurationNotFoundError":
			f.Reason = ReasonNoObjectLock
			f.Detail += "; the bucket has no Object Lock enabled, so WORM retention cannot be honoured"
		case "InvalidRequest":
			// Object Lock headers sent to a bucket without it.
			if m := strings.ToLower(strings.ReplaceAll(msg, " ", "")); strings.Contains(m, "objectlockconfiguration") {
				f.Reason = ReasonNoObjectLock
			}
		}
		return f
	}
	var opErr *net.OpError
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case errors.As(err, &dnsErr):
		f.Reason, f.Detail = ReasonUnreachable, dnsErr.Error()
	case errors.As(err, &opErr):
		f.Reason, f.Detail = ReasonUnreachable, opErr.Error()
	case errors.As(err, &netErr) && netErr.Timeout(), errors.Is(err, context.DeadlineExceeded):
		f.Reason = ReasonUnreachable
	}
	return f
}

func s3Status(err error) int {
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

func isS3NotFound(err error) bool {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	var apiErr smithy.APIError
	return errors.As(err, &nsk) || errors.As(err, &nf) ||
		(errors.As(err, &apiErr) && (apiErr.ErrorCode() == "NoSuchKey" || apiErr.ErrorCode() == "NotFound"))
}
