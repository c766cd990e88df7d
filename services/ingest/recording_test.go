package ingest_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/platform"
	"github.com/callvault/callvault/pkg/testenv"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	"github.com/callvault/callvault/services/ingest"
)

// faults injects failures into the real JetStream client and the real
// local store: the servers stay real, only chosen calls fail.
type faults struct {
	mu sync.Mutex
	// failPublish publishes fail; with afterStore the message reaches the
	// server first and only its PubAck is lost.
	failPublish int
	afterStore  bool
	failPut     int
	attempts    int
}

func (f *faults) take(n *int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if *n > 0 {
		*n--
		return true
	}
	return false
}

type faultJS struct {
	jetstream.JetStream
	f *faults
}

func (j faultJS) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	j.f.mu.Lock()
	j.f.attempts++
	j.f.mu.Unlock()
	if j.f.take(&j.f.failPublish) {
		if j.f.afterStore {
			if _, err := j.JetStream.PublishMsg(ctx, m, opts...); err != nil {
				return nil, err
			}
		}
		return nil, fmt.Errorf("injected: %w", context.DeadlineExceeded)
	}
	return j.JetStream.PublishMsg(ctx, m, opts...)
}

type faultStore struct {
	*cds.FS
	f *faults
}

func (s faultStore) Put(ctx context.Context, key string, r io.Reader, contentType string) (int64, error) {
	if s.f.take(&s.f.failPut) {
		return 0, errors.New("injected: the store is unreachable")
	}
	return s.FS.Put(ctx, key, r, contentType)
}

// rig is an ingest service on the real servers, served over HTTP.
type rig struct {
	d   *platform.Deps
	f   *faults
	fs  *cds.FS
	url string
}

// fastRetries keeps the tests quick; the defaults are seconds.
var fastRetries = ingest.Publish{Attempts: 3, Backoff: 10 * time.Millisecond, Timeout: 5 * time.Second, Budget: 20 * time.Second}

func newRig(t *testing.T) *rig {
	t.Helper()
	fs, err := cds.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := &faults{}
	d := testenv.Deps(t, faultStore{FS: fs, f: f})
	d.JS = faultJS{JetStream: d.JS, f: f}
	// The policy service provisions domains; here they are provisioned
	// up front, as its config consumer would apply them.
	cat := catalog.New(d.Redis, d.Names.Namespace())
	for _, dom := range []string{"a.example", "b.example"} {
		if _, err := cat.ApplyDomain(context.Background(), catalog.Domain{Domain: dom, Reseller: "r1", ProvisionedBy: "test", ProvisionedAt: time.Now()}, 0); err != nil {
			t.Fatal(err)
		}
	}
	svc := ingest.New(d, ingest.Limits{Publish: fastRetries}, nil)
	mux := http.NewServeMux()
	svc.RegisterHTTP(mux, d.Tokens)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &rig{d: d, f: f, fs: fs, url: srv.URL}
}

