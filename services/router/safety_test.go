package router_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/bus"
	"github.com/callvault/callvault/pkg/testenv"
	routerv1 "github.com/callvault/callvault/proto/callvault/router/v1"
)

// streamBytes returns every message body of a stream's subjects, raw.
func streamBytes(t *testing.T, js jetstream.JetStream, stream string) [][]byte {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		out = append(out, m.Data)
	}
	return out
}

// TestSecretsNeverShown scans every answer, every event body, Redis and
// the log for the secrets given: none holds one in clear.
func TestSecretsNeverShown(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	ctx := context.Background()
	s3Secret := testenv.Env(t, "CALLVAULT_TEST_S3_SECRET_KEY")
	const password = "pw-NEVER-SHOWN-41c7e9" //nolint:gosec // a test value
	bucket := rg.bucket(false)
	c, s := s3Config(t, "S", "domain", "a.example", "s3", bucket)
	made, warn, err := rg.svc.CreateConfig(ctx, aDomain, c, s)
	if err != nil {
		t.Fatal(err)
	}
	sc, ss, _ := sftpConfig(t, "F", "domain", "b.example")
	keyPEM := ss.GetPrivateKey()
	sftpMade := rg.create(bDomain, sc, ss)
	// A password configuration too (the server refuses passwords; it is
	// only stored).
	pc, _, _ := sftpConfig(t, "P", "domain", "d.example")
	pc.Enabled = false
	rg.create(r1, pc, &routerv1.ArchiveSecret{Value: &routerv1.ArchiveSecret_Password{Password: password}})
	rg.admit(recording{id: "rec-1", domain: "a.example", reseller: "r1", body: randomBytes(2000)})
	rg.admit(recording{id: "rec-2", domain: "b.example", reseller: "r1", body: randomBytes(2000)})
	rg.waitState("a.example", "rec-1", "archived")
	rg.waitState("b.example", "rec-2", "archived")
	_, _ = rg.svc.TestConfig(ctx, aDomain, made.GetId())

	var seen []string
	add := func(what string, v any) {
		b, _ := json.Marshal(v)
		seen = append(seen, what+": "+string(b))
	}
	add("create", made)
	add("warnings", warn)
	for _, p := range []auth.Principal{system, r1, aDomain, bDomain} {
		l, _ := rg.svc.ListConfigs(ctx, p, "", "")
		add("list "+p.Name, l)
	}
	g, _ := rg.svc.GetConfig(ctx, system, sftpMade.GetId())
	add("get", g)
	if !g.GetHasSecret() {
		t.Error("has_secret is false for a configuration with a secret")
	}
	// REST answers.
	srv := rg.rest()
	for _, path := range []string{"/api/v1/archive/configs", "/api/v1/archive/configs/" + made.GetId(), "/api/v1/archive/configs/" + sftpMade.GetId()} {
		_, body := srv.do(t, "GET", path, "sys", nil)
		seen = append(seen, "rest "+path+": "+body)
	}
	for _, b := range streamBytes(t, rg.d.JS, rg.d.Names.ConfigStream()) {
		seen = append(seen, "config event: "+string(b))
	}
	for _, b := range streamBytes(t, rg.d.JS, rg.d.Names.IngestStream()) {
		seen = append(seen, "ingest event: "+string(b))
	}
	vals, _ := rg.d.Redis.HGetAll(ctx, rg.d.Names.Namespace()+":{_archive}:configs").Result()
	for _, v := range vals {
		seen = append(seen, "redis: "+v)
	}
	seen = append(seen, "log: "+rg.logs.String())
	keyBody := strings.Split(strings.TrimSpace(keyPEM), "\n")[1] // a line of the key itself
	for _, secret := range []string{s3Secret, password, keyBody} {
		for _, s := range seen {
			if strings.Contains(s, secret) {
				t.Errorf("a secret appears in %.200s", s)
			}
		}
	}
	if !strings.Contains(rg.logs.String(), "router") {
		t.Error("the log is empty: the scan proves nothing")
	}
}

