package router_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/testenv"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	"github.com/callvault/callvault/services/router"
)

// admitRecording stores a recording's media and publishes its admission
// with the given call id and start time (the harness fixes both).
func (rg *rig) admitRecording(r recording, callID string, started time.Time) {
	rg.t.Helper()
	key := "recordings/" + r.domain + "/" + r.id
	if _, err := rg.d.CDS.Put(context.Background(), key, bytes.NewReader(r.body), "audio/wav"); err != nil {
		rg.t.Fatal(err)
	}
	env := &eventv1.Envelope{
		Id: "admitted:" + r.domain + "/" + r.id, ArtifactId: r.id, AcceptedAt: timestamppb.Now(), Source: "policy", Type: "artifact.admitted", SchemaVersion: 2,
		Tenant: &eventv1.Tenant{Reseller: r.reseller, Domain: r.domain, User: r.user},
		Body: &eventv1.Envelope_Admitted{Admitted: &eventv1.ArtifactAdmitted{
			Kind: eventv1.DataKind_DATA_KIND_RECORDING_AUTOMATIC, IngestAcceptedAt: timestamppb.New(started),
			Artifact: &eventv1.ArtifactAdmitted_Recording{Recording: &eventv1.RecordingStored{
				CallId: callID, Mode: eventv1.RecordingMode_RECORDING_MODE_AUTOMATIC, StartedAt: timestamppb.New(started), DurationS: 60,
				Media: &eventv1.MediaObject{Key: key, SizeBytes: int64(len(r.body)), Sha256: sha(r.body), ContentType: "audio/wav"},
			}},
		}},
	}
	if _, err := bus.PublishEnvelope(context.Background(), rg.d.JS, rg.d.Names.AdmittedSubject(), env.GetId(), env); err != nil {
		rg.t.Fatal(err)
	}
}

// restartWith restarts the rig's router with a retention source (the
// harness starts it without one).
func (rg *rig) restartWith(ret router.Retention) {
	rg.t.Helper()
	rg.stop()
	rg.d.Registry = prometheus.NewRegistry()
	svc, err := router.New(rg.d, rg.set, ret)
	if err != nil {
		rg.t.Fatal(err)
	}
	rg.svc = svc
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	stopped := false
	rg.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			rg.t.Errorf("router run: %v", err)
		}
	}
}

// waitParkedAndAcked waits until an artifact is parked and the stream has
// nothing of it left to hand out.
func (rg *rig) waitParkedAndAcked(domain, id string) {
	rg.t.Helper()
	ctx := context.Background()
	parked := rg.d.Names.Namespace() + ":{_archive}:parked"
	testenv.WaitFor(rg.t, id+" parked", func() bool {
		_, err := rg.d.Redis.ZScore(ctx, parked, domain+"/"+id).Result()
		return err == nil
	})
	testenv.WaitFor(rg.t, "the decision acknowledged on the stream", func() bool {
		c, err := rg.d.JS.Consumer(ctx, rg.d.Names.IngestStream(), router.ArchiveConsumer)
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	})
}

// loseRouterState deletes every key of the router (as a Redis that lost
// its data, or the single binary's in-process Redis at a restart).
func (rg *rig) loseRouterState() {
	rg.t.Helper()
	ctx := context.Background()
	keys, err := testenv.Keys(ctx, rg.d.Redis, rg.d.Names.Namespace()+":*arch*")
	if err != nil || len(keys) == 0 {
		rg.t.Fatalf("router keys = %v, %v", keys, err)
	}
	if err := rg.d.Redis.Del(ctx, keys...).Err(); err != nil {
		rg.t.Fatal(err)
	}
}

