// Package e2e drives the callvault binary as a user would: a subprocess,
// reached over HTTP and gRPC.
package e2e

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds cmd/callvault once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "callvault-e2e-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "callvault")
		cmd := exec.Command("go", "build", "-o", binPath, "../cmd/callvault")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// server is one running callvault process.
type server struct {
	t       *testing.T
	env     []string
	dataDir string
	http    string
	grpc    string
	token   string
	nats    string
	cmd     *exec.Cmd
	stdout  *syncBuffer
	stderr  *syncBuffer
	exited  chan error
}

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

// newServer prepares a server with its own data dir and ports; extra env
// entries override the defaults.
func newServer(t *testing.T, extra ...string) *server {
	t.Helper()
	s := &server{t: t, dataDir: t.TempDir(), http: freePort(t), grpc: freePort(t), nats: freePort(t), token: "e2e-bootstrap-token-" + randHex(t, 8)}
	s.env = append(os.Environ(),
		"CALLVAULT_DATA_DIR="+s.dataDir,
		"CALLVAULT_HTTP_ADDR="+s.http,
		"CALLVAULT_GRPC_ADDR="+s.grpc,
		"CALLVAULT_NATS_LISTEN="+s.nats,
		"CALLVAULT_BOOTSTRAP_TOKEN="+s.token,
		"REDIS_URL=embedded",
		"CALLVAULT_LOG_LEVEL=info",
	)
	s.env = append(s.env, extra...)
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("server stderr:\n%s", s.stderr)
		}
	})
	return s
}

// start runs the binary and waits for /readyz.
func (s *server) start() {
	t := s.t
	t.Helper()
	s.stdout, s.stderr = &syncBuffer{}, &syncBuffer{}
	s.cmd = exec.Command(binary(t), "serve")
	s.cmd.Env = s.env
	s.cmd.Stdout, s.cmd.Stderr = s.stdout, s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.exited = make(chan error, 1)
	go func() { s.exited <- s.cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + s.http + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-s.exited:
			t.Fatalf("callvault exited before it was ready: %v\n%s", err, s.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("callvault not ready within 60s:\n%s", s.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop sends SIGINT and waits for a clean exit.
func (s *server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-s.exited:
		if err != nil {
			s.t.Errorf("callvault did not exit cleanly on SIGINT: %v", err)
		}
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		s.t.Errorf("callvault did not stop within 30s of SIGINT")
	}
	s.cmd = nil
}

func randHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func randomMedia(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// meta is recording metadata as a client sends it.
func meta(id, domain, user string) map[string]any {
	return map[string]any{
		"id": id, "call_id": "call-" + id, "reseller": "r1", "domain": domain, "user": user, "mode": "automatic",
		"started_at": "2026-11-01T10:00:00Z", "duration_s": 42, "content_type": "audio/wav",
	}
}

// upload posts a multipart recording and returns the status and JSON body.
func (s *server) upload(token string, metadata any, media []byte) (int, map[string]any) {
	s.t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mj, err := json.Marshal(metadata)
	if err != nil {
		s.t.Fatal(err)
	}
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="metadata"`)
	h.Set("Content-Type", "application/json")
	pw, _ := mw.CreatePart(h)
	_, _ = pw.Write(mj)
	fw, _ := mw.CreateFormFile("media", "r.wav")
	_, _ = fw.Write(media)
	_ = mw.Close()
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.http+"/api/v1/ingest/recordings", &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return s.do(req)
}

func (s *server) get(token, path string, hdr ...string) (*http.Response, []byte) {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+s.http+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return resp, b
}

func (s *server) do(req *http.Request) (int, map[string]any) {
	s.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			s.t.Fatalf("response %d is not JSON: %s", resp.StatusCode, raw)
		}
	}
	return resp.StatusCode, out
}

// listIDs lists recordings and returns their ids, waiting until want are
// visible (admission is asynchronous).
func (s *server) listIDs(token, query string, want int) []string {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, body := s.get(token, "/api/v1/pbx/recordings?"+query)
		if resp.StatusCode != http.StatusOK {
			s.t.Fatalf("list %s: %d %s", query, resp.StatusCode, body)
		}
		var out struct {
			Recordings []struct {
				ID string `json:"id"`
			} `json:"recordings"`
		}
		if err := json.Unmarshal(body, &out); err != nil {
			s.t.Fatal(err)
		}
		ids := make([]string, 0, len(out.Recordings))
		for _, r := range out.Recordings {
			ids = append(ids, r.ID)
		}
		if len(ids) >= want || time.Now().After(deadline) {
			return ids
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// banner returns the start banner lines.
func (s *server) banner() []string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s.stdout.String()))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}