// TestEncryptedArchive: with a customer key, the archived object is age
// ciphertext that the tenant's identity decrypts back to the recording;
// playback refuses it with a reason.
func TestEncryptedArchive(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	bucket := rg.bucket(false)
	c, s := s3Config(t, "E", "domain", "a.example", "s3", bucket)
	c.AgeRecipient = id.Recipient().String()
	rg.create(aDomain, c, s)
	body := randomBytes(300_000)
	rg.admit(recording{id: "rec-e", domain: "a.example", reseller: "r1", body: body})
	st := rg.waitState("a.example", "rec-e", "archived")
	if !st.GetEncrypted() || !strings.HasSuffix(st.GetLocation(), ".wav.age") {
		t.Fatalf("state = %+v, want an encrypted .age object", st)
	}
	keys := rg.objects(bucket)
	if len(keys) != 1 {
		t.Fatalf("bucket holds %v", keys)
	}
	stored := rg.getObject(bucket, keys[0])
	if bytes.Contains(stored, body[:64]) {
		t.Fatal("the archive holds the recording in clear")
	}
	if sha(stored) != st.GetSha256() || int64(len(stored)) != st.GetSizeBytes() {
		t.Errorf("recorded checksum %s/%d, want that of what was stored %s/%d", st.GetSha256(), st.GetSizeBytes(), sha(stored), len(stored))
	}
	r, err := age.Decrypt(bytes.NewReader(stored), id)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(r)
	if !bytes.Equal(plain, body) {
		t.Fatal("the decrypted archive differs from the recording")
	}
	if _, err := rg.svc.OpenArchived(context.Background(), aDomain, "a.example", "rec-e", 0, -1); !errors.Is(err, apierr.ErrConflict) || !strings.Contains(err.Error(), "encrypted") {
		t.Fatalf("playback of an encrypted archive = %v, want a conflict saying why", err)
	}
}

// TestRestoreFromTheStreams: with the router's Redis state gone, a
// restart restores the configurations (secrets still opening) and the
// archive records from the streams, and archives nothing twice.
func TestRestoreFromTheStreams(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	ctx := context.Background()
	bucket := rg.bucket(false)
	D := rg.createPair(aDomain)(rg.s3Pair(t, "D", "domain", "a.example", bucket))
	sc, ss, _ := sftpConfig(t, "F", "domain", "b.example")
	F := rg.create(bDomain, sc, ss)
	gone := rg.createPair(r1)(rg.s3Pair(t, "gone", "reseller", "r1", bucket))
	if err := rg.svc.DeleteConfig(ctx, r1, gone.GetId()); err != nil {
		t.Fatal(err)
	}
	rg.admit(recording{id: "rec-1", domain: "a.example", reseller: "r1", body: randomBytes(5000)})
	rg.admit(recording{id: "rec-2", domain: "b.example", reseller: "r1", body: randomBytes(5000)})
	rg.admit(recording{id: "rec-3", domain: "c.example", reseller: "r2", body: randomBytes(5000)})
	before := map[string]*routerv1.ArchiveState{}
	for _, x := range [][2]string{{"a.example", "rec-1"}, {"b.example", "rec-2"}, {"c.example", "rec-3"}} {
		want := "archived"
		if x[1] == "rec-3" {
			want = "not_archived"
		}
		before[x[1]] = rg.waitState(x[0], x[1], want)
	}
	rg.stop()
	keys, err := testenv.Keys(ctx, rg.d.Redis, rg.d.Names.Namespace()+":*arch*")
	if err != nil || len(keys) == 0 {
		t.Fatalf("router keys = %v, %v", keys, err)
	}
	if err := rg.d.Redis.Del(ctx, keys...).Err(); err != nil {
		t.Fatal(err)
	}
	rg.start()
	testenv.WaitFor(t, "configurations restored", func() bool {
		l, _ := rg.svc.ListConfigs(ctx, system, "", "")
		return len(l) == 2
	})
	for _, id := range []string{D.GetId(), F.GetId()} {
		res, err := rg.svc.TestConfig(ctx, system, id)
		if err != nil || !res.GetOk() {
			t.Errorf("restored %s does not work: %+v, %v", id, res, err)
		}
	}
	if _, err := rg.svc.GetConfig(ctx, system, gone.GetId()); !errors.Is(err, apierr.ErrNotFound) {
		t.Errorf("the deleted configuration came back: %v", err)
	}
	for _, x := range [][2]string{{"a.example", "rec-1"}, {"b.example", "rec-2"}, {"c.example", "rec-3"}} {
		got := rg.state(x[0], x[1])
		if got.GetState() != before[x[1]].GetState() || got.GetLocation() != before[x[1]].GetLocation() || got.GetReason() != before[x[1]].GetReason() {
			t.Errorf("%s restored as %+v, was %+v", x[1], got, before[x[1]])
		}
	}
	if st := rg.status(D.GetId()); st.GetArchived() != 1 {
		t.Errorf("D's archived count after restore = %d, want 1", st.GetArchived())
	}
	// A redelivered decision after the restore archives nothing again.
	rg.publishAdmitted(recording{id: "rec-1", domain: "a.example", reseller: "r1", body: randomBytes(5000)}, "recordings/a.example/rec-1", "admitted-again-rec-1")
	rg.admit(recording{id: "rec-4", domain: "a.example", reseller: "r1", body: randomBytes(10)})
	rg.waitState("a.example", "rec-4", "archived")
	if n := len(rg.objects(bucket)); n != 2 {
		t.Errorf("bucket holds %d objects, want 2 (rec-1 once, rec-4)", n)
	}
}

