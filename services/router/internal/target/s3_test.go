package target

import (
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
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// s3TestServer is the S3-compatible server the integration tests use.
type s3TestServer struct {
	endpoint, access, secret string
	client                   *s3.Client
}

func s3TestEnv(t *testing.T) s3TestServer {
	t.Helper()
	ep := os.Getenv("CALLVAULT_TEST_S3_ENDPOINT")
	if ep == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("CALLVAULT_TEST_S3_ENDPOINT is not set; CI must run the S3 tests")
		}
		t.Skip("CALLVAULT_TEST_S3_ENDPOINT is not set")
	}
	srv := s3TestServer{
		endpoint: ep,
		access:   os.Getenv("CALLVAULT_TEST_S3_ACCESS_KEY"),
		secret:   os.Getenv("CALLVAULT_TEST_S3_SECRET_KEY"),
	}
	srv.client = s3.NewFromConfig(aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider(srv.access, srv.secret, ""),
	}, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(ep)
		o.UsePathStyle = true
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	return srv
}

func s3TestRandom(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func s3TestSum(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// bucket creates a fresh bucket and removes it, with everything in it,
// when the test ends.
func (srv s3TestServer) bucket(t *testing.T, objectLock bool) string {
	t.Helper()
	name := "cvtest-" + hex.EncodeToString(s3TestRandom(t, 8))
	ctx := t.Context()
	in := &s3.CreateBucketInput{Bucket: aws.String(name)}
	if objectLock {
		in.ObjectLockEnabledForBucket = aws.Bool(true)
	}
	if _, err := srv.client.CreateBucket(ctx, in); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		for _, k := range srv.keys(t, ctx, name, "") {
			_, _ = srv.client.DeleteObject(ctx, &s3.DeleteObjectInput{
				Bucket: aws.String(name), Key: aws.String(k), BypassGovernanceRetention: aws.Bool(objectLock),
			})
		}
		for _, u := range srv.uploads(t, ctx, name) {
			_, _ = srv.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(name), Key: u.Key, UploadId: u.UploadId})
		}
		if _, err := srv.client.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(name)}); err != nil {
			t.Logf("delete bucket %s: %v", name, err)
		}
	})
	return name
}

