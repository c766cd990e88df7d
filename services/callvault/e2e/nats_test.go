package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The embedded NATS of `callvault serve` refuses a client without the
// credentials from the data directory, so no local process can publish an
// event; with them, a purge or a message delete on the ingest stream is
// still refused by the server.
func TestEmbeddedNATSRequiresCredentials(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	s.start()
	if nc, err := nats.Connect("nats://"+s.nats, nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("an anonymous client was accepted by the embedded NATS")
	}
	path := filepath.Join(s.dataDir, "nats-credentials")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var user, pass string
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "user="); ok {
			user = v
		}
		if v, ok := strings.CutPrefix(line, "password="); ok {
			pass = v
		}
	}
	if strings.Contains(strings.Join(s.banner(), "\n"), pass) || !strings.Contains(strings.Join(s.banner(), "\n"), path) {
		t.Errorf("the banner should name %s and not show the password:\n%s", path, strings.Join(s.banner(), "\n"))
	}
	nc, err := nats.Connect("nats://"+s.nats, nats.NoReconnect(), nats.UserInfo(user, pass))
	if err != nil {
		t.Fatalf("connect with the credentials file: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "CV_INGEST")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(ctx); err == nil {
		t.Error("a purge of CV_INGEST was accepted")
	}
	ack, err := js.Publish(ctx, "cv.ingest.usage", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(ctx, ack.Sequence); err == nil {
		t.Error("a message delete on CV_INGEST was accepted")
	}
}