func (rg *rig) s3Pair(t *testing.T, name, level, match, bucket string) (*routerv1.ArchiveConfig, *routerv1.ArchiveSecret) {
	return s3Config(t, name, level, match, "s3", bucket)
}

// TestCrashAfterUploadIsNotArchivedTwice: an upload that stored the object
// but stopped before the record (a crash, a lost PubAck) is found on the
// next attempt and recorded; other bytes at the key are never overwritten.
func TestCrashAfterUploadIsNotArchivedTwice(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	ctx := context.Background()
	bucket := rg.bucket(false)
	D := rg.createPair(aDomain)(rg.s3Pair(t, "D", "domain", "a.example", bucket))
	body := randomBytes(4000)
	key := "a.example/2026/11/02/call-rec-1/rec-1.wav"
	// The earlier attempt's object, as it would be left.
	if _, err := rg.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(body)}); err != nil {
		t.Fatal(err)
	}
	rg.admit(recording{id: "rec-1", domain: "a.example", reseller: "r1", body: body})
	st := rg.waitState("a.example", "rec-1", "archived")
	if st.GetSha256() != sha(body) {
		t.Errorf("recorded %s", st.GetSha256())
	}
	// Someone else's bytes at the next key: refused, kept, the recording waits.
	other := []byte("not the recording")
	key2 := "a.example/2026/11/02/call-rec-2/rec-2.wav"
	if _, err := rg.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key2), Body: bytes.NewReader(other)}); err != nil {
		t.Fatal(err)
	}
	rg.admit(recording{id: "rec-2", domain: "a.example", reseller: "r1", body: randomBytes(4000)})
	testenv.WaitFor(t, "rec-2 waiting on D", func() bool {
		s := rg.state("a.example", "rec-2")
		return s.GetState() == "pending" && strings.Contains(s.GetReason(), "never overwrites")
	})
	if got := rg.getObject(bucket, key2); !bytes.Equal(got, other) {
		t.Fatal("the router overwrote an object it did not write")
	}
	if st := rg.status(D.GetId()); st.GetState() != "error" || st.GetWaiting() != 1 {
		t.Errorf("D status = %+v, want error with one waiting", st)
	}
	// The same decision delivered twice archives once.
	rg.publishAdmitted(recording{id: "rec-1", domain: "a.example", reseller: "r1", body: body}, "recordings/a.example/rec-1", "admitted-dup-rec-1")
	rg.admit(recording{id: "rec-3", domain: "a.example", reseller: "r1", body: randomBytes(10)})
	rg.waitState("a.example", "rec-3", "archived")
	if c := rg.archivedEvents(); c["rec-1"] != 1 {
		t.Errorf("rec-1 has %d archive records", c["rec-1"])
	}
}

// TestChangedConfigTakesTheWaitingWork: work waiting for a failing domain
// configuration flows to the best match once that configuration is
// disabled; re-enabling does not send the archived again.
func TestChangedConfigTakesTheWaitingWork(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	ctx := context.Background()
	rBucket := rg.bucket(false)
	R1 := rg.createPair(r1)(rg.s3Pair(t, "R1", "reseller", "r1", rBucket))
	dc, ds := rg.s3Pair(t, "D1", "domain", "a.example", bucketName(t)) // missing bucket
	D1 := rg.create(aDomain, dc, ds)
	for i := range 3 {
		rg.admit(recording{id: fmt.Sprintf("rec-%d", i), domain: "a.example", reseller: "r1", body: randomBytes(1000 + i)})
	}
	testenv.WaitFor(t, "three waiting on D1", func() bool { return rg.status(D1.GetId()).GetWaiting() == 3 })
	dc.Id, dc.Enabled = D1.GetId(), false
	if _, _, err := rg.svc.UpdateConfig(ctx, aDomain, dc, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if st := rg.waitState("a.example", fmt.Sprintf("rec-%d", i), "archived"); st.GetConfigId() != R1.GetId() {
			t.Errorf("rec-%d went to %s, want R1", i, st.GetConfigId())
		}
	}
	testenv.WaitFor(t, "nothing waits on D1", func() bool { return rg.status(D1.GetId()).GetWaiting() == 0 })
	if st := rg.status(D1.GetId()); st.GetState() != "disabled" {
		t.Errorf("D1 = %+v, want disabled", st)
	}
	if n := len(rg.objects(rBucket)); n != 3 {
		t.Errorf("R1 holds %d, want 3", n)
	}
}