// TestKeptWaitingWorkSurvivesLosingRedis: two fixes meet. Work whose
// configuration was disabled (to be fixed) while nothing else matches
// keeps waiting for it; and waiting work is parked again when Redis lost
// the router's state. But the restore parks the work without the
// configuration it waited for, so its first retry finds nothing matching
// and no earlier wait, and records it as "not archived" for good:
// re-enabling the fixed configuration archives nothing.
func TestKeptWaitingWorkSurvivesLosingRedis(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	ctx := context.Background()
	bucket := bucketName(t) // missing: D fails until it is fixed
	dc, ds := s3Config(t, "D", "domain", "a.example", "s3", bucket)
	D := rg.create(aDomain, dc, ds)
	rg.admit(recording{id: "rec-1", domain: "a.example", reseller: "r1", body: randomBytes(3000)})
	rg.waitParkedAndAcked("a.example", "rec-1")

	// The operator disables D to fix it; the work keeps waiting for it.
	dc.Id, dc.Enabled = D.GetId(), false
	if _, _, err := rg.svc.UpdateConfig(ctx, aDomain, dc, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // several drain rounds
	if st := rg.state("a.example", "rec-1"); st.GetState() != "pending" {
		t.Fatalf("setup: rec-1 with D disabled = %s (%q), want pending", st.GetState(), st.GetReason())
	}

	// Redis loses the router's state; the router restarts and restores.
	rg.stop()
	rg.loseRouterState()
	rg.start()
	time.Sleep(1500 * time.Millisecond) // the re-parked work is retried

	// D is fixed and enabled again.
	rg.createBucket(bucket, false)
	dc.Enabled = true
	if _, _, err := rg.svc.UpdateConfig(ctx, aDomain, dc, nil); err != nil {
		t.Fatal(err)
	}
	if st, ok := rg.stateWithin("a.example", "rec-1", "archived", 10*time.Second); !ok {
		t.Errorf("rec-1, which waited for D when Redis lost its state, = %s (%q) after D was fixed and enabled again, want archived",
			st.GetState(), st.GetReason())
	}
}

// TestIntentDoesNotAdoptAnObjectItNeverWrote: before an encrypted upload
// the router records its intent (configuration and key), and an attempt
// that finds the key taken adopts the object when an earlier attempt
// recorded that very key. But the intent is recorded before the attempt
// finds out anything: the first attempt meets an object someone else put
// at the key (another system writing the same bucket with the same
// naming), refuses it and leaves its intent; the retry then finds "its"
// intent and adopts the stranger's object as the recording's verified
// archive. The object decrypts to another recording.
func TestIntentDoesNotAdoptAnObjectItNeverWrote(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	ctx := context.Background()
	ident, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	bucket := rg.bucket(false)
	c, s := s3Config(t, "E", "domain", "a.example", "s3", bucket)
	c.AgeRecipient = ident.Recipient().String()
	rg.create(aDomain, c, s)
	// Another recording, encrypted to the same tenant key, already sits at
	// the key the router renders for rec-1.
	otherPlain := randomBytes(7000)
	var ct bytes.Buffer
	w, err := age.Encrypt(&ct, ident.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(otherPlain)
	_ = w.Close()
	key := "a.example/2026/11/02/call-rec-1/rec-1.wav.age"
	if _, err := rg.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(ct.Bytes())}); err != nil {
		t.Fatal(err)
	}
	body := randomBytes(5000)
	rg.admit(recording{id: "rec-1", domain: "a.example", reseller: "r1", body: body})

	st, archived := rg.stateWithin("a.example", "rec-1", "archived", 6*time.Second)
	if !archived {
		return // kept waiting: the object in the way was not taken for the recording
	}
	r, err := age.Decrypt(bytes.NewReader(rg.getObject(bucket, key)), ident)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(r)
	if !bytes.Equal(plain, body) {
		t.Errorf("rec-1 is recorded as archived at %s (SHA-256 %s, %d bytes), but the router never wrote that object: it decrypts to %d bytes of another recording (SHA-256 %s), not rec-1's %d bytes (%s)",
			st.GetLocation(), st.GetSha256(), st.GetSizeBytes(), len(plain), sha(plain), len(body), sha(body))
	}
}

// fakeS3 answers every GET and HEAD with the same object, as another
// S3-compatible service holding a bucket of the same name would.
func fakeS3(t *testing.T, body []byte) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			w.Header().Set("Content-Type", "audio/wav")
			w.Header().Set("ETag", `"fake"`)
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(http.StatusOK)
			if r.Method == http.MethodGet {
				_, _ = w.Write(body)
			}
		default:
			w.WriteHeader(http.StatusForbidden)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestPlaybackChecksTheServiceNotOnlyTheBucket: playback refuses to read