func (srv s3TestServer) keys(t *testing.T, ctx context.Context, bucket, prefix string) []string {
	t.Helper()
	var keys []string
	pages := s3.NewListObjectsV2Paginator(srv.client, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			t.Fatalf("list %s: %v", bucket, err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}

func (srv s3TestServer) uploads(t *testing.T, ctx context.Context, bucket string) []types.MultipartUpload {
	t.Helper()
	out, err := srv.client.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if err != nil {
		t.Fatalf("list multipart uploads: %v", err)
	}
	return out.Uploads
}

func (srv s3TestServer) get(t *testing.T, bucket, key string) []byte {
	t.Helper()
	out, err := srv.client.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (srv s3TestServer) assertAbsent(t *testing.T, bucket, key string) {
	t.Helper()
	_, err := srv.client.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if !isS3NotFound(err) {
		t.Errorf("object %s: want none, HeadObject answered %v", key, err)
	}
	if u := srv.uploads(t, t.Context(), bucket); len(u) != 0 {
		t.Errorf("%d multipart uploads left in progress", len(u))
	}
}

func (srv s3TestServer) config(bucket string) S3Config {
	return S3Config{
		Endpoint: srv.endpoint, Region: "us-east-1", Bucket: bucket, Prefix: "tenant-1/archive",
		AccessKey: srv.access, SecretKey: srv.secret, PathStyle: true,
	}
}

func (srv s3TestServer) target(t *testing.T, cfg S3Config, optFns ...func(*s3.Options)) *S3 {
	t.Helper()
	tg, err := newS3(cfg, optFns...)
	if err != nil {
		t.Fatalf("newS3: %v", err)
	}
	t.Cleanup(func() { _ = tg.Close() })
	return tg
}

// s3Recorder keeps the requests a target sends, so tests can check what
// went on the wire where the server does not keep it.
type s3Recorder struct {
	mu   sync.Mutex
	reqs []*http.Request
	next *http.Client
	// alter, when set, changes a response before the SDK reads it, to
	// stand for a server or network that loses or corrupts something.
	alter func(*http.Request, *http.Response)
}

func (r *s3Recorder) Do(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.reqs = append(r.reqs, req.Clone(context.Background()))
	r.mu.Unlock()
	resp, err := r.next.Do(req)
	if err == nil && r.alter != nil {
		r.alter(req, resp)
	}
	return resp, err
}

func (r *s3Recorder) count(method string) int {
	n := 0
	for _, req := range r.requests() {
		if req.Method == method {
			n++
		}
	}
	return n
}

func (r *s3Recorder) requests() []*http.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*http.Request(nil), r.reqs...)
}

func (r *s3Recorder) install(o *s3.Options) { o.HTTPClient = r }

func s3TestOpen(t *testing.T, tg *S3, key string, offset, length int64) []byte {
	t.Helper()
	rc, err := tg.Open(t.Context(), key, offset, length)
	if err != nil {
		t.Fatalf("Open(%s, %d, %d): %v", key, offset, length, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// onlyReader hides bytes.Reader's Seek, as a pipe or decrypting stream would.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func TestS3RoundTripSinglePart(t *testing.T) {
	t.Parallel()
	srv := s3TestEnv(t)
	bucket := srv.bucket(t, false)
	rec := &s3Recorder{next: &http.Client{}}
	cfg := srv.config(bucket)
	cfg.StorageClass = ClassGlacierIR
	tg := srv.target(t, cfg, rec.install)

	body := s3TestRandom(t, 1<<20)
	sum := s3TestSum(body)
	st, err := tg.Put(t.Context(), "2026/05/call-1.wav", onlyReader{bytes.NewReader(body)},
		PutOptions{ContentType: "audio/wav", Size: int64(len(body)), SHA256: sum})
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	objKey := "tenant-1/archive/2026/05/call-1.wav"
	want := Stored{Location: "s3://" + bucket + "/" + objKey, Key: "2026/05/call-1.wav", Size: int64(len(body)), SHA256: sum}
	if st != want {
		t.Errorf("Put = %+v, want %+v", st, want)
	}
	if got := tg.Locate(st.Key); got != st.Location {
		t.Errorf("Locate = %q, want %q", got, st.Location)
	}
	if got := srv.get(t, bucket, objKey); !bytes.Equal(got, body) {
		t.Error("stored bytes differ from the body")
	}

	var puts, gets int
	for _, r := range rec.requests() {
		switch r.Method {
		case http.MethodPut:
			puts++
			if got := r.Header.Get("X-Amz-Storage-Class"); got != "GLACIER_IR" {
				t.Errorf("PutObject storage class header = %q, want GLACIER_IR", got)
			}
			if got, want := r.Header.Get("X-Amz-Checksum-Sha256"), base64.StdEncoding.EncodeToString(mustHex(t, sum)); got != want {
				t.Errorf("PutObject checksum header = %q, want %q", got, want)
			}
			if r.Header.Get("If-None-Match") != "*" {
				t.Error("PutObject was not conditional")
			}
		case http.MethodGet:
			gets++
		}
	}
	if puts != 1 || gets != 0 {
		t.Errorf("Put sent %d PUT and %d GET requests; want one PutObject verified by the checksum echo", puts, gets)
	}

	head, err := srv.client.HeadObject(t.Context(), &s3.HeadObjectInput{
		Bucket: aws.String(bucket), Key: aws.String(objKey), ChecksumMode: types.ChecksumModeEnabled,
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := aws.ToString(head.ContentType); got != "audio/wav" {
		t.Errorf("content type = %q", got)
	}
	if got, want := aws.ToString(head.ChecksumSHA256), base64.StdEncoding.EncodeToString(mustHex(t, sum)); got != want {
		t.Errorf("stored SHA-256 checksum = %q, want %q", got, want)
	}
	// versitygw (posix) accepts any storage class and reports STANDARD;
	// AWS reports the class written. The header check above is what this
	// target controls.
	if head.StorageClass != types.StorageClassGlacierIr && head.StorageClass != types.StorageClassStandard && head.StorageClass != "" {
		t.Errorf("storage class = %q", head.StorageClass)
	}

	if got := s3TestOpen(t, tg, st.Key, 1000, 5000); !bytes.Equal(got, body[1000:6000]) {
		t.Error("Open(1000, 5000) read the wrong bytes")
	}
	if got := s3TestOpen(t, tg, st.Key, int64(len(body))-10, -1); !bytes.Equal(got, body[len(body)-10:]) {
		t.Error("Open(end-10, -1) read the wrong bytes")
	}
	if got := s3TestOpen(t, tg, st.Key, int64(len(body)), -1); len(got) != 0 {
		t.Errorf("Open at the end read %d bytes", len(got))
	}
	if got := s3TestOpen(t, tg, st.Key, 5, 0); len(got) != 0 {
		t.Errorf("Open(5, 0) read %d bytes", len(got))
	}
	for _, length := range []int64{-1, 0, 10} {
		if _, err := tg.Open(t.Context(), "2026/05/missing.wav", 0, length); !errors.Is(err, ErrNotFound) {
			t.Errorf("Open missing (length %d) = %v, want ErrNotFound", length, err)
		}
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestS3RoundTripMultipartUnknownSize(t *testing.T) {
	t.Parallel()
	srv := s3TestEnv(t)
	bucket := srv.bucket(t, false)
	rec := &s3Recorder{next: &http.Client{}}
	cfg := srv.config(bucket)
	cfg.StorageClass = ClassGlacierIR
	tg := srv.target(t, cfg, rec.install)

	body := s3TestRandom(t, 20<<20)
	st, err := tg.Put(t.Context(), "big.age", onlyReader{bytes.NewReader(body)}, PutOptions{ContentType: "application/age", Size: -1})
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if st.SHA256 != s3TestSum(body) || st.Size != int64(len(body)) {
		t.Errorf("Put = %+v, want size %d sha %s", st, len(body), s3TestSum(body))
	}
	if got := srv.get(t, bucket, "tenant-1/archive/big.age"); s3TestSum(got) != st.SHA256 {
		t.Error("stored object's hash differs")
	}

	var parts int
	var created, completed, verified bool
	for _, r := range rec.requests() {
		q := r.URL.Query()
		switch {
		case r.Method == http.MethodPost && q.Has("uploads"):
			created = true
			if got := r.Header.Get("X-Amz-Storage-Class"); got != "GLACIER_IR" {
				t.Errorf("CreateMultipartUpload storage class header = %q", got)
			}
		case r.Method == http.MethodPut && q.Has("partNumber"):
			parts++
			if r.Header.Get("Content-Md5") == "" {
				t.Error("UploadPart without Content-MD5")
			}
		case r.Method == http.MethodPost && q.Has("uploadId"):
			completed = true
			if r.Header.Get("If-None-Match") != "*" {
				t.Error("CompleteMultipartUpload was not conditional")
			}
		case r.Method == http.MethodGet:
			verified = true
		}
	}
	if !created || parts != 3 || !completed || !verified {
		t.Errorf("created=%v parts=%d completed=%v verified=%v; want a 3-part upload read back", created, parts, completed, verified)
	}
	// A range across the first part boundary.
	off := int64(s3PartSize - 100)
	if got := s3TestOpen(t, tg, "big.age", off, 1000); !bytes.Equal(got, body[off:off+1000]) {
		t.Error("Open across a part boundary read the wrong bytes")
	}
	if got := s3TestOpen(t, tg, "big.age", 20<<20-5, -1); !bytes.Equal(got, body[len(body)-5:]) {
		t.Error("Open to the end read the wrong bytes")
	}
}

// racingReader creates the key through another client on its first read,
// after Put's existence check, so only the conditional write can refuse.
type racingReader struct {
	r    io.Reader
	once sync.Once
	race func() error
	err  error
}

func (r *racingReader) Read(p []byte) (int, error) {
	r.once.Do(func() { r.err = r.race() })
	if r.err != nil {
		return 0, r.err
	}
	return r.r.Read(p)
}

func TestS3PutNeverOverwrites(t *testing.T) {
	t.Parallel()
	srv := s3TestEnv(t)
	tests := []struct {
		name   string
		size   int
		known  bool
		racing bool
	}{
		{"single part, existing", 1 << 20, true, false},
		{"single part, created concurrently", 1 << 20, true, true},
		{"multipart, existing", 20 << 20, false, false},
		{"multipart, created concurrently", 20 << 20, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			bucket := srv.bucket(t, false)
			rec := &s3Recorder{next: &http.Client{}}
			tg := srv.target(t, srv.config(bucket), rec.install)
			const key, objKey = "dup.wav", "tenant-1/archive/dup.wav"
			first := s3TestRandom(t, tt.size)
			put := func() error {
				_, err := srv.client.PutObject(t.Context(), &s3.PutObjectInput{
					Bucket: aws.String(bucket), Key: aws.String(objKey), Body: bytes.NewReader(first),
				})
				return err
			}
			second := s3TestRandom(t, tt.size)
			opts := PutOptions{Size: -1}
			if tt.known {
				opts = PutOptions{Size: int64(len(second)), SHA256: s3TestSum(second)}
			}
			var r io.Reader = onlyReader{bytes.NewReader(second)}
			if tt.racing {
				r = &racingReader{r: r, race: put}
			} else if err := put(); err != nil {
				t.Fatal(err)
			}
			_, err := tg.Put(t.Context(), key, r, opts)
			if !errors.Is(err, ErrExists) {
				t.Fatalf("second Put = %v, want ErrExists", err)
			}
			if !tt.racing && (rec.count(http.MethodPut) != 0 || rec.count(http.MethodPost) != 0) {
				t.Error("Put uploaded to a key it could see was taken")
			}
			if got := srv.get(t, bucket, objKey); !bytes.Equal(got, first) {
				t.Error("the existing object was changed")
			}
			if u := srv.uploads(t, t.Context(), bucket); len(u) != 0 {
				t.Errorf("%d multipart uploads left in progress", len(u))
			}
		})
	}
}

// failingReader gives n bytes, then fails.
type failingReader struct {
	r    io.Reader
	left int
	fail func() error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.left <= 0 {
		return 0, f.fail()
	}
	if len(p) > f.left {
		p = p[:f.left]
	}
	n, err := f.r.Read(p)
	f.left -= n
	return n, err
}

func TestS3FailedMultipartLeavesNothing(t *testing.T) {
	t.Parallel()
	srv := s3TestEnv(t)
	errBroken := errors.New("source broke")
	tests := []struct {
		name   string
		cancel bool
	}{
		{"reader error", false},
		{"context canceled", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			bucket := srv.bucket(t, false)
			tg := srv.target(t, srv.config(bucket))
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			r := &failingReader{r: bytes.NewReader(s3TestRandom(t, 20<<20)), left: 12 << 20, fail: func() error {
				if tt.cancel {
					cancel()
					return context.Canceled
				}
				return errBroken
			}}
			_, err := tg.Put(ctx, "broken.wav", r, PutOptions{Size: -1})
			if err == nil {
				t.Fatal("Put of a failing reader succeeded")
			}
			if !tt.cancel && !errors.Is(err, errBroken) {
				t.Errorf("Put = %v, want the reader's error", err)
			}
			srv.assertAbsent(t, bucket, "tenant-1/archive/broken.wav")
		})
	}
}

func TestS3RefusesBodyNotMatchingSHA256(t *testing.T) {
	t.Parallel()
	srv := s3TestEnv(t)
	for _, size := range []int{1 << 20, 20 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			t.Parallel()
			bucket := srv.bucket(t, false)
			tg := srv.target(t, srv.config(bucket))
			body := s3TestRandom(t, size)
			other := s3TestSum(append([]byte{1}, body...))
			_, err := tg.Put(t.Context(), "bad.wav", bytes.NewReader(body), PutOptions{Size: int64(size), SHA256: other})
			if ReasonOf(err) != ReasonVerify {
				t.Fatalf("Put = %v, want %s", err, ReasonVerify)
			}
			srv.assertAbsent(t, bucket, "tenant-1/archive/bad.wav")
		})
	}

	// The server itself refuses a body its x-amz-checksum-sha256 does not
	// match, and that refusal classifies as a verify failure too.
	t.Run("server refusal", func(t *testing.T) {
		t.Parallel()
		bucket := srv.bucket(t, false)
		wrong := sha256.Sum256([]byte("something else"))
		_, err := srv.client.PutObject(t.Context(), &s3.PutObjectInput{
			Bucket: aws.String(bucket), Key: aws.String("x"), Body: bytes.NewReader([]byte("body")),
			ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(wrong[:])),
		})
		var apiErr smithy.APIError
		if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "BadDigest" {
			t.Fatalf("PutObject with a wrong checksum = %v, want BadDigest", err)
		}
		if r := ReasonOf(classifyS3("write", err)); r != ReasonVerify {
			t.Errorf("classified as %s, want %s", r, ReasonVerify)
		}
		srv.assertAbsent(t, bucket, "x")
	})
}

// flipFirstByte corrupts a response body as a faulty disk or proxy would.
type flipFirstByte struct {
	io.ReadCloser
	done bool
}

func (f *flipFirstByte) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	if n > 0 && !f.done {
		p[0] ^= 0xff
		f.done = true
	}
	return n, err
}

func TestS3VerifiesWhatIsStored(t *testing.T) {
	t.Parallel()
	srv := s3TestEnv(t)
	isPut := func(req *http.Request) bool {
		return req.Method == http.MethodPut && !req.URL.Query().Has("partNumber")
	}
	tests := []struct {
		name  string
		size  int
		alter func(*http.Request, *http.Response)
		want  Reason // "" for success
		gets  int
	}{
		{"no checksum echo: read back", 1 << 20, func(req *http.Request, resp *http.Response) {
			if isPut(req) {
				resp.Header.Del("X-Amz-Checksum-Sha256")
			}
		}, "", 1},
		{"checksum echo differs", 1 << 20, func(req *http.Request, resp *http.Response) {
			if isPut(req) {
				other := sha256.Sum256(nil)
				resp.Header.Set("X-Amz-Checksum-Sha256", base64.StdEncoding.EncodeToString(other[:]))
			}
		}, ReasonVerify, 0},
		{"no echo, read back differs", 1 << 20, func(req *http.Request, resp *http.Response) {
			switch {
			case isPut(req):
				resp.Header.Del("X-Amz-Checksum-Sha256")
			case req.Method == http.MethodGet:
				resp.Body = &flipFirstByte{ReadCloser: resp.Body}
			}
		}, ReasonVerify, 1},
		{"multipart read back differs", 20 << 20, func(req *http.Request, resp *http.Response) {
			if req.Method == http.MethodGet {
				resp.Body = &flipFirstByte{ReadCloser: resp.Body}
			}
		}, ReasonVerify, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			bucket := srv.bucket(t, false)
			rec := &s3Recorder{next: &http.Client{}, alter: tt.alter}
			tg := srv.target(t, srv.config(bucket), rec.install)
			body := s3TestRandom(t, tt.size)
			_, err := tg.Put(t.Context(), "v.wav", bytes.NewReader(body), PutOptions{Size: int64(len(body)), SHA256: s3TestSum(body)})
			var f *Failure
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Put: %v", err)
			case tt.want != "" && (!errors.As(err, &f) || f.Reason != tt.want || f.Op != "verify"):
				t.Fatalf("Put = %v, want %s at verify", err, tt.want)
			}
			if got := rec.count(http.MethodGet); got != tt.gets {
				t.Errorf("Put read the object %d times, want %d", got, tt.gets)
			}
			// Nothing is deleted on a mismatch: the object stays for a person to judge.
			if got := srv.get(t, bucket, "tenant-1/archive/v.wav"); !bytes.Equal(got, body) {
				t.Error("stored object is not the body")
			}
		})
	}
}