// TestPoisonDecisionsAreDeadLettered: an admission naming no domain or no
// media goes to the dead-letter stream with the reason, and work after
// it goes on.
func TestPoisonDecisionsAreDeadLettered(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	rg.createPair(system)(rg.s3Pair(t, "S", "system", "", rg.bucket(false)))
	ctx := context.Background()
	if _, err := rg.d.JS.Publish(ctx, rg.d.Names.AdmittedSubject(), []byte("not protobuf \xff\xfe")); err != nil {
		t.Fatal(err)
	}
	rg.publishAdmitted(recording{id: "rec-x", domain: "Not A Domain", reseller: "r1", body: []byte("x")}, "k", "bad-domain")
	rg.admit(recording{id: "rec-ok", domain: "a.example", reseller: "r1", body: randomBytes(100)})
	rg.waitState("a.example", "rec-ok", "archived")
	var dls []bus.DeadLetter
	testenv.WaitFor(t, "two dead letters", func() bool {
		dls, _ = bus.ListDeadLetters(ctx, rg.d.JS, rg.d.Names, 1, 10)
		return len(dls) == 2
	})
	reasons := dls[0].Reason + " | " + dls[1].Reason
	if !strings.Contains(reasons, "decode") || !strings.Contains(reasons, "domain") {
		t.Errorf("dead-letter reasons %q do not say why", reasons)
	}
}

// TestWORM: a WORM configuration on a bucket with Object Lock locks each
// object until its delete-by date; one without Object Lock is refused.
func TestWORM(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	ctx := context.Background()
	plain := rg.bucket(false)
	c, s := rg.s3Pair(t, "W", "domain", "a.example", plain)
	c.WormMode = "compliance"
	_, _, err := rg.svc.CreateConfig(ctx, aDomain, c, s)
	var v *apierr.ValidationError
	if !errors.As(err, &v) || v.Violations[0].Field != "config.worm_mode" || !strings.Contains(err.Error(), "Object Lock") {
		t.Fatalf("WORM on a bucket without Object Lock = %v, want config.worm_mode refused", err)
	}
	locked := rg.bucket(true)
	c, s = rg.s3Pair(t, "W", "domain", "a.example", locked)
	c.WormMode = "governance"
	rg.create(aDomain, c, s)
	rg.admit(recording{id: "rec-w", domain: "a.example", reseller: "r1", body: randomBytes(2000)})
	st := rg.waitState("a.example", "rec-w", "archived")
	keys := rg.objects(locked)
	if len(keys) != 1 {
		t.Fatalf("locked bucket holds %v", keys)
	}
	ret, err := rg.s3.GetObjectRetention(ctx, &s3.GetObjectRetentionInput{Bucket: aws.String(locked), Key: aws.String(keys[0])})
	if err != nil {
		t.Fatal(err)
	}
	until := aws.ToTime(ret.Retention.RetainUntilDate)
	if string(ret.Retention.Mode) != "GOVERNANCE" || until.Before(time.Now().Add(6*365*24*time.Hour)) {
		t.Errorf("retention = %s until %s, want GOVERNANCE for the default years", ret.Retention.Mode, until)
	}
	if _, err := rg.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(locked), Key: aws.String(keys[0])}); err == nil {
		t.Error("a WORM object was deleted without the bypass")
	}
	_ = st
}

// restServer serves the router's REST routes with fixed tokens.
type restServer struct {
	srv *httptest.Server
}

type tokenTable map[string]auth.Principal

func (tt tokenTable) Authenticate(_ context.Context, token string) (auth.Principal, error) {
	if p, ok := tt[token]; ok {
		return p, nil
	}
	return auth.Principal{}, apierr.ErrUnauthenticated
}