// through a configuration pointed elsewhere since the recording was
// stored, but "where" is compared as s3://bucket/key, without the
// endpoint. A tenant that moves its configuration to another
// S3-compatible service (AWS to Wasabi, say) keeping the bucket name, as
// bucket names are the service's own, has the recording played from the
// new service: whatever that bucket holds at the key is streamed as the
// verified archive.
func TestPlaybackChecksTheServiceNotOnlyTheBucket(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	ctx := context.Background()
	bucket := rg.bucket(false)
	c, s := s3Config(t, "C", "domain", "a.example", "s3", bucket)
	C := rg.create(aDomain, c, s)
	body := randomBytes(4000)
	rg.admit(recording{id: "rec-1", domain: "a.example", reseller: "r1", body: body})
	st := rg.waitState("a.example", "rec-1", "archived")

	other := bytes.Repeat([]byte("not rec-1 "), 400)
	elsewhere := fakeS3(t, other)
	c.Id, c.Endpoint = C.GetId(), elsewhere.URL
	if _, _, err := rg.svc.UpdateConfig(ctx, aDomain, c, nil); err != nil {
		t.Fatal(err)
	}
	rc, err := rg.svc.OpenArchived(ctx, aDomain, "a.example", "rec-1", 0, -1)
	if err != nil {
		return // refused: it was not stored on that service
	}
	got, _ := io.ReadAll(rc)
	_ = rc.Close()
	if !bytes.Equal(got, body) {
		t.Errorf("playback of rec-1 (archived at %s on %s) streamed %d bytes with SHA-256 %s from %s, not the recording's %s",
			st.GetLocation(), testenv.Env(t, "CALLVAULT_TEST_S3_ENDPOINT"), len(got), sha(got), elsewhere.URL, sha(body))
	}
}

// pastRetention answers a delete-by date already past, as the policy does
// for a recording older than its retention (a PBX's older files migrated
// into the CDS, or a recording that waited for its target past the date).
type pastRetention map[string]time.Time

func (p pastRetention) DeleteBy(_ context.Context, _, id string) (time.Time, error) {
	if at, ok := p[id]; ok {
		return at, nil
	}
	return time.Now().AddDate(1, 0, 0), nil
}

// TestWORMRecordingPastItsDeleteByIsNotRetriedForEver: a WORM
// configuration locks each object until the recording's delete-by date.
// When that date is already past, the S3 target refuses the put ("not in
// the future") before sending anything, and the router takes that for a
// failure of the target: the recording waits and is retried for ever, and
// a working bucket is shown in error.
func TestWORMRecordingPastItsDeleteByIsNotRetriedForEver(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	started := time.Date(2023, 5, 2, 9, 0, 0, 0, time.UTC)
	rg.restartWith(pastRetention{"rec-old": started.AddDate(2, 0, 0)}) // kept 24 months: May 2025
	locked := rg.bucket(true)
	c, s := rg.s3Pair(t, "W", "domain", "a.example", locked)
	c.WormMode = "governance"
	W := rg.create(aDomain, c, s)
	rg.admitRecording(recording{id: "rec-old", domain: "a.example", reseller: "r1", body: randomBytes(2000)}, "call-old", started)
	// A recent recording shows the bucket works.
	rg.admit(recording{id: "rec-new", domain: "a.example", reseller: "r1", body: randomBytes(2000)})
	rg.waitState("a.example", "rec-new", "archived")

	ended := within(8*time.Second, func() bool {
		st := rg.state("a.example", "rec-old").GetState()
		return st == "archived" || st == "not_archived"
	})
	st := rg.state("a.example", "rec-old")
	if !ended {
		t.Errorf("rec-old, whose delete-by date has passed, is still %s (%q): retried for ever", st.GetState(), st.GetReason())
	}
	if cs := rg.status(W.GetId()); cs.GetState() == "error" {
		t.Errorf("W, whose bucket works, is in error (%q) over one recording's past date", cs.GetLastError())
	}
}

