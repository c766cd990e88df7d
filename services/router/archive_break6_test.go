package router_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/testenv"
	eventv1 "github.com/callvault/callvault/proto/callvault/event/v1"
	routerv1 "github.com/callvault/callvault/proto/callvault/router/v1"
	"github.com/callvault/callvault/services/router"
)

// within polls cond until it holds or d passes, and reports which.
func within(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// stateWithin waits up to d for an artifact to reach want and returns the
// last state seen.
func (rg *rig) stateWithin(domain, id, want string, d time.Duration) (*routerv1.ArchiveState, bool) {
	rg.t.Helper()
	var st *routerv1.ArchiveState
	ok := within(d, func() bool {
		st = rg.state(domain, id)
		return st.GetState() == want
	})
	return st, ok
}

// storedRecord reads a configuration's record as the router keeps it.
func (rg *rig) storedRecord(id string) *eventv1.ArchiveConfigRecord {
	rg.t.Helper()
	b, err := rg.d.Redis.HGet(context.Background(), rg.d.Names.Namespace()+":{_archive}:configs", id).Bytes()
	if err != nil {
		rg.t.Fatalf("config %s in redis: %v", id, err)
	}
	r := &eventv1.ArchiveConfigRecord{}
	if err := proto.Unmarshal(b, r); err != nil {
		rg.t.Fatal(err)
	}
	return r
}

// TestResavingAfterKeyRotationReseals: the seal package and the issue
// promise that keys rotate by putting a new key first and re-saving.
// Re-saving a configuration without re-entering its secret keeps the box
// sealed with the old key, so the old key can never be retired: once it
// is removed, every re-saved configuration stops working.
func TestResavingAfterKeyRotationReseals(t *testing.T) {
	t.Parallel()
	set := fastSettings(t)
	oldKey := set.SecretKey
	rg := newRig(t, set)
	ctx := context.Background()
	C := rg.createPair(aDomain)(s3Config(t, "C", "domain", "a.example", "s3", rg.bucket(false)))
	if kid := rg.storedRecord(C.GetId()).GetSecret().GetKeyId(); kid != "test-1" {
		t.Fatalf("sealed with %q, want test-1", kid)
	}

	// Rotate: the new key first, the old one still opening.
	newKey, err := router.NewSecretKeySpec("test-2")
	if err != nil {
		t.Fatal(err)
	}
	rg.stop()
	rg.set.SecretKey = newKey + "," + oldKey
	rg.start()
	got, err := rg.svc.GetConfig(ctx, aDomain, C.GetId())
	if err != nil {
		t.Fatal(err)
	}
	got.Name = "C re-saved"
	if _, _, err := rg.svc.UpdateConfig(ctx, aDomain, got, nil); err != nil {
		t.Fatalf("re-save: %v", err)
	}
	if kid := rg.storedRecord(C.GetId()).GetSecret().GetKeyId(); kid != "test-2" {
		t.Errorf("after re-saving under the rotated keyring the secret is still sealed with %q, want the new key test-2", kid)
	}

	// Retire the old key: the re-saved configuration must still work.
	rg.stop()
	rg.set.SecretKey = newKey
	rg.start()
	res, err := rg.svc.TestConfig(ctx, aDomain, C.GetId())
	if err != nil {
		t.Fatal(err)
	}
	if !res.GetOk() {
		t.Errorf("after retiring the old key the re-saved configuration fails: %s %s: %s", res.GetStep(), res.GetReason(), res.GetDetail())
	}
}

// TestDisablingAFailingConfigKeepsItsBacklog: an operator disables a
// failing configuration (to fix it) while no other configuration matches.
// The rule is to keep the work until it succeeds or an operator acts, and
// work waiting for a re-enabled configuration flows to it. Instead the
// drainer records the whole backlog as "not archived" within
// one drain tick of the disable, terminally: re-enabling the fixed
// configuration archives none of it.
func TestDisablingAFailingConfigKeepsItsBacklog(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	ctx := context.Background()
	bucket := bucketName(t) // not created yet: the target fails
	dc, ds := s3Config(t, "D", "domain", "a.example", "s3", bucket)
	D := rg.create(aDomain, dc, ds)
	for i := range 2 {
		rg.admit(recording{id: fmt.Sprintf("rec-%d", i), domain: "a.example", reseller: "r1", body: randomBytes(1000 + i)})
	}
	testenv.WaitFor(t, "two waiting on D", func() bool { return rg.status(D.GetId()).GetWaiting() == 2 })

	// Disable while the target is fixed...
	dc.Id, dc.Enabled = D.GetId(), false
	if _, _, err := rg.svc.UpdateConfig(ctx, aDomain, dc, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	rg.createBucket(bucket, false)
	// ...and enable it again.
	dc.Enabled = true
	if _, _, err := rg.svc.UpdateConfig(ctx, aDomain, dc, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		id := fmt.Sprintf("rec-%d", i)
		if st, ok := rg.stateWithin("a.example", id, "archived", 10*time.Second); !ok {
			t.Errorf("%s after the fixed configuration was re-enabled: %s (%s), want archived", id, st.GetState(), st.GetReason())
		}
	}
}

// TestEncryptedObjectLeftByAnInterruptedAttempt: an attempt that stored
// the encrypted object and stopped before its archive record (crash, lost
// PubAck) leaves the object at the key. The next attempt cannot compare
// ciphertexts, treats the router's own object as a conflict and retries
// for ever: the recording is never archived and the configuration stays
// in error, though its target works and holds the recording.
func TestEncryptedObjectLeftByAnInterruptedAttempt(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	ctx := context.Background()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	bucket := rg.bucket(false)
	c, s := s3Config(t, "E", "domain", "a.example", "s3", bucket)
	c.AgeRecipient = id.Recipient().String()
	E := rg.create(aDomain, c, s)
	body := randomBytes(5000)
	// What the interrupted attempt left: the recording encrypted to the
	// tenant's key at the key the router renders for it.
	var ct bytes.Buffer
	w, err := age.Encrypt(&ct, id.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(body)
	_ = w.Close()
	key := "a.example/2026/11/02/call-rec-1/rec-1.wav.age"
	if _, err := rg.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(ct.Bytes())}); err != nil {
		t.Fatal(err)
	}
	// ...and the intent it recorded just before it committed that object.
	if err := rg.d.Redis.SAdd(ctx, rg.d.Names.Namespace()+":{a.example}:archintent:rec-1", E.GetId()+"\n"+key+"\n"+sha(ct.Bytes())).Err(); err != nil {
		t.Fatal(err)
	}
	rg.admit(recording{id: "rec-1", domain: "a.example", reseller: "r1", body: body})
	st, ok := rg.stateWithin("a.example", "rec-1", "archived", 8*time.Second)
	if !ok {
		t.Errorf("rec-1 = %s (%q), want archived: the object at %s is the router's own and decrypts to the recording", st.GetState(), st.GetReason(), key)
	}
	if cs := rg.status(E.GetId()); cs.GetState() == "error" {
		t.Errorf("E is %q with %d waiting (%q) though its target works", cs.GetState(), cs.GetWaiting(), cs.GetLastError())
	}
	// The object in the way is the recording itself.
	r, err := age.Decrypt(bytes.NewReader(rg.getObject(bucket, key)), id)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(r)
	if !bytes.Equal(plain, body) {
		t.Fatal("test setup: the leftover does not decrypt to the recording")
	}
}

// TestParkedWorkSurvivesLosingRedis: work parked for a failing target is
// acknowledged on the stream and kept only in Redis. After Redis loses the
// router's keys (the all-in-one binary's in-process Redis starts empty on
// every restart) the restore brings back configurations and archive
// records but not the parked work, so the recording is never archived
// once the target recovers: it is lost to the archive.
func TestParkedWorkSurvivesLosingRedis(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	ctx := context.Background()
	bucket := bucketName(t) // missing until the target "recovers"
	rg.createPair(aDomain)(s3Config(t, "D", "domain", "a.example", "s3", bucket))
	rg.admit(recording{id: "rec-1", domain: "a.example", reseller: "r1", body: randomBytes(3000)})
	parked := rg.d.Names.Namespace() + ":{_archive}:parked"
	testenv.WaitFor(t, "rec-1 parked", func() bool {
		_, err := rg.d.Redis.ZScore(ctx, parked, "a.example/rec-1").Result()
		return err == nil
	})
	testenv.WaitFor(t, "the decision acknowledged on the stream", func() bool {
		c, err := rg.d.JS.Consumer(ctx, rg.d.Names.IngestStream(), router.ArchiveConsumer)
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	})
	rg.stop()
	keys, err := testenv.Keys(ctx, rg.d.Redis, rg.d.Names.Namespace()+":*arch*")
	if err != nil || len(keys) == 0 {
		t.Fatalf("router keys = %v, %v", keys, err)
	}
	if err := rg.d.Redis.Del(ctx, keys...).Err(); err != nil {
		t.Fatal(err)
	}
	rg.start()
	rg.createBucket(bucket, false) // the target recovers
	if st, ok := rg.stateWithin("a.example", "rec-1", "archived", 10*time.Second); !ok {
		t.Errorf("rec-1 after the restore and the target's recovery = %s (%q), want archived; bucket holds %v",
			st.GetState(), st.GetReason(), rg.objects(bucket))
	}
}

// TestTemplateWithoutDomainCannotCollide: recording ids are the domain's
// own (two domains may both have rec-1), yet a reseller or system
// configuration may use a template without {domain}; validation claims
// {recording_id} alone keeps two recordings apart. The second domain's
// rec-1 is then refused for ever ("other bytes") and never archived.
func TestTemplateWithoutDomainCannotCollide(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	bucket := rg.bucket(false)
	c, s := s3Config(t, "R", "reseller", "r1", "s3", bucket)
	c.PathTemplate = "{yyyy}/{mm}/{recording_id}.{ext}"
	if _, _, err := rg.svc.CreateConfig(context.Background(), r1, c, s); err != nil {
		t.Logf("a template without {domain} at reseller level is refused: %v", err)
		return
	}
	rg.admit(recording{id: "rec-1", domain: "a.example", reseller: "r1", body: randomBytes(2000)})
	// b.example's own rec-1 (its decision id names its domain, as ingest's do).
	bRec := recording{id: "rec-1", domain: "b.example", reseller: "r1", body: randomBytes(2001)}
	if _, err := rg.d.CDS.Put(context.Background(), "recordings/b.example/rec-1", bytes.NewReader(bRec.body), "audio/wav"); err != nil {
		t.Fatal(err)
	}
	rg.publishAdmitted(bRec, "recordings/b.example/rec-1", "admitted-b.example-rec-1")
	for _, dom := range []string{"a.example", "b.example"} {
		if st, ok := rg.stateWithin(dom, "rec-1", "archived", 8*time.Second); !ok {
			t.Errorf("%s rec-1 = %s (%q), want archived (or the template refused)", dom, st.GetState(), st.GetReason())
		}
	}
}

// TestPlaybackReadsWhereItWasArchived: playback from the archive opens
// the record's key on the configuration as it is now, not where the
// object was stored. After the tenant points the configuration at a new
// bucket, the recording plays whatever that bucket holds at the same key
// (here other bytes), or nothing.
func TestPlaybackReadsWhereItWasArchived(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	ctx := context.Background()
	oldBucket, newBucket := rg.bucket(false), rg.bucket(false)
	c, s := s3Config(t, "C", "domain", "a.example", "s3", oldBucket)
	C := rg.create(aDomain, c, s)
	body := randomBytes(4000)
	rg.admit(recording{id: "rec-1", domain: "a.example", reseller: "r1", body: body})
	st := rg.waitState("a.example", "rec-1", "archived")
	key := strings.TrimPrefix(st.GetLocation(), "s3://"+oldBucket+"/")
	// The tenant moves on to a new bucket; an unrelated object happens
	// to sit at that key there.
	other := bytes.Repeat([]byte("not rec-1 "), 400)
	if _, err := rg.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(newBucket), Key: aws.String(key), Body: bytes.NewReader(other)}); err != nil {
		t.Fatal(err)
	}
	c.Id, c.Bucket = C.GetId(), newBucket
	if _, _, err := rg.svc.UpdateConfig(ctx, aDomain, c, nil); err != nil {
		t.Fatal(err)
	}
	// Playback never streams other bytes: it reads the recording from where
	// it was stored, or says why it cannot.
	rc, err := rg.svc.OpenArchived(ctx, aDomain, "a.example", "rec-1", 0, -1)
	if err != nil {
		if !strings.Contains(err.Error(), st.GetLocation()) {
			t.Fatalf("playback refused without naming where rec-1 is: %v", err)
		}
		return
	}
	got, _ := io.ReadAll(rc)
	_ = rc.Close()
	if !bytes.Equal(got, body) {
		t.Errorf("playback of rec-1 archived at %s streamed %d bytes with SHA-256 %s, not the recording's %s",
			st.GetLocation(), len(got), sha(got), sha(body))
	}
}

