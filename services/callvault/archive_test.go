package callvault_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/testenv"
	"github.com/callvault/callvault/services/router"
)

// TestRecordingPlaysFromTheArchive drives the whole path: a recording
// uploaded through ingest is admitted by policy, archived by the router
// to the tenant's bucket, listed with its archive state, and, once its
// central copy is removed, still plays (and seeks) from the archive.
func TestRecordingPlaysFromTheArchive(t *testing.T) {
	t.Parallel()
	key, err := router.NewSecretKeySpec("e2e")
	if err != nil {
		t.Fatal(err)
	}
	s := newStack(t, withRouter{router.Settings{SecretKey: key, ParkedRetry: 200 * time.Millisecond,
		RetryBackOff: []time.Duration{100 * time.Millisecond}}})
	sys := testenv.BootstrapToken
	s.provision(sys, "a.example", "r1")
	dom, _ := s.issue(sys, map[string]any{"level": "domain", "reseller": "r1", "domain": "a.example", "name": "a-admin"})
	bucket := "e2e-" + strings.ToLower(s.d.Names.Namespace())
	store, err := cds.NewS3(cds.S3Config{Endpoint: testenv.Env(t, "CALLVAULT_TEST_S3_ENDPOINT"), Region: "us-east-1", Bucket: bucket,
		AccessKey: testenv.Env(t, "CALLVAULT_TEST_S3_ACCESS_KEY"), SecretKey: testenv.Env(t, "CALLVAULT_TEST_S3_SECRET_KEY"), PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.EnsureBucket(context.Background()); err != nil {
		t.Fatal(err)
	}
	code, body := s.rest(dom, http.MethodPost, "/api/v1/archive/configs", map[string]any{
		"config": map[string]any{"name": "our bucket", "level": "domain", "match": "a.example", "enabled": true, "storage_type": "s3",
			"send_recordings": true, "bucket": bucket, "endpoint": testenv.Env(t, "CALLVAULT_TEST_S3_ENDPOINT"),
			"access_key_id": testenv.Env(t, "CALLVAULT_TEST_S3_ACCESS_KEY")},
		"secret": map[string]any{"secret_access_key": testenv.Env(t, "CALLVAULT_TEST_S3_SECRET_KEY")},
	})
	if code != http.StatusCreated {
		t.Fatalf("create config: %d %s", code, body)
	}
	if code, body := s.uploadHTTP(dom, upload{id: "rec-arch", reseller: "r1", domain: "a.example", user: "101"}); code != http.StatusCreated && code != http.StatusOK {
		t.Fatalf("upload: %d %s", code, body)
	}
	var rec struct {
		Archive struct {
			State, ConfigName, Location string
		} `json:"archive"`
	}
	testenv.WaitFor(t, "rec-arch archived", func() bool {
		code, body := s.rest(dom, http.MethodGet, "/api/v1/pbx/recordings/rec-arch", nil)
		if code != http.StatusOK {
			return false
		}
		var raw struct {
			Archive map[string]any `json:"archive"`
		}
		_ = json.Unmarshal(body, &raw)
		rec.Archive.State, _ = raw.Archive["state"].(string)
		rec.Archive.ConfigName, _ = raw.Archive["config_name"].(string)
		rec.Archive.Location, _ = raw.Archive["location"].(string)
		return rec.Archive.State == "archived"
	})
	if rec.Archive.ConfigName != "our bucket" || !strings.HasPrefix(rec.Archive.Location, "s3://"+bucket+"/") {
		t.Fatalf("archive state = %+v", rec.Archive)
	}
	code, body = s.rest(dom, http.MethodGet, "/api/v1/pbx/recordings?domain=a.example", nil)
	if code != http.StatusOK || !strings.Contains(string(body), `"state":"archived"`) {
		t.Fatalf("the list does not show the archive state: %d %s", code, body)
	}
	want := "RIFF-media-of-rec-arch"
	// The central copy goes (as pressure culling of a verified archive
	// would remove it); playback continues from the archive.
	if err := removeCentral(s, "a.example", "rec-arch"); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, s.url+"/api/v1/pbx/recordings/rec-arch/media", nil)
	req.Header.Set("Authorization", "Bearer "+dom)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(got) != want {
		t.Fatalf("media after the central copy went = %d %q, want %q", resp.StatusCode, got, want)
	}
	req.Header.Set("Range", "bytes=5-9")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || string(got) != want[5:10] || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 5-9/%d", len(want)) {
		t.Fatalf("a seek in the archive = %d %q %s", resp.StatusCode, got, resp.Header.Get("Content-Range"))
	}
	// Another domain's token still cannot reach it.
	s.provision(sys, "z.example", "r2")
	other, _ := s.issue(sys, map[string]any{"level": "domain", "reseller": "r2", "domain": "z.example", "name": "z-admin"})
	if code, _ := s.rest(other, http.MethodGet, "/api/v1/pbx/recordings/rec-arch/media", nil); code != http.StatusNotFound {
		t.Fatalf("another domain's token reading the archived media = %d, want 404", code)
	}
}

// removeCentral deletes a recording's CDS object.
func removeCentral(s *stack, domain, id string) error {
	rec, err := catalog.NewReader(s.d.Redis, s.d.Names.Namespace()).GetRecording(context.Background(), domain, id)
	if err != nil {
		return err
	}
	return s.d.CDS.Delete(context.Background(), rec.ObjectKey)
}
