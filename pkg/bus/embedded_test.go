package bus_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/callvault/callvault/pkg/bus"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// The embedded server refuses a client without the credentials it wrote
// into the data directory (mode 0600), and accepts one that presents them;
// a restart reads the same credentials back.
func TestEmbeddedRequiresCredentials(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "nats-credentials")
	creds, err := bus.LoadOrCreateCredentials(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file mode: %v, %v", fi.Mode(), err)
	}
	again, err := bus.LoadOrCreateCredentials(path)
	if err != nil || again != creds {
		t.Fatalf("credentials read back differ: %v", err)
	}
	emb, err := bus.StartEmbedded(freeAddr(t), filepath.Join(dir, "js"), creds)
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Shutdown()
	if strings.Contains(emb.ClientURL(), creds.Password) {
		t.Fatal("the client URL carries the password")
	}

	nc, err := nats.Connect(emb.ClientURL(), nats.NoReconnect())
	if err == nil {
		nc.Close()
		t.Fatal("an unauthenticated client was accepted")
	}
	if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("unauthenticated connect: got %v, want an authorization error", err)
	}
	nc, err = nats.Connect(emb.ClientURL(), nats.NoReconnect(), nats.UserInfo(creds.User, "wrong"))
	if err == nil {
		nc.Close()
		t.Fatal("a client with a wrong password was accepted")
	}

	nc, err = nats.Connect(emb.ClientURL(), append(creds.Options(), nats.NoReconnect())...)
	if err != nil {
		t.Fatalf("connect with the credentials: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	names, _ := bus.NewNames("emb")
	if err := bus.EnsureStreams(ctx, js, names, bus.StreamOptions{Replicas: 1, DuplicateWindow: time.Minute}); err != nil {
		t.Fatalf("streams with the credentials: %v", err)
	}
}

// The server refuses a purge and a message deletion on every callvault
// stream; the message stays.
func TestStreamsDenyPurgeAndDelete(t *testing.T) {
	t.Parallel()
	js, names := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	subjects := map[string]string{
		names.IngestStream():     names.RecordingSubject(),
		names.ConfigStream():     names.TokenSubject(),
		names.DeadLetterStream(): names.DeadLetterSubject("test"),
	}
	for stream, subject := range subjects {
		ack, err := js.Publish(ctx, subject, []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		st, err := js.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Purge(ctx); err == nil {
			t.Errorf("%s: purge accepted", stream)
		}
		if err := st.DeleteMsg(ctx, ack.Sequence); err == nil {
			t.Errorf("%s: message delete accepted", stream)
		}
		if err := st.SecureDeleteMsg(ctx, ack.Sequence); err == nil {
			t.Errorf("%s: secure message delete accepted", stream)
		}
		if _, err := st.GetMsg(ctx, ack.Sequence); err != nil {
			t.Errorf("%s: message %d gone: %v", stream, ack.Sequence, err)
		}
	}
}