// TestPlainHTTPEndpointIsRefused: FTP is refused because recordings would
// cross the network unencrypted, but an S3-family endpoint of plain http
// is accepted for any tenant, and recordings then travel in clear.
func TestPlainHTTPEndpointIsRefused(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	for _, tc := range []struct{ typ, endpoint string }{
		{"wasabi", "http://s3.us-east-2.wasabisys.com"},
		{"s3", "http://s3.eu-central-1.amazonaws.com"},
	} {
		c, s := s3Config(t, "plain-"+tc.typ, "domain", "a.example", tc.typ, "plain-bucket")
		c.Endpoint, c.Enabled = tc.endpoint, false
		if made, _, err := rg.svc.CreateConfig(context.Background(), aDomain, c, s); err == nil {
			t.Errorf("%s with endpoint %s was accepted (%s): recordings would cross the network unencrypted", tc.typ, tc.endpoint, made.GetId())
		}
	}
}

// TestRESTErrorsDoNotEchoSecrets: a secret sent with the wrong JSON type
// (a numeric password, as a PIN-like password often is) is refused with
// the decoder's message, which quotes the value: the problem+json answer
// carries the password in clear.
func TestRESTErrorsDoNotEchoSecrets(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	srv := rg.rest()
	const pin = 90417733215
	sc, _, _ := sftpConfig(t, "P", "domain", "a.example")
	cfg := map[string]any{"name": "P", "level": "domain", "match": "a.example", "enabled": false, "storage_type": "sftp", "send_recordings": true,
		"host": sc.GetHost(), "port": sc.GetPort(), "username": sc.GetUsername(), "host_key_fingerprint": sc.GetHostKeyFingerprint()}
	for _, secret := range []map[string]any{{"password": pin}, {"secret_access_key": pin}} {
		resp, body := srv.do(t, "POST", "/api/v1/archive/configs", "a", map[string]any{"config": cfg, "secret": secret})
		if resp.StatusCode != 400 {
			t.Errorf("a numeric secret = %d %s, want 400", resp.StatusCode, body)
		}
		if strings.Contains(body, fmt.Sprint(pin)) {
			t.Errorf("the refusal quotes the secret: %s", body)
		}
	}
	if strings.Contains(rg.logs.String(), fmt.Sprint(pin)) {
		t.Error("the log holds the secret")
	}
}