func (rg *rig) rest() *restServer {
	mux := http.NewServeMux()
	rg.svc.RegisterHTTP(mux, tokenTable{"sys": system, "r1": r1, "r2": r2, "a": aDomain, "c": cDomain})
	srv := httptest.NewServer(mux)
	rg.t.Cleanup(srv.Close)
	return &restServer{srv: srv}
}

func (s *restServer) do(t *testing.T, method, path, token string, body any) (*http.Response, string) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.srv.URL+path, r)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestREST drives the configuration routes: create, FTP refused as
// problem+json naming the field, another tenant's read is 404, update,
// test, status, delete.
func TestREST(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	srv := rg.rest()
	bucket := rg.bucket(false)
	cfg := map[string]any{
		"name": "mine", "level": "domain", "match": "a.example", "enabled": true, "storage_type": "wasabi", "send_recordings": true,
		"bucket": bucket, "endpoint": testenv.Env(t, "CALLVAULT_TEST_S3_ENDPOINT"), "access_key_id": testenv.Env(t, "CALLVAULT_TEST_S3_ACCESS_KEY"),
	}
	resp, body := srv.do(t, "POST", "/api/v1/archive/configs", "a", map[string]any{"config": cfg, "secret": map[string]any{"secret_access_key": testenv.Env(t, "CALLVAULT_TEST_S3_SECRET_KEY")}})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create = %d %s", resp.StatusCode, body)
	}
	var out struct {
		Config struct {
			ID string `json:"id"`
		} `json:"config"`
		Warnings []string `json:"warnings"`
	}
	_ = json.Unmarshal([]byte(body), &out)
	id := out.Config.ID
	if id == "" || len(out.Warnings) == 0 || !strings.Contains(out.Warnings[0], "90 days") {
		t.Fatalf("create answered %s", body)
	}
	ftp := map[string]any{"name": "old", "level": "domain", "match": "a.example", "storage_type": "ftp", "send_recordings": true, "host": "ftp.example"}
	resp, body = srv.do(t, "POST", "/api/v1/archive/configs", "a", map[string]any{"config": ftp})
	if resp.StatusCode != http.StatusBadRequest || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") ||
		!strings.Contains(body, "config.storage_type") || !strings.Contains(body, "SFTP") {
		t.Fatalf("FTP over REST = %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	resp, body = srv.do(t, "POST", "/api/v1/archive/configs", "a", map[string]any{"config": cfg, "extra": 1})
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "extra") {
		t.Errorf("an unknown field = %d %s", resp.StatusCode, body)
	}
	for _, tok := range []string{"r2", "c"} {
		if resp, _ := srv.do(t, "GET", "/api/v1/archive/configs/"+id, tok, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s reading a.example's configuration = %d, want 404", tok, resp.StatusCode)
		}
		if resp, _ := srv.do(t, "DELETE", "/api/v1/archive/configs/"+id, tok, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s deleting a.example's configuration = %d, want 404", tok, resp.StatusCode)
		}
	}
	if resp, _ := srv.do(t, "GET", "/api/v1/archive/configs", "nobody", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no token = %d", resp.StatusCode)
	}
	cfg["name"] = "renamed"
	resp, body = srv.do(t, "PUT", "/api/v1/archive/configs/"+id, "a", map[string]any{"config": cfg})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "renamed") || !strings.Contains(body, `"has_secret":true`) {
		t.Fatalf("update = %d %s", resp.StatusCode, body)
	}
	resp, body = srv.do(t, "POST", "/api/v1/archive/configs/"+id+"/test", "a", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"ok":true`) {
		t.Fatalf("test = %d %s", resp.StatusCode, body)
	}
	resp, body = srv.do(t, "GET", "/api/v1/archive/configs/"+id+"/status", "a", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"state":"idle"`) {
		t.Fatalf("status = %d %s", resp.StatusCode, body)
	}
	if resp, body := srv.do(t, "DELETE", "/api/v1/archive/configs/"+id, "a", nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete = %d %s", resp.StatusCode, body)
	}
	if resp, _ := srv.do(t, "GET", "/api/v1/archive/configs/"+id, "a", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("read after delete = %d", resp.StatusCode)
	}
}

