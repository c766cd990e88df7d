package router_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/pkg/testenv"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	routerv1 "github.com/callvault/callvault/proto/callvault/router/v1"
	"github.com/callvault/callvault/services/router"
)

var (
	system  = auth.Principal{Name: "ops", Level: auth.LevelSystem}
	r1      = auth.Principal{Name: "r1-admin", Level: auth.LevelReseller, Reseller: "r1"}
	r2      = auth.Principal{Name: "r2-admin", Level: auth.LevelReseller, Reseller: "r2"}
	aDomain = auth.Principal{Name: "a-admin", Level: auth.LevelDomain, Reseller: "r1", Domain: "a.example"}
	bDomain = auth.Principal{Name: "b-admin", Level: auth.LevelDomain, Reseller: "r1", Domain: "b.example"}
	cDomain = auth.Principal{Name: "c-admin", Level: auth.LevelDomain, Reseller: "r2", Domain: "c.example"}
	// A token naming a.example under the wrong reseller.
	grab = auth.Principal{Name: "grab", Level: auth.LevelDomain, Reseller: "r2", Domain: "a.example"}
)

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type rig struct {
	t    testing.TB
	d    *platform.Deps
	svc  *router.Service
	set  router.Settings
	logs *syncBuffer
	s3   *s3.Client
	stop func()
}

// fastSettings retry quickly so a recovery is seen within a test.
func fastSettings(t testing.TB) router.Settings {
	key, err := router.NewSecretKeySpec("test-1")
	if err != nil {
		t.Fatal(err)
	}
	return router.Settings{
		SecretKey: key, Workers: 8, PerTarget: 4, ParkAfter: 2,
		RetryBackOff: []time.Duration{100 * time.Millisecond, 200 * time.Millisecond},
		ParkedRetry:  300 * time.Millisecond, UploadTimeout: 30 * time.Second,
	}
}

// newRig starts a router on a fresh namespace (CDS on the local disk) with
// a.example and b.example under r1 and c.example under r2.
func newRig(t testing.TB, set router.Settings) *rig {
	t.Helper()
	store, err := cds.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := testenv.Deps(t, store)
	logs := &syncBuffer{}
	d.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cat := catalog.New(d.Redis, d.Names.Namespace())
	for i, dom := range [][2]string{{"a.example", "r1"}, {"b.example", "r1"}, {"c.example", "r2"}, {"d.example", "r1"}} {
		if _, err := cat.ApplyDomain(context.Background(), catalog.Domain{Domain: dom[0], Reseller: dom[1], ProvisionedBy: "test", ProvisionedAt: time.Now()}, uint64(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	rg := &rig{t: t, d: d, set: set, logs: logs, s3: s3Client(t)}
	rg.start()
	t.Cleanup(func() { rg.stop() })
	return rg
}

func (rg *rig) start() {
	rg.t.Helper()
	// A restart is a new process: its metrics start afresh.
	rg.d.Registry = prometheus.NewRegistry()
	svc, err := router.New(rg.d, rg.set, nil)
	if err != nil {
		rg.t.Fatal(err)
	}
	rg.svc = svc
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	var once sync.Once
	rg.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				rg.t.Errorf("router run: %v", err)
			}
		})
	}
}

func s3Client(t testing.TB) *s3.Client {
	return s3.NewFromConfig(aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider(testenv.Env(t, "CALLVAULT_TEST_S3_ACCESS_KEY"), testenv.Env(t, "CALLVAULT_TEST_S3_SECRET_KEY"), ""),
	}, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(testenv.Env(t, "CALLVAULT_TEST_S3_ENDPOINT"))
		o.UsePathStyle = true
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
}

var bucketSeq struct {
	sync.Mutex
	n int
}

// bucketName is a fresh bucket name (not created).
func bucketName(t testing.TB) string {
	bucketSeq.Lock()
	defer bucketSeq.Unlock()
	bucketSeq.n++
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "arch-" + hex.EncodeToString(b) + "-" + strconv.Itoa(bucketSeq.n)
}

// bucket creates a fresh bucket.
func (rg *rig) bucket(lock bool) string {
	rg.t.Helper()
	name := bucketName(rg.t)
	rg.createBucket(name, lock)
	return name
}