// upload posts a recording as a PBX does and returns the status and body.
func (r *rig) upload(t *testing.T, id, domain string, media []byte) (int, map[string]any) {
	t.Helper()
	var body bytes.Buffer
	w := multipart.NewWriter(&body)
	md, _ := json.Marshal(map[string]any{
		"id": id, "call_id": "call-" + id, "reseller": "r1", "domain": domain, "user": "101", "mode": "automatic",
		"started_at": time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), "duration_s": 10, "content_type": "audio/wav",
	})
	if err := w.WriteField("metadata", string(md)); err != nil {
		t.Fatal(err)
	}
	part, err := w.CreateFormFile("media", id+".wav")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = part.Write(media)
	_ = w.Close()
	req, _ := http.NewRequest(http.MethodPost, r.url+"/api/v1/ingest/recordings", &body)
	req.Header.Set("Content-Type", w.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+testenv.BootstrapToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// objects lists every media object in the store.
func (r *rig) objects(t *testing.T) []string {
	t.Helper()
	var keys []string
	if err := r.fs.List(context.Background(), "", func(o cds.Object) error { keys = append(keys, o.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	return keys
}

// events returns the recording events in the ingest stream.
func (r *rig) events(t *testing.T) []*eventv1.Envelope {
	t.Helper()
	var out []*eventv1.Envelope
	_, _, err := bus.Replay(context.Background(), r.d.JS, r.d.Names.IngestStream(), []string{r.d.Names.RecordingSubject()},
		func(_ context.Context, env *eventv1.Envelope, _ uint64) error { out = append(out, env); return nil })
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// catalogKeys returns the Redis keys of the test's namespace that belong
// to the catalog (everything but the tokens and the domain registry,
// which the rig provisions up front).
func (r *rig) catalogKeys(t *testing.T) []string {
	t.Helper()
	ns := r.d.Names.Namespace()
	var keys []string
	iter := r.d.Redis.Scan(context.Background(), 0, ns+":*", 1000).Iterator()
	for iter.Next(context.Background()) {
		// The domain registry (provisioning writes it) is not a claim.
		if k := iter.Val(); !strings.HasPrefix(k, ns+":token:") && !strings.HasPrefix(k, ns+":{domains}") && k != ns+":applied" {
			keys = append(keys, iter.Val())
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// An empty upload is refused before anything is stored, and it claims
// nothing: the same id then uploads properly from the same domain and,
// in a fresh installation, from another domain.
func TestEmptyUploadClaimsNothing(t *testing.T) {
	t.Parallel()
	for _, second := range []string{"a.example", "b.example"} {
		t.Run(second, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			if code, res := r.upload(t, "rec-1", "a.example", nil); code != http.StatusBadRequest {
				t.Fatalf("empty upload: %d %v, want 400", code, res)
			}
			if objs := r.objects(t); len(objs) != 0 {
				t.Fatalf("the empty upload stored %v", objs)
			}
			if keys := r.catalogKeys(t); len(keys) != 0 {
				t.Fatalf("the empty upload wrote catalog keys %v", keys)
			}
			media := []byte("RIFF-a-real-recording")
			code, res := r.upload(t, "rec-1", second, media)
			if code != http.StatusCreated || res["duplicate"] != false || res["sha256"] != sha(media) {
				t.Fatalf("proper upload of rec-1 from %s after the empty one: %d %v, want 201", second, code, res)
			}
			if evs := r.events(t); len(evs) != 1 || evs[0].GetTenant().GetDomain() != second {
				t.Fatalf("events %v, want exactly one of %s", evs, second)
			}
		})
	}
}

// A request that fails at the media store or at the publish claims
// nothing: another domain's upload of the same id is accepted next.
func TestFailedUploadClaimsNothing(t *testing.T) {
	t.Parallel()
	cases := map[string]func(f *faults){
		"store":   func(f *faults) { f.failPut = 1 },
		"publish": func(f *faults) { f.failPublish = fastRetries.Attempts },
	}
	for name, inject := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			inject(r.f)
			if code, res := r.upload(t, "rec-1", "a.example", []byte("first")); code != http.StatusServiceUnavailable {
				t.Fatalf("upload with a failing %s: %d %v, want 503", name, code, res)
			}
			if keys := r.catalogKeys(t); len(keys) != 0 {
				t.Fatalf("the failed upload wrote catalog keys %v", keys)
			}
			if evs := r.events(t); len(evs) != 0 {
				t.Fatalf("the failed upload published %v", evs)
			}
			code, res := r.upload(t, "rec-1", "b.example", []byte("second"))
			if code != http.StatusCreated || res["duplicate"] != false {
				t.Fatalf("another domain's upload of rec-1 after the failure: %d %v, want 201", code, res)
			}
		})
	}
}

// A publish the server stored but whose PubAck was lost deletes nothing:
// the upload is answered 503, its media stays where its event points, and
// the PBX's retry is answered as the duplicate it is, with the media
// still readable. A lost ack on one attempt alone is retried with the
// same Nats-Msg-Id and accepted, with one event and one object.
func TestLostPubAckKeepsMedia(t *testing.T) {
	t.Parallel()
	t.Run("every attempt", func(t *testing.T) {
		t.Parallel()
		r := newRig(t)
		r.f.afterStore, r.f.failPublish = true, fastRetries.Attempts
		media := []byte("RIFF-recording-whose-ack-was-lost")
		if code, res := r.upload(t, "rec-1", "a.example", media); code != http.StatusServiceUnavailable {
			t.Fatalf("upload with lost PubAcks: %d %v, want 503", code, res)
		}
		if r.f.attempts != fastRetries.Attempts {
			t.Fatalf("%d publish attempts, want %d", r.f.attempts, fastRetries.Attempts)
		}
		evs := r.events(t)
		objs := r.objects(t)
		if len(evs) != 1 || len(objs) != 1 || evs[0].GetRecording().GetMedia().GetKey() != objs[0] {
			t.Fatalf("after the lost acks: events %v, objects %v; want one event pointing at the one object", evs, objs)
		}
		code, res := r.upload(t, "rec-1", "a.example", media)
		if code != http.StatusOK || res["duplicate"] != true || res["sha256"] != sha(media) {
			t.Fatalf("the PBX's retry: %d %v, want 200 duplicate with the stored media's hash", code, res)
		}
		if got := r.objects(t); !slices.Equal(got, objs) {
			t.Fatalf("objects after the retry %v, want only the referenced %v", got, objs)
		}
		rc, err := r.fs.Open(context.Background(), objs[0], 0, -1)
		if err != nil {
			t.Fatalf("the referenced media is gone: %v", err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, media) {
			t.Fatalf("the referenced media reads %q", got)
		}
		if n := len(r.events(t)); n != 1 {
			t.Fatalf("%d events after the retry, want 1", n)
		}
	})
	t.Run("one attempt", func(t *testing.T) {
		t.Parallel()
		r := newRig(t)
		r.f.afterStore, r.f.failPublish = true, 1
		media := []byte("RIFF-recording")
		code, res := r.upload(t, "rec-1", "a.example", media)
		if code != http.StatusCreated || res["duplicate"] != false || res["sha256"] != sha(media) {
			t.Fatalf("upload whose first PubAck was lost: %d %v, want 201", code, res)
		}
		evs, objs := r.events(t), r.objects(t)
		if len(evs) != 1 || len(objs) != 1 || evs[0].GetRecording().GetMedia().GetKey() != objs[0] {
			t.Fatalf("events %v, objects %v; want one event pointing at the one object", evs, objs)
		}
	})
}

// Every ingest event names its own id apart from the artifact's, with
// its type and schema version.
func TestEventCarriesIDsTypeAndVersion(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	if code, res := r.upload(t, "rec-1", "a.example", []byte("media")); code != http.StatusCreated {
		t.Fatalf("upload: %d %v", code, res)
	}
	evs := r.events(t)
	if len(evs) != 1 {
		t.Fatalf("%d events, want 1", len(evs))
	}
	env := evs[0]
	if env.GetArtifactId() != "rec-1" || env.GetId() == "" || env.GetId() == env.GetArtifactId() ||
		env.GetType() != ingest.EventTypeRecording || env.GetSchemaVersion() != bus.SchemaVersion {
		t.Fatalf("event id %q artifact %q type %q schema %d; want a distinct event id, rec-1, %q, %d",
			env.GetId(), env.GetArtifactId(), env.GetType(), env.GetSchemaVersion(), ingest.EventTypeRecording, bus.SchemaVersion)
	}
	if bus.ArtifactID(env) != "rec-1" {
		t.Fatalf("bus.ArtifactID = %q", bus.ArtifactID(env))
	}
}