func TestS3DeclaredSizeMismatch(t *testing.T) {
	t.Parallel()
	srv := s3TestEnv(t)
	bucket := srv.bucket(t, false)
	tg := srv.target(t, srv.config(bucket))
	for _, declared := range []int64{99, 101, 0, 10 << 20} {
		_, err := tg.Put(t.Context(), "sized.wav", bytes.NewReader(make([]byte, 100)), PutOptions{Size: declared})
		if err == nil || !strings.Contains(err.Error(), "declared") {
			t.Errorf("Put of 100 bytes declared %d = %v, want a size error", declared, err)
		}
	}
	srv.assertAbsent(t, bucket, "tenant-1/archive/sized.wav")
}

func TestS3Probe(t *testing.T) {
	t.Parallel()
	srv := s3TestEnv(t)
	bucket := srv.bucket(t, false)
	cfg := srv.config(bucket)
	cfg.StorageClass = ClassGlacierIR
	tg := srv.target(t, cfg)
	for _, prefix := range []string{"", "probe/dir", "/probe/"} {
		if err := tg.Probe(t.Context(), prefix); err != nil {
			t.Errorf("Probe(%q): %v", prefix, err)
		}
	}
	if keys := srv.keys(t, t.Context(), bucket, ""); len(keys) != 0 {
		t.Errorf("Probe left %v", keys)
	}
	if u := srv.uploads(t, t.Context(), bucket); len(u) != 0 {
		t.Errorf("Probe left %d uploads", len(u))
	}
	var f *Failure
	if err := tg.Probe(t.Context(), "../up"); !errors.As(err, &f) {
		t.Errorf("Probe(../up) = %v, want a *Failure", err)
	}
}

