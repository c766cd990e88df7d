package callvault_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/testenv"
	"github.com/callvault/callvault/services/ingest"
	"github.com/callvault/callvault/services/policy"
)

// lostAcks lets the real server store the first n publishes and then
// reports a timeout for each, as when a PubAck is lost on the way back.
type lostAcks struct {
	jetstream.JetStream
	n atomic.Int32
}

func (j *lostAcks) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if j.n.Add(-1) >= 0 {
		if _, err := j.JetStream.PublishMsg(ctx, m, opts...); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("injected lost ack: %w", context.DeadlineExceeded)
	}
	return j.JetStream.PublishMsg(ctx, m, opts...)
}

// A recording whose every PubAck was lost is answered 503 but not lost:
// its media stays in the store, admission admits the event the server did
// store, the PBX's retry is answered as a duplicate, the media reads back
// whole, and the orphan sweep leaves it alone however late it runs.
func TestLostPubAckRecordingIsAdmittedAndKept(t *testing.T) {
	t.Parallel()
	d := testenv.Deps(t, nil) // the S3 store
	ctx := context.Background()
	pub := ingest.Publish{Attempts: 3, Backoff: 10 * time.Millisecond, Timeout: 5 * time.Second, Budget: 20 * time.Second}
	js := &lostAcks{JetStream: d.JS}
	js.n.Store(int32(pub.Attempts))
	ingD := *d
	ingD.JS, ingD.Registry = js, prometheus.NewRegistry()
	pol, err := policy.New(d, policy.Settings{Orphans: policy.OrphanSweep{Grace: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	ingest.New(&ingD, ingest.Limits{Publish: pub}, pol).RegisterHTTP(mux, d.Tokens)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- pol.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })

	media := []byte("RIFF-a-recording-whose-acks-were-all-lost")
	upload := func() (int, map[string]any) {
		t.Helper()
		var body bytes.Buffer
		w := multipart.NewWriter(&body)
		md, _ := json.Marshal(map[string]any{
			"id": "rec-1", "call_id": "call-1", "reseller": "r1", "domain": "a.example", "user": "101", "mode": "automatic",
			"started_at": time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), "duration_s": 10, "content_type": "audio/wav",
		})
		_ = w.WriteField("metadata", string(md))
		part, _ := w.CreateFormFile("media", "rec-1.wav")
		_, _ = part.Write(media)
		_ = w.Close()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/api/v1/ingest/recordings", &body)
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

	if code, res := upload(); code != http.StatusServiceUnavailable {
		t.Fatalf("upload with every PubAck lost: %d %v, want 503", code, res)
	}
	cat := catalog.New(d.Redis, d.Names.Namespace())
	var rec catalog.Record
	testenv.WaitFor(t, "rec-1 admitted", func() bool {
		rec, err = cat.Record(ctx, "a.example", "rec-1")
		return err == nil && rec.State == catalog.StateAdmitted
	})
	sum := sha256.Sum256(media)
	if code, res := upload(); code != http.StatusOK || res["duplicate"] != true || res["sha256"] != hex.EncodeToString(sum[:]) {
		t.Fatalf("the PBX's retry: %d %v, want 200 duplicate of the stored recording", code, res)
	}
	readBack := func() {
		t.Helper()
		rc, err := d.CDS.Open(ctx, rec.ObjectKey, 0, -1)
		if err != nil {
			t.Fatalf("the admitted recording's media: %v", err)
		}
		defer rc.Close()
		if got, _ := io.ReadAll(rc); !bytes.Equal(got, media) {
			t.Fatalf("the admitted recording's media reads %q", got)
		}
	}
	readBack()
	rep, err := pol.SweepOrphans(ctx, time.Now().Add(48*time.Hour))
	if err != nil || rep.Removed != 0 || rep.Referenced != 1 {
		t.Fatalf("sweep: %+v, %v; want the one object kept as referenced", rep, err)
	}
	readBack()
	var objects int
	if err := d.CDS.(cds.Lister).List(ctx, "", func(cds.Object) error { objects++; return nil }); err != nil || objects != 1 {
		t.Fatalf("%d objects (%v), want the one the event points to", objects, err)
	}
}