// TestSFTPTempNameFitsWhenTheKeyFits: keys are bounded so that every
// segment fits a file name (255 bytes), and a key over the bound is
// recorded as not archived. But the SFTP target writes first to
// ".<name>.partial-<16 hex>", 26 bytes longer than the name: a recording
// whose file name is between 230 and 255 bytes passes the bound, cannot
// be written, and is retried for ever with its working configuration
// marked error. A 256-character call id (ingest allows it) and a
// 110-character recording id (ids may have 128) give such a name with the
// default template.
func TestSFTPTempNameFitsWhenTheKeyFits(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	sc, ss, _ := sftpConfig(t, "F", "domain", "a.example")
	F := rg.create(aDomain, sc, ss)
	callID := strings.Repeat("c", 244) + "@pbx.example" // 256 characters
	id := "rec-" + strings.Repeat("9", 106)             // 110 characters
	rg.admitRecording(recording{id: id, domain: "a.example", reseller: "r1", body: randomBytes(1000)}, callID, time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC))
	rg.admit(recording{id: "rec-ok", domain: "a.example", reseller: "r1", body: randomBytes(1000)})
	rg.waitState("a.example", "rec-ok", "archived")
	ended := within(8*time.Second, func() bool {
		st := rg.state("a.example", id).GetState()
		return st == "archived" || st == "not_archived"
	})
	if !ended {
		st := rg.state("a.example", id)
		t.Errorf("the recording whose file name is %d bytes (within the 255 the bound allows) is still %s (%q)",
			120+1+len(id)+4, st.GetState(), st.GetReason())
	}
	if cs := rg.status(F.GetId()); cs.GetState() == "error" {
		t.Errorf("F, whose server works, is in error: %q", cs.GetLastError())
	}
}

// TestSlowTargetDoesNotStallOtherTenants: uploads are bounded per
// configuration "so one slow tenant cannot starve the others", but the
// consumer handles one batch at a time and waits for every upload of it:
// one recording to a slow (or hanging) target holds back every other
// tenant's recordings admitted after it until that upload ends.
func TestSlowTargetDoesNotStallOtherTenants(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	const slow = 15 * time.Second
	proxy := newS3Proxy(t, map[string]time.Duration{"rec-slow": slow})
	proxy.armed.Store(true)
	ac, as := s3Config(t, "A", "domain", "a.example", "s3", rg.bucket(false))
	ac.Endpoint = proxy.srv.URL
	rg.create(aDomain, ac, as)
	rg.createPair(bDomain)(s3Config(t, "B", "domain", "b.example", "s3", rg.bucket(false)))

	rg.admit(recording{id: "rec-slow", domain: "a.example", reseller: "r1", body: randomBytes(2000)})
	testenv.WaitFor(t, "rec-slow uploading", func() bool { return proxy.count("rec-slow") > 0 })
	start := time.Now()
	for i := range 5 {
		rg.admit(recording{id: fmt.Sprintf("b-%d", i), domain: "b.example", reseller: "r1", body: randomBytes(2000)})
	}
	allArchived := func() bool {
		for i := range 5 {
			if rg.state("b.example", fmt.Sprintf("b-%d", i)).GetState() != "archived" {
				return false
			}
		}
		return true
	}
	if !within(5*time.Second, allArchived) {
		var pending []string
		for i := range 5 {
			if st := rg.state("b.example", fmt.Sprintf("b-%d", i)); st.GetState() != "archived" {
				pending = append(pending, st.GetArtifactId())
			}
		}
		took := "not within 30s"
		if within(30*time.Second, allArchived) {
			took = fmt.Sprintf("%.1fs after they were admitted", time.Since(start).Seconds())
		}
		t.Errorf("b.example's recordings %v, whose target works, were still pending 5s after they were admitted; all were archived %s, once a.example's one slow upload (%s) ended",
			pending, took, slow)
	}
}

