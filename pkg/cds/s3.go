package cds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// S3Config addresses an S3-compatible bucket.
type S3Config struct {
	Endpoint  string // empty for AWS itself
	Region    string
	Bucket    string
	AccessKey string
	SecretKey string //nolint:gosec // a credential, never logged
	PathStyle bool
}

// S3 stores objects in one bucket.
type S3 struct {
	client *s3.Client
	tm     *transfermanager.Client
	bucket string
}

var (
	_ Store  = (*S3)(nil)
	_ Lister = (*S3)(nil)
)

// partSize bounds memory per upload: the uploader holds at most
// (concurrency+1) parts of this size, however long the recording.
const partSize = 8 << 20

// NewS3 builds a client. It does not contact the server.
func NewS3(cfg S3Config) (*S3, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("cds s3: bucket is required")
	}
	region := cfg.Region
	if region == "" {
		region = "us-east-1"
	}
	cfg.Region = region
	client := NewS3Client(cfg)
	tm := transfermanager.New(client, func(o *transfermanager.Options) {
		o.PartSizeBytes = partSize
		o.MultipartUploadThreshold = partSize
		o.Concurrency = 2
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
	})
	return &S3{client: client, tm: tm, bucket: cfg.Bucket}, nil
}

// NewS3Client is the S3 client callvault uses for every S3-compatible
// service: static credentials, the endpoint when one is given, path-style
// addressing as configured, and checksums only where an operation requires
// them (the SDK's default CRC trailers are refused by several
// S3-compatible servers). optFns adjust it further.
func NewS3Client(cfg S3Config, optFns ...func(*s3.Options)) *s3.Client {
	region := cfg.Region
	if region == "" {
		region = "us-east-1"
	}
	awsCfg := aws.Config{
		Region:      region,
		Credentials: credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, ""),
	}
	return s3.NewFromConfig(awsCfg, append([]func(*s3.Options){func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	}}, optFns...)...)
}

// ByteRange is the HTTP Range of length bytes from offset (length < 0: to
// the end), or nil for the whole object.
func ByteRange(offset, length int64) *string {
	switch {
	case length > 0:
		return aws.String("bytes=" + strconv.FormatInt(offset, 10) + "-" + strconv.FormatInt(offset+length-1, 10))
	case offset > 0:
		return aws.String("bytes=" + strconv.FormatInt(offset, 10) + "-")
	}
	return nil
}

// EnsureBucket creates the bucket when it does not exist.
func (s *S3) EnsureBucket(ctx context.Context) error {
	if _, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.bucket)}); err == nil {
		return nil
	}
	_, err := s.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(s.bucket)})
	var owned *types.BucketAlreadyOwnedByYou
	if err != nil && !errors.As(err, &owned) {
		return fmt.Errorf("cds s3: create bucket %s: %w", s.bucket, err)
	}
	return nil
}

// Put streams r to the bucket, multipart above partSize.
func (s *S3) Put(ctx context.Context, key string, r io.Reader, contentType string) (int64, error) {
	if err := CheckKey(key); err != nil {
		return 0, err
	}
	cr := &countingReader{r: r}
	in := &transfermanager.UploadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key), Body: cr}
	if contentType != "" {
		in.ContentType = aws.String(contentType)
	}
	if _, err := s.tm.UploadObject(ctx, in); err != nil {
		return cr.n, fmt.Errorf("cds s3 put %s: %w", key, err)
	}
	return cr.n, nil
}

// Open reads a byte range of key.
func (s *S3) Open(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("cds s3 open %s: negative offset %d", key, offset)
	}
	in := &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)}
	switch {
	case length == 0:
		// Nothing to read, but the object must still exist.
		if _, err := s.Stat(ctx, key); err != nil {
			return nil, err
		}
		return io.NopCloser(emptyReader{}), nil
	default:
		in.Range = ByteRange(offset, length)
	}
	out, err := s.client.GetObject(ctx, in)
	var apiErr smithy.APIError
	if err != nil && errors.As(err, &apiErr) && apiErr.ErrorCode() == "InvalidRange" {
		// A range starting at or past the end reads nothing, as a file does.
		if obj, serr := s.Stat(ctx, key); serr == nil && offset >= obj.Size {
			return io.NopCloser(emptyReader{}), nil
		}
	}
	if err != nil {
		return nil, s.mapErr("open", key, err)
	}
	return out.Body, nil
}

// Stat reports an object's size and content type.
func (s *S3) Stat(ctx context.Context, key string) (Object, error) {
	if err := CheckKey(key); err != nil {
		return Object{}, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil {
		return Object{}, s.mapErr("stat", key, err)
	}
	return Object{Key: key, Size: aws.ToInt64(out.ContentLength), ContentType: aws.ToString(out.ContentType)}, nil
}

// Delete removes key; S3 answers success for a missing key too.
func (s *S3) Delete(ctx context.Context, key string) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)}); err != nil {
		if errors.Is(s.mapErr("delete", key, err), ErrNotFound) {
			return nil
		}
		return fmt.Errorf("cds s3 delete %s: %w", key, err)
	}
	return nil
}

// List pages through the bucket's keys under prefix.
func (s *S3) List(ctx context.Context, prefix string, fn func(Object) error) error {
	in := &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket)}
	if prefix != "" {
		in.Prefix = aws.String(prefix)
	}
	pages := s3.NewListObjectsV2Paginator(s.client, in)
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("cds s3 list %s: %w", prefix, err)
		}
		for _, o := range page.Contents {
			if err := fn(Object{Key: aws.ToString(o.Key), Size: aws.ToInt64(o.Size), Modified: aws.ToTime(o.LastModified)}); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *S3) mapErr(op, key string, err error) error {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	var apiErr smithy.APIError
	if errors.As(err, &nsk) || errors.As(err, &nf) || (errors.As(err, &apiErr) && (apiErr.ErrorCode() == "NotFound" || apiErr.ErrorCode() == "NoSuchKey")) {
		return fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return fmt.Errorf("cds s3 %s %s: %w", op, key, err)
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, io.EOF }