func s3TestFreePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func TestS3Failures(t *testing.T) {
	t.Parallel()
	srv := s3TestEnv(t)
	bucket := srv.bucket(t, false)
	t.Cleanup(func() {
		// Runs after the parallel subtests, before the bucket goes.
		if keys := srv.keys(t, context.Background(), bucket, ""); len(keys) != 0 {
			t.Errorf("failed calls left %v", keys)
		}
	})
	const wrongSecret = "wrong-secret-value-1234"
	tests := []struct {
		name   string
		adjust func(*S3Config)
		want   Reason
		op     string // Probe's failing step
	}{
		{"wrong secret", func(c *S3Config) { c.SecretKey = wrongSecret }, ReasonAuth, "bucket"},
		{"unknown access key", func(c *S3Config) { c.AccessKey = "nobody-" + wrongSecret; c.SecretKey = wrongSecret }, ReasonAuth, "bucket"},
		{"missing bucket", func(c *S3Config) { c.Bucket = "cvtest-missing-" + hex.EncodeToString(s3TestRandom(t, 6)) }, ReasonBucketMissing, "bucket"},
		{"unreachable", func(c *S3Config) { c.Endpoint = "http://" + s3TestFreePort(t) }, ReasonUnreachable, "bucket"},
		{"unresolvable", func(c *S3Config) { c.Endpoint = "http://callvault-test.invalid:9000" }, ReasonUnreachable, "bucket"},
		{"worm without object lock", func(c *S3Config) { c.WORM, c.WORMMode = true, "COMPLIANCE" }, ReasonNoObjectLock, "object_lock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := srv.config(bucket)
			tt.adjust(&cfg)
			tg := srv.target(t, cfg)

			err := tg.Probe(t.Context(), "probe")
			var f *Failure
			if !errors.As(err, &f) || f.Reason != tt.want || f.Op != tt.op {
				t.Fatalf("Probe = %v, want %s at %s", err, tt.want, tt.op)
			}
			if strings.Contains(err.Error(), wrongSecret) || strings.Contains(err.Error(), srv.secret) {
				t.Errorf("the failure shows the secret: %v", err)
			}

			_, err = tg.Put(t.Context(), "call.wav", bytes.NewReader([]byte("audio")),
				PutOptions{Size: 5, RetainUntil: time.Now().Add(time.Hour)})
			if !errors.As(err, &f) || f.Reason != tt.want {
				t.Errorf("Put = %v, want %s", err, tt.want)
			}
			if strings.Contains(fmt.Sprint(err), wrongSecret) {
				t.Errorf("the failure shows the secret: %v", err)
			}
		})
	}
}