// TestUnusableParkedJobIsDeadLettered: a parked job that can never
// succeed (it does not decode) reaches the dead-letter stream with the
// reason and its admission's sequence, and leaves the list.
func TestUnusableParkedJobIsDeadLettered(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	ctx := context.Background()
	g := func(name string) string { return rg.d.Names.Namespace() + ":{_archive}:" + name }
	m := "a.example/rec-bad"
	pipe := rg.d.Redis.TxPipeline()
	pipe.HSet(ctx, g("jobs"), m, "\xff\xfe not an envelope")
	pipe.HSet(ctx, g("jobinfo"), m, "41\n1")
	pipe.ZAdd(ctx, g("parked"), redis.Z{Score: float64(time.Now().UnixMilli()), Member: m})
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	var dls []bus.DeadLetter
	testenv.WaitFor(t, "the parked job dead-lettered", func() bool {
		dls, _ = bus.ListDeadLetters(ctx, rg.d.JS, rg.d.Names, 1, 10)
		return len(dls) == 1
	})
	if !strings.Contains(dls[0].Reason, "does not decode") || dls[0].SourceSequence != "41" || dls[0].Consumer != "router-archive" {
		t.Errorf("dead letter = %+v", dls[0])
	}
	testenv.WaitFor(t, "the job gone from the list", func() bool {
		n, _ := rg.d.Redis.ZCard(ctx, g("parked")).Result()
		k, _ := rg.d.Redis.HLen(ctx, g("jobs")).Result()
		return n == 0 && k == 0
	})
}

// TestArchiveStateHidesOtherTenantsConfigurations: a domain admin whose
// recording waits for its reseller's failing configuration sees that it
// waits, not that configuration's name or error; the reseller sees both.
func TestArchiveStateHidesOtherTenantsConfigurations(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	ctx := context.Background()
	c, s := rg.s3Pair(t, "R1 private archive", "reseller", "r1", "missing-"+bucketName(t))
	R1 := rg.create(r1, c, s)
	rg.admit(recording{id: "rec-1", domain: "a.example", reseller: "r1", body: randomBytes(100)})
	testenv.WaitFor(t, "rec-1 waiting", func() bool { return rg.status(R1.GetId()).GetWaiting() == 1 })
	dom, err := rg.svc.ArchiveStates(ctx, aDomain, "a.example", []string{"rec-1"})
	if err != nil {
		t.Fatal(err)
	}
	if dom[0].GetState() != "pending" || dom[0].GetConfigName() != "" || strings.Contains(dom[0].GetReason(), "missing-") {
		t.Errorf("the domain admin sees %+v", dom[0])
	}
	res, err := rg.svc.ArchiveStates(ctx, r1, "a.example", []string{"rec-1"})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].GetConfigName() != "R1 private archive" || !strings.Contains(res[0].GetReason(), "bucket") {
		t.Errorf("the reseller sees %+v", res[0])
	}
}

// TestScopeIndexFollowsChanges: a decision reads only the configurations
// of its domain, its reseller and the system (the scope index); moving a
// configuration to another domain, or deleting it, moves it in the index.
func TestScopeIndexFollowsChanges(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	ctx := context.Background()
	bucket := rg.bucket(false)
	c, s := rg.s3Pair(t, "D", "domain", "a.example", bucket)
	D := rg.create(r1, c, s)
	scopes := func() map[string]string {
		m, err := rg.d.Redis.HGetAll(ctx, rg.d.Names.Namespace()+":{_archive}:scopes").Result()
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if got := scopes(); len(got) != 1 || got["domain:a.example"] != D.GetId() {
		t.Fatalf("scope index = %v", got)
	}
	c.Id, c.Match = D.GetId(), "b.example"
	if _, _, err := rg.svc.UpdateConfig(ctx, r1, c, nil); err != nil {
		t.Fatal(err)
	}
	if got := scopes(); len(got) != 1 || got["domain:b.example"] != D.GetId() {
		t.Fatalf("after the move the scope index = %v", got)
	}
	rg.admit(recording{id: "rec-a", domain: "a.example", reseller: "r1", body: randomBytes(100)})
	rg.admit(recording{id: "rec-b", domain: "b.example", reseller: "r1", body: randomBytes(100)})
	if st := rg.waitState("a.example", "rec-a", "not_archived"); st.GetConfigId() != "" {
		t.Errorf("rec-a = %+v", st)
	}
	if st := rg.waitState("b.example", "rec-b", "archived"); st.GetConfigId() != D.GetId() {
		t.Errorf("rec-b went to %s", st.GetConfigId())
	}
	if err := rg.svc.DeleteConfig(ctx, r1, D.GetId()); err != nil {
		t.Fatal(err)
	}
	if got := scopes(); len(got) != 0 {
		t.Fatalf("after the deletion the scope index = %v", got)
	}
}