// TestPlaybackAfterAPrefixChange: playback reads only where a recording
// was stored, refusing a configuration pointed at "another bucket or
// server". A new prefix is neither: the bucket, the service and the
// credentials are the same and the archive record holds the object's full
// key. Yet every recording archived before the prefix changed answers
// unavailable.
func TestPlaybackAfterAPrefixChange(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	ctx := context.Background()
	bucket := rg.bucket(false)
	c, s := s3Config(t, "C", "domain", "a.example", "s3", bucket)
	c.Prefix = "callvault-2026"
	C := rg.create(aDomain, c, s)
	body := randomBytes(4000)
	rg.admit(recording{id: "rec-1", domain: "a.example", reseller: "r1", body: body})
	st := rg.waitState("a.example", "rec-1", "archived")
	// New recordings go under a new prefix from now on.
	c.Id, c.Prefix = C.GetId(), "callvault-2027"
	if _, _, err := rg.svc.UpdateConfig(ctx, aDomain, c, nil); err != nil {
		t.Fatal(err)
	}
	rc, err := rg.svc.OpenArchived(ctx, aDomain, "a.example", "rec-1", 0, -1)
	if err != nil {
		t.Fatalf("playback of rec-1, archived at %s in the bucket the configuration still uses, refused: %v", st.GetLocation(), err)
	}
	got, _ := io.ReadAll(rc)
	_ = rc.Close()
	if !bytes.Equal(got, body) {
		t.Errorf("playback streamed %d bytes (SHA-256 %s), want the recording's %s", len(got), sha(got), sha(body))
	}
}

// TestDuplicateEncryptedDecisionsLeaveNoPhantomWait: one recording handed
// out twice at once (a decision published again, two instances restoring
// the waiting work, a lease that ran out) is stored once by the
// conditional write. Encrypted, the attempt that recorded the first
// intent and lost the race cannot tell the winner's object from another's
// and marks the recording waiting and the configuration in error after the
// winner recorded it archived. Nothing clears that afterwards: the
// configuration shows archived recordings "waiting" for ever.
func TestDuplicateEncryptedDecisionsLeaveNoPhantomWait(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	ident, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	c, s := s3Config(t, "E", "domain", "a.example", "s3", rg.bucket(false))
	c.AgeRecipient = ident.Recipient().String()
	E := rg.create(aDomain, c, s)
	const n = 12
	for i := range n {
		r := recording{id: fmt.Sprintf("rec-%d", i), domain: "a.example", reseller: "r1", body: randomBytes(30_000)}
		rg.admit(r)
		rg.publishAdmitted(r, "recordings/a.example/"+r.id, "again-"+r.id)
	}
	for i := range n {
		rg.waitState("a.example", fmt.Sprintf("rec-%d", i), "archived")
	}
	time.Sleep(2 * time.Second) // every second attempt ends, retries included
	for id, k := range rg.archivedEvents() {
		if k != 1 {
			t.Errorf("%s has %d archive records", id, k)
		}
	}
	st := rg.status(E.GetId())
	if st.GetArchived() != n || st.GetWaiting() != 0 || st.GetState() != "active" {
		t.Errorf("after all %d recordings were archived E = %s with %d archived, %d waiting (%q), want active, %d archived, none waiting",
			n, st.GetState(), st.GetArchived(), st.GetWaiting(), st.GetLastError(), n)
	}
}

// TestDefaultTemplateKeepsTwoRecordingsApart: the default template joins
// the call id and the recording id with "_", and rendering escapes
// neither value's "_" (call ids are printable ASCII, recording ids
// [A-Za-z0-9._-]). Call "c1" with recording "leg_2" and call "c1_leg"
// with recording "2", on the same day of one domain, both render
// "c1_leg_2.wav": the second is refused as "other bytes" at the first's
// key and waits for ever, its working configuration in error.
func TestDefaultTemplateKeepsTwoRecordingsApart(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	bucket := rg.bucket(false)
	D := rg.createPair(aDomain)(s3Config(t, "D", "domain", "a.example", "s3", bucket))
	day := time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)
	rg.admitRecording(recording{id: "leg_2", domain: "a.example", reseller: "r1", body: randomBytes(1500)}, "c1", day)
	rg.waitState("a.example", "leg_2", "archived")
	rg.admitRecording(recording{id: "2", domain: "a.example", reseller: "r1", body: randomBytes(1600)}, "c1_leg", day.Add(time.Hour))
	if st, ok := rg.stateWithin("a.example", "2", "archived", 6*time.Second); !ok {
		t.Errorf("recording 2 of call c1_leg = %s (%q), want archived beside recording leg_2 of call c1; bucket holds %v",
			st.GetState(), st.GetReason(), rg.objects(bucket))
	}
	if cs := rg.status(D.GetId()); cs.GetState() == "error" {
		t.Errorf("D, whose bucket works, is in error: %q", cs.GetLastError())
	}
}