func TestS3WORM(t *testing.T) {
	t.Parallel()
	srv := s3TestEnv(t)
	bucket := srv.bucket(t, true)
	cfg := srv.config(bucket)
	cfg.WORM, cfg.WORMMode = true, "GOVERNANCE"
	tg := srv.target(t, cfg)

	if err := tg.CheckObjectLock(t.Context()); err != nil {
		t.Fatalf("CheckObjectLock on an Object Lock bucket: %v", err)
	}
	if err := tg.Probe(t.Context(), "probe"); err != nil {
		t.Fatalf("Probe: %v", err)
	}

	until := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	for _, size := range []int{1 << 20, 20 << 20} {
		key := fmt.Sprintf("worm-%d.wav", size)
		objKey := "tenant-1/archive/" + key
		body := s3TestRandom(t, size)
		if _, err := tg.Put(t.Context(), key, onlyReader{bytes.NewReader(body)}, PutOptions{Size: -1, RetainUntil: until}); err != nil {
			t.Fatalf("Put %d bytes: %v", size, err)
		}
		ret, err := srv.client.GetObjectRetention(t.Context(), &s3.GetObjectRetentionInput{Bucket: aws.String(bucket), Key: aws.String(objKey)})
		if err != nil {
			t.Fatalf("GetObjectRetention: %v", err)
		}
		if ret.Retention.Mode != types.ObjectLockRetentionModeGovernance || !aws.ToTime(ret.Retention.RetainUntilDate).Equal(until) {
			t.Errorf("retention = %s until %v, want GOVERNANCE until %v", ret.Retention.Mode, aws.ToTime(ret.Retention.RetainUntilDate), until)
		}
		_, err = srv.client.DeleteObject(t.Context(), &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(objKey)})
		if err == nil {
			t.Errorf("deleting a retained object succeeded")
		}
		if got := srv.get(t, bucket, objKey); !bytes.Equal(got, body) {
			t.Error("the retained object changed")
		}
	}

	for _, retain := range []time.Time{{}, time.Now().Add(-time.Minute)} {
		if _, err := tg.Put(t.Context(), "no-retention.wav", bytes.NewReader([]byte("x")), PutOptions{Size: 1, RetainUntil: retain}); err == nil {
			t.Errorf("WORM Put with retain-until %v succeeded", retain)
		}
	}
	srv.assertAbsent(t, bucket, "tenant-1/archive/no-retention.wav")

	// A default retention rule would lock the probe object; Probe must
	// still leave nothing behind.
	_, err := srv.client.PutObjectLockConfiguration(t.Context(), &s3.PutObjectLockConfigurationInput{
		Bucket: aws.String(bucket),
		ObjectLockConfiguration: &types.ObjectLockConfiguration{
			ObjectLockEnabled: types.ObjectLockEnabledEnabled,
			Rule: &types.ObjectLockRule{DefaultRetention: &types.DefaultRetention{
				Mode: types.ObjectLockRetentionModeGovernance, Days: aws.Int32(1),
			}},
		},
	})
	if err != nil {
		t.Fatalf("PutObjectLockConfiguration: %v", err)
	}
	if err := tg.Probe(t.Context(), "probe"); err != nil {
		t.Fatalf("Probe with a default retention rule: %v", err)
	}
	if keys := srv.keys(t, t.Context(), bucket, "tenant-1/archive/probe"); len(keys) != 0 {
		t.Errorf("Probe left %v", keys)
	}

	plain := srv.target(t, func() S3Config {
		c := srv.config(srv.bucket(t, false))
		c.WORM, c.WORMMode = true, "COMPLIANCE"
		return c
	}())
	err = plain.CheckObjectLock(t.Context())
	var f *Failure
	if !errors.As(err, &f) || f.Reason != ReasonNoObjectLock || f.Op != "object_lock" || !strings.Contains(f.Detail, "no Object Lock enabled") {
		t.Errorf("CheckObjectLock without Object Lock = %v", err)
	}
}