func (rg *rig) createBucket(name string, lock bool) {
	rg.t.Helper()
	in := &s3.CreateBucketInput{Bucket: aws.String(name)}
	if lock {
		in.ObjectLockEnabledForBucket = aws.Bool(true)
	}
	if _, err := rg.s3.CreateBucket(context.Background(), in); err != nil {
		rg.t.Fatalf("create bucket %s: %v", name, err)
	}
}

// objects lists a bucket's keys (nil for a missing bucket).
func (rg *rig) objects(bucket string) []string {
	rg.t.Helper()
	out, err := rg.s3.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	if err != nil {
		return nil
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	return keys
}

func (rg *rig) getObject(bucket, key string) []byte {
	rg.t.Helper()
	out, err := rg.s3.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		rg.t.Fatalf("get %s/%s: %v", bucket, key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		rg.t.Fatal(err)
	}
	return b
}

// s3Config is an S3 configuration of the test server, whose real secret
// goes in the secret; storageType is s3, s3_glacier_ir or wasabi.
func s3Config(t testing.TB, name, level, match, storageType, bucket string) (*routerv1.ArchiveConfig, *routerv1.ArchiveSecret) {
	return &routerv1.ArchiveConfig{
			Name: name, Level: level, Match: match, Enabled: true, StorageType: storageType, SendRecordings: true,
			Bucket: bucket, Endpoint: testenv.Env(t, "CALLVAULT_TEST_S3_ENDPOINT"), AccessKeyId: testenv.Env(t, "CALLVAULT_TEST_S3_ACCESS_KEY"),
		}, &routerv1.ArchiveSecret{Value: &routerv1.ArchiveSecret_SecretAccessKey{
			SecretAccessKey: testenv.Env(t, "CALLVAULT_TEST_S3_SECRET_KEY"),
		}}
}

// sftpConfig is an SFTP configuration of the test sshd under a fresh
// directory of its root, returned with the directory.
func sftpConfig(t testing.TB, name, level, match string) (*routerv1.ArchiveConfig, *routerv1.ArchiveSecret, string) {
	addr := testenv.Env(t, "CALLVAULT_TEST_SFTP_ADDR")
	host, port, _ := strings.Cut(addr, ":")
	p, _ := strconv.Atoi(port)
	keyPEM, err := os.ReadFile(testenv.Env(t, "CALLVAULT_TEST_SFTP_KEY"))
	if err != nil {
		t.Fatal(err)
	}
	root := testenv.Env(t, "CALLVAULT_TEST_SFTP_ROOT")
	sub := "t-" + bucketName(t)
	dir := root + "/" + sub
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return &routerv1.ArchiveConfig{
		Name: name, Level: level, Match: match, Enabled: true, StorageType: "sftp", SendRecordings: true,
		Host: host, Port: int32(p), Username: testenv.Env(t, "CALLVAULT_TEST_SFTP_USER"),
		HostKeyFingerprint: testenv.Env(t, "CALLVAULT_TEST_SFTP_HOSTKEY"), Prefix: sub,
	}, &routerv1.ArchiveSecret{Value: &routerv1.ArchiveSecret_PrivateKey{PrivateKey: string(keyPEM)}}, dir
}

func (rg *rig) create(p auth.Principal, c *routerv1.ArchiveConfig, s *routerv1.ArchiveSecret) *routerv1.ArchiveConfig {
	rg.t.Helper()
	out, _, err := rg.svc.CreateConfig(context.Background(), p, c, s)
	if err != nil {
		rg.t.Fatalf("create %s: %v", c.GetName(), err)
	}
	return out
}

// recording is one admitted recording.
type recording struct {
	id, domain, reseller, user string
	body                       []byte
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// admit stores a recording's media in the CDS and publishes the admission
// decision the policy service would, returning the decision's sequence.
func (rg *rig) admit(r recording) uint64 {
	rg.t.Helper()
	ctx := context.Background()
	key := "recordings/" + r.domain + "/" + r.id
	if _, err := rg.d.CDS.Put(ctx, key, bytes.NewReader(r.body), "audio/wav"); err != nil {
		rg.t.Fatal(err)
	}
	return rg.publishAdmitted(r, key, "admitted-"+r.id)
}

func (rg *rig) publishAdmitted(r recording, key, msgID string) uint64 {
	rg.t.Helper()
	started := time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)
	rec := &eventv1.RecordingStored{
		CallId: "call-" + r.id, Mode: eventv1.RecordingMode_RECORDING_MODE_AUTOMATIC, StartedAt: timestamppb.New(started), DurationS: 60,
		Media: &eventv1.MediaObject{Key: key, SizeBytes: int64(len(r.body)), Sha256: sha(r.body), ContentType: "audio/wav"},
	}
	env := &eventv1.Envelope{
		Id: msgID, ArtifactId: r.id, AcceptedAt: timestamppb.Now(), Source: "policy", Type: "artifact.admitted", SchemaVersion: 2,
		Tenant: &eventv1.Tenant{Reseller: r.reseller, Domain: r.domain, User: r.user},
		Body: &eventv1.Envelope_Admitted{Admitted: &eventv1.ArtifactAdmitted{
			Kind: eventv1.DataKind_DATA_KIND_RECORDING_AUTOMATIC, Artifact: &eventv1.ArtifactAdmitted_Recording{Recording: rec},
			IngestAcceptedAt: timestamppb.New(started),
		}},
	}
	ack, err := bus.PublishEnvelope(context.Background(), rg.d.JS, rg.d.Names.AdmittedSubject(), msgID, env)
	if err != nil {
		rg.t.Fatal(err)
	}
	return ack.Sequence
}

// state is an artifact's archive state as the system sees it.
func (rg *rig) state(domain, id string) *routerv1.ArchiveState {
	rg.t.Helper()
	st, err := rg.svc.ArchiveStates(context.Background(), system, domain, []string{id})
	if err != nil {
		rg.t.Fatalf("archive state of %s: %v", id, err)
	}
	return st[0]
}

func (rg *rig) waitState(domain, id, want string) *routerv1.ArchiveState {
	rg.t.Helper()
	var st *routerv1.ArchiveState
	testenv.WaitFor(rg.t, fmt.Sprintf("%s %s", id, want), func() bool {
		st = rg.state(domain, id)
		return st.GetState() == want
	})
	return st
}

func (rg *rig) status(id string) *routerv1.ConfigState {
	rg.t.Helper()
	st, err := rg.svc.Status(context.Background(), system, id)
	if err != nil {
		rg.t.Fatal(err)
	}
	return st
}

// archivedEvents counts the archive records on the stream, by artifact.
func (rg *rig) archivedEvents() map[string]int {
	rg.t.Helper()
	out := map[string]int{}
	_, _, err := bus.Replay(context.Background(), rg.d.JS, rg.d.Names.IngestStream(), []string{rg.d.Names.ArchivedSubject()},
		func(_ context.Context, env *eventv1.Envelope, _ uint64) error {
			out[env.GetArtifactId()]++
			return nil
		})
	if err != nil && !errors.Is(err, context.Canceled) {
		rg.t.Fatal(err)
	}
	return out
}

// createPair is create for a (config, secret) pair: rg.createPair(p)(s3Config(...)).
func (rg *rig) createPair(p auth.Principal) func(*routerv1.ArchiveConfig, *routerv1.ArchiveSecret) *routerv1.ArchiveConfig {
	return func(c *routerv1.ArchiveConfig, s *routerv1.ArchiveSecret) *routerv1.ArchiveConfig {
		rg.t.Helper()
		return rg.create(p, c, s)
	}
}

// tryCreate is CreateConfig for a (config, secret) pair.
func (rg *rig) tryCreate(p auth.Principal) func(*routerv1.ArchiveConfig, *routerv1.ArchiveSecret) (*routerv1.ArchiveConfig, []string, error) {
	return func(c *routerv1.ArchiveConfig, s *routerv1.ArchiveSecret) (*routerv1.ArchiveConfig, []string, error) {
		return rg.svc.CreateConfig(context.Background(), p, c, s)
	}
}