// deletedRetention answers for a deleted recording what the policy's
// Explain answers (the single binary's retention source passes it on):
// not found, as only admitted artifacts have a policy.
type deletedRetention map[string]bool

func (d deletedRetention) DeleteBy(_ context.Context, domain, id string) (time.Time, error) {
	if d[id] {
		return time.Time{}, fmt.Errorf("%w: artifact %s in %s", apierr.ErrNotFound, id, domain)
	}
	return time.Now().AddDate(1, 0, 0), nil
}

// TestWORMRecordingDeletedBeforeItWasArchived: a recording deleted before
// the router reached it (it waited for its target, or the router was
// behind) has no central copy left, and is recorded as not archived, for
// that reason, on any configuration but a WORM one: there the router
// first asks for the delete-by date, gets "not found" for the deleted
// recording, and takes that for a failure of the target. The recording
// waits for ever and the working WORM bucket is shown in error.
func TestWORMRecordingDeletedBeforeItWasArchived(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	ctx := context.Background()
	locked := rg.bucket(true)
	c, s := rg.s3Pair(t, "W", "domain", "a.example", locked)
	c.WormMode = "compliance"
	W := rg.create(aDomain, c, s)
	rg.stop()
	rg.admit(recording{id: "rec-del", domain: "a.example", reseller: "r1", body: randomBytes(2000)})
	// The recording is deleted: its media goes, and it has no policy now.
	if err := rg.d.CDS.Delete(ctx, "recordings/a.example/rec-del"); err != nil {
		t.Fatal(err)
	}
	rg.restartWith(deletedRetention{"rec-del": true})
	rg.admit(recording{id: "rec-ok", domain: "a.example", reseller: "r1", body: randomBytes(2000)})
	rg.waitState("a.example", "rec-ok", "archived")
	ended := within(8*time.Second, func() bool { return rg.state("a.example", "rec-del").GetState() != "pending" })
	if st := rg.state("a.example", "rec-del"); !ended {
		t.Errorf("rec-del, deleted with its central copy, is still %s (%q): retried for ever", st.GetState(), st.GetReason())
	}
	if cs := rg.status(W.GetId()); cs.GetState() == "error" {
		t.Errorf("W, whose bucket works, is in error (%q) over a deleted recording", cs.GetLastError())
	}
}

// TestRedisLossWhileRunningDoesNotRecordNotArchived: the router restores
// its configurations only when it starts. When Redis loses its data under
// a running router (a restart without persistence, a failover to an empty
// replica; the policy service notices by its applied marks and rebuilds),
// the router finds no configuration at all and records every recording
// it takes meanwhile as "not archived", for good: the record is published,
// so even the next restore keeps it.
func TestRedisLossWhileRunningDoesNotRecordNotArchived(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	bucket := rg.bucket(false)
	rg.createPair(aDomain)(s3Config(t, "D", "domain", "a.example", "s3", bucket))
	rg.admit(recording{id: "rec-0", domain: "a.example", reseller: "r1", body: randomBytes(1000)})
	rg.waitState("a.example", "rec-0", "archived")

	rg.loseRouterState() // Redis comes back empty; the router runs on
	rg.admit(recording{id: "rec-1", domain: "a.example", reseller: "r1", body: randomBytes(1000)})
	time.Sleep(2 * time.Second)
	// However the router recovers meanwhile, a restart certainly restores
	// the configurations.
	rg.stop()
	rg.start()
	if st, ok := rg.stateWithin("a.example", "rec-1", "archived", 8*time.Second); !ok {
		t.Errorf("rec-1, admitted while Redis was empty under the running router, = %s (%q), want archived to D; bucket holds %v",
			st.GetState(), st.GetReason(), rg.objects(bucket))
	}
}