func TestS3NewValidates(t *testing.T) {
	t.Parallel()
	good := S3Config{Region: "eu-west-1", Bucket: "b", AccessKey: "a", SecretKey: "s"}
	tests := []struct {
		name   string
		adjust func(*S3Config)
		ok     bool
	}{
		{"aws", func(*S3Config) {}, true},
		{"aws without region", func(c *S3Config) { c.Region = "" }, false},
		{"endpoint without region", func(c *S3Config) { c.Region, c.Endpoint = "", "https://s3.wasabisys.com" }, true},
		{"bad endpoint", func(c *S3Config) { c.Endpoint = "s3.wasabisys.com" }, false},
		{"no bucket", func(c *S3Config) { c.Bucket = "" }, false},
		{"no secret", func(c *S3Config) { c.SecretKey = "" }, false},
		{"glacier ir", func(c *S3Config) { c.StorageClass = ClassGlacierIR }, true},
		{"unknown class", func(c *S3Config) { c.StorageClass = "DEEP_ARCHIVE" }, false},
		{"worm governance", func(c *S3Config) { c.WORM, c.WORMMode = true, "GOVERNANCE" }, true},
		{"worm compliance", func(c *S3Config) { c.WORM, c.WORMMode = true, "COMPLIANCE" }, true},
		{"worm without mode", func(c *S3Config) { c.WORM = true }, false},
		{"mode without worm", func(c *S3Config) { c.WORMMode = "COMPLIANCE" }, false},
		{"prefix", func(c *S3Config) { c.Prefix = "/tenant/a/" }, true},
		{"prefix escaping", func(c *S3Config) { c.Prefix = "tenant/../b" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := good
			tt.adjust(&cfg)
			_, err := NewS3(cfg)
			if (err == nil) != tt.ok {
				t.Errorf("NewS3 = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestS3Keys(t *testing.T) {
	t.Parallel()
	tg, err := NewS3(S3Config{Region: "eu-west-1", Bucket: "b", Prefix: "/p/q/", AccessKey: "a", SecretKey: "s"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key, want string
	}{
		{"a.wav", "p/q/a.wav"},
		{"2026/05/a.wav", "p/q/2026/05/a.wav"},
		{"a..b", "p/q/a..b"},
		{"", ""},
		{"/abs", ""},
		{"../up", ""},
		{"a/../b", ""},
		{"a/./b", ""},
		{"a//b", ""},
		{"a/", ""},
		{`a\b`, ""},
		{"a\x00b", ""},
		{strings.Repeat("k", 1021), ""},
	}
	for _, tt := range tests {
		got, err := tg.objectKey(tt.key)
		if tt.want == "" && err == nil {
			t.Errorf("objectKey(%q) = %q, want an error", tt.key, got)
		}
		if tt.want != "" && (err != nil || got != tt.want) {
			t.Errorf("objectKey(%q) = %q, %v, want %q", tt.key, got, err, tt.want)
		}
	}
	if _, err := tg.Put(t.Context(), "../x", bytes.NewReader(nil), PutOptions{}); err == nil {
		t.Error("Put accepted ../x")
	}
	if _, err := tg.Open(t.Context(), "/x", 0, -1); err == nil {
		t.Error("Open accepted /x")
	}
}

func TestClassifyS3(t *testing.T) {
	t.Parallel()
	api := func(code, msg string) error {
		return fmt.Errorf("operation error S3: PutObject: %w", &smithy.GenericAPIError{Code: code, Message: msg})
	}
	tests := []struct {
		name string
		err  error
		want Reason
	}{
		{"invalid access key", api("InvalidAccessKeyId", "unknown key"), ReasonAuth},
		{"signature", api("SignatureDoesNotMatch", "check your key"), ReasonAuth},
		{"versitygw unknown user", api("XAdminUserNotFound", "no user"), ReasonAuth},
		{"no bucket", api("NoSuchBucket", ""), ReasonBucketMissing},
		{"access denied", api("AccessDenied", "Access Denied"), ReasonPermission},
		{"bad digest", api("BadDigest", ""), ReasonVerify},
		{"no lock config", api("ObjectLockConfigurationNotFoundError", ""), ReasonNoObjectLock},
		{"lock headers on plain bucket", api("InvalidRequest", "Bucket is missing Object Lock Configuration"), ReasonNoObjectLock},
		{"other invalid request", api("InvalidRequest", "something"), ReasonOther},
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, ReasonUnreachable},
		{"dns", fmt.Errorf("send: %w", &net.DNSError{Err: "no such host", Name: "x.invalid", IsNotFound: true}), ReasonUnreachable},
		{"deadline", fmt.Errorf("send: %w", context.DeadlineExceeded), ReasonUnreachable},
		{"canceled", fmt.Errorf("send: %w", context.Canceled), ReasonOther},
		{"internal", api("InternalError", "oops"), ReasonOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := classifyS3("write", tt.err)
			var f *Failure
			if !errors.As(err, &f) || f.Reason != tt.want || f.Op != "write" {
				t.Errorf("classifyS3 = %v, want %s", err, tt.want)
			}
			if !errors.Is(err, tt.err) {
				t.Error("the cause is not wrapped")
			}
		})
	}
	if classifyS3("write", nil) != nil {
		t.Error("classifyS3(nil) is not nil")
	}
}

// lossyClient sends writes of the object to the real server and then
// loses the answer, or fails before sending, as a network may.
type lossyClient struct {
	next   *http.Client
	send   bool // whether the request reaches the server before the loss
	losses int  // how many writes to lose
	mu     sync.Mutex
}

var errLostAnswer = &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}

func (c *lossyClient) Do(req *http.Request) (*http.Response, error) {
	c.mu.Lock()
	lose := (req.Method == http.MethodPut || req.Method == http.MethodPost) && c.losses > 0
	if lose {
		c.losses--
	}
	c.mu.Unlock()
	if !lose {
		return c.next.Do(req)
	}
	if !c.send {
		return nil, errLostAnswer
	}
	resp, err := c.next.Do(req)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return nil, errLostAnswer
}

func TestS3PutSettlesALostAnswer(t *testing.T) {
	t.Parallel()
	srv := s3TestEnv(t)
	const key, objKey = "lost.wav", "tenant-1/archive/lost.wav"
	noRetry := func(o *s3.Options) { o.RetryMaxAttempts = 1 }
	tests := []struct {
		name string
		size int
		send bool
		// taken: another object is at the key before the write is sent.
		taken   bool
		wantErr error // nil: success; ErrExists; else a Failure
	}{
		{"single part stored, answer lost", 1 << 20, true, false, nil},
		{"multipart stored, answer lost", 12 << 20, true, false, nil},
		{"single part never sent", 1 << 20, false, false, errLostAnswer},
		{"single part refused early", 1 << 20, true, true, ErrExists},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			bucket := srv.bucket(t, false)
			body := s3TestRandom(t, tt.size)
			other := s3TestRandom(t, tt.size)
			// A multipart upload loses only its completion (parts are
			// retried by the caller's next attempt, not settled).
			lc := &lossyClient{next: &http.Client{}, send: tt.send, losses: 1}
			install := func(o *s3.Options) { o.HTTPClient = lc }
			if tt.size > s3PartSize {
				lc.losses = 0
				install = func(o *s3.Options) {
					o.HTTPClient = doerFunc(func(req *http.Request) (*http.Response, error) {
						if req.Method == http.MethodPost && req.URL.Query().Has("uploadId") {
							lc.mu.Lock()
							lc.losses = 1
							lc.mu.Unlock()
						}
						return lc.Do(req)
					})
				}
			}
			tg := srv.target(t, srv.config(bucket), install, noRetry)
			var r io.Reader = onlyReader{bytes.NewReader(body)}
			if tt.taken {
				r = &racingReader{r: r, race: func() error {
					_, err := srv.client.PutObject(t.Context(), &s3.PutObjectInput{
						Bucket: aws.String(bucket), Key: aws.String(objKey), Body: bytes.NewReader(other),
					})
					return err
				}}
			}
			opts := PutOptions{Size: -1}
			if tt.size <= s3PartSize {
				opts = PutOptions{Size: int64(len(body)), SHA256: s3TestSum(body)}
			}
			st, err := tg.Put(t.Context(), key, r, opts)
			switch {
			case tt.wantErr == nil:
				if err != nil {
					t.Fatalf("Put = %v, want success: the server stored the bytes", err)
				}
				if st.SHA256 != s3TestSum(body) || st.Size != int64(len(body)) {
					t.Errorf("Stored = %+v, want the body's size and hash", st)
				}
				if got := srv.get(t, bucket, objKey); !bytes.Equal(got, body) {
					t.Error("the stored object is not the body")
				}
			case errors.Is(tt.wantErr, ErrExists):
				if !errors.Is(err, ErrExists) {
					t.Fatalf("Put = %v, want ErrExists", err)
				}
				if got := srv.get(t, bucket, objKey); !bytes.Equal(got, other) {
					t.Error("the existing object was changed")
				}
			default:
				var f *Failure
				if !errors.As(err, &f) || f.Reason != ReasonUnreachable {
					t.Fatalf("Put = %v, want an unreachable failure", err)
				}
				srv.assertAbsent(t, bucket, objKey)
			}
			if u := srv.uploads(t, t.Context(), bucket); len(u) != 0 {
				t.Errorf("%d multipart uploads left in progress", len(u))
			}
		})
	}
}

type doerFunc func(*http.Request) (*http.Response, error)

func (f doerFunc) Do(req *http.Request) (*http.Response, error) { return f(req) }