// TestUnstorableKeyIsNotRetriedForEver: ingest admits call ids of up to
// 256 printable characters; the default template puts the call id and
// the recording id in one path segment, which is then longer than any
// file name an SFTP server's file system holds (255 bytes). The failure
// can never succeed, yet it is treated as the target's: parked, retried
// every ParkedRetry for ever, and the working configuration is marked
// error. It should reach the dead-letter stream (or be recorded as not
// archived) with the reason.
func TestUnstorableKeyIsNotRetriedForEver(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	ctx := context.Background()
	sc, ss, _ := sftpConfig(t, "F", "domain", "a.example")
	F := rg.create(aDomain, sc, ss)
	callID := strings.Repeat("a", 244) + "@pbx.example" // 256 characters, as ingest allows
	r := recording{id: "rec-long", domain: "a.example", reseller: "r1", body: randomBytes(1000)}
	key := "recordings/a.example/rec-long"
	if _, err := rg.d.CDS.Put(ctx, key, bytes.NewReader(r.body), "audio/wav"); err != nil {
		t.Fatal(err)
	}
	rg.publishAdmittedCall(r, key, callID)
	// A second recording proves the target works.
	rg.admit(recording{id: "rec-ok", domain: "a.example", reseller: "r1", body: randomBytes(1000)})
	rg.waitState("a.example", "rec-ok", "archived")
	ended := within(8*time.Second, func() bool {
		// Archived under a bounded key, or recorded as not archived.
		if st := rg.state("a.example", "rec-long").GetState(); st == "not_archived" || st == "archived" {
			return true
		}
		dls, _ := bus.ListDeadLetters(ctx, rg.d.JS, rg.d.Names, 1, 10)
		return len(dls) > 0
	})
	if !ended {
		st := rg.state("a.example", "rec-long")
		t.Errorf("rec-long is still %s (%q) and F is %q: a key no SFTP server can hold is retried for ever",
			st.GetState(), st.GetReason(), rg.status(F.GetId()).GetState())
	}
	if st := rg.status(F.GetId()); st.GetState() == "error" {
		t.Errorf("F is in error (%q) over a recording's key, not a failure of its own", st.GetLastError())
	}
}