// TestLeaseCoversTheWaitForATurn: a drainer claims up to four times as
// many parked jobs as it has workers and leases them all at once for one
// upload's time (UploadTimeout plus a minute). The jobs then queue for a
// worker and for their configuration's upload slots, so on a recovering
// target with a backlog the last claimed ones start, or are still
// uploading, after their lease ran out: another instance claims them and
// uploads the same recordings at the same time. "Each claim leased so two
// router instances never take one job at once" does not hold. (This test
// takes about a hundred seconds: the lease is at least a minute.)
func TestLeaseCoversTheWaitForATurn(t *testing.T) {
	if testing.Short() {
		t.Skip("about a hundred seconds")
	}
	t.Parallel()
	set := fastSettings(t)
	set.Workers, set.PerTarget, set.ParkAfter = 3, 1, 1
	set.ParkedRetry, set.UploadTimeout = 2*time.Second, 10*time.Second // lease 70s
	rg := newRig(t, set)
	ctx := context.Background()
	const n = 12 // 4 x Workers: one claim takes them all
	delays := map[string]time.Duration{}
	for i := range n {
		delays[fmt.Sprintf("lease-%02d", i)] = 8 * time.Second // each upload 8s; one at a time
	}
	proxy := newS3Proxy(t, delays)
	bucket := bucketName(t) // missing: everything parks first
	c, s := s3Config(t, "X", "domain", "a.example", "s3", bucket)
	c.Endpoint = proxy.srv.URL
	rg.create(aDomain, c, s)
	for i := range n {
		rg.admit(recording{id: fmt.Sprintf("lease-%02d", i), domain: "a.example", reseller: "r1", body: randomBytes(2000)})
	}
	parked := rg.d.Names.Namespace() + ":{_archive}:parked"
	leases := rg.d.Names.Namespace() + ":{_archive}:leases"
	testenv.WaitFor(t, "all parked", func() bool {
		k, err := rg.d.Redis.ZCard(ctx, parked).Result()
		return err == nil && k == n
	})
	proxy.armed.Store(true)
	rg.createBucket(bucket, false) // the target recovers
	// A drainer claims only what its free workers can start: never the
	// whole backlog at once under one upload's lease.
	if !within(10*time.Second, func() bool {
		k, err := rg.d.Redis.HLen(ctx, leases).Result()
		return err == nil && k > 0
	}) {
		t.Fatal("setup: no drainer claimed anything")
	}
	if k, _ := rg.d.Redis.HLen(ctx, leases).Result(); k > int64(set.Workers) {
		t.Errorf("one drainer holds %d leases with %d workers", k, set.Workers)
	}
	rg.secondService(true) // a second replica
	if !within(150*time.Second, func() bool {
		for i := range n {
			if rg.state("a.example", fmt.Sprintf("lease-%02d", i)).GetState() != "archived" {
				return false
			}
		}
		return true
	}) {
		t.Fatal("the backlog did not drain")
	}
	time.Sleep(10 * time.Second) // uploads still running end
	var twice []string
	for i := range n {
		m := fmt.Sprintf("lease-%02d", i)
		if k := proxy.count(m); k > 1 {
			twice = append(twice, fmt.Sprintf("%s x%d", m, k))
		}
	}
	if len(twice) > 0 {
		t.Errorf("recordings claimed (leased) by one instance were uploaded again by the other: %v", twice)
	}
}

// TestParkedRecordNamesItsAdmission: an archive record names "the
// admission decision this follows (its stream sequence)". A recording
// that waited for its target is archived by the drainer, which passes 0:
// every record of work that ever waited says it follows no admission.
func TestParkedRecordNamesItsAdmission(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	bucket := bucketName(t) // missing: the recording parks
	rg.createPair(aDomain)(s3Config(t, "D", "domain", "a.example", "s3", bucket))
	seq := rg.admit(recording{id: "rec-1", domain: "a.example", reseller: "r1", body: randomBytes(1000)})
	rg.waitParkedAndAcked("a.example", "rec-1")
	rg.createBucket(bucket, false)
	rg.waitState("a.example", "rec-1", "archived")
	var got *eventv1.ArtifactArchived
	_, _, err := bus.Replay(context.Background(), rg.d.JS, rg.d.Names.IngestStream(), []string{rg.d.Names.ArchivedSubject()},
		func(_ context.Context, env *eventv1.Envelope, _ uint64) error {
			if env.GetArtifactId() == "rec-1" {
				got = env.GetArchived()
			}
			return nil
		})
	if err != nil || got == nil {
		t.Fatalf("archive record of rec-1: %v, %v", got, err)
	}
	if got.GetAdmittedSequence() != seq {
		t.Errorf("the archive record of rec-1 names admission %d, want %d (the decision it follows)", got.GetAdmittedSequence(), seq)
	}
}