// publishAdmittedCall is publishAdmitted with a given call id.
func (rg *rig) publishAdmittedCall(r recording, key, callID string) {
	rg.t.Helper()
	started := time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)
	env := &eventv1.Envelope{
		Id: "admitted-" + r.domain + "-" + r.id, ArtifactId: r.id, AcceptedAt: timestamppb.Now(), Source: "policy", Type: "artifact.admitted", SchemaVersion: 2,
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

// TestConfigChangeDuringUploadLeavesNoTempFile: any change of a
// configuration (here a rename) closes its cached target while uploads on
// it are in flight. The SFTP upload then fails, and its clean-up runs on
// the closed connection, so the partial temp file stays on the tenant's
// server for ever (and the configuration is marked error meanwhile).
func TestConfigChangeDuringUploadLeavesNoTempFile(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	ctx := context.Background()
	sc, ss, dir := sftpConfig(t, "F", "domain", "a.example")
	F := rg.create(aDomain, sc, ss)
	partials := func() []string {
		var out []string
		_ = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
			if err == nil && strings.Contains(info.Name(), ".partial-") {
				out = append(out, p)
			}
			return nil
		})
		return out
	}
	rg.admit(recording{id: "rec-big", domain: "a.example", reseller: "r1", body: randomBytes(48 << 20)})
	if !within(20*time.Second, func() bool { return len(partials()) > 0 }) {
		t.Fatal("the upload was never seen in flight")
	}
	sc.Id, sc.Name = F.GetId(), "F renamed"
	if _, _, err := rg.svc.UpdateConfig(ctx, aDomain, sc, nil); err != nil {
		t.Fatal(err)
	}
	rg.waitState("a.example", "rec-big", "archived")
	if left := partials(); len(left) != 0 {
		t.Errorf("temp files left on the SFTP server after the recording was archived: %v", left)
	}
}
