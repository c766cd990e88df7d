package e2e

import (
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A second `callvault serve` on a data directory that one already serves
// refuses to start, naming the directory and the pid holding it; after the
// first stops, a new one starts on the same directory.
func TestSecondServeOnOneDataDirRefused(t *testing.T) {
	t.Parallel()
	first := newServer(t)
	first.start()

	httpAddr := freePort(t)
	second := exec.Command(binary(t), "serve")
	second.Env = append(append([]string{}, first.env...),
		"CALLVAULT_HTTP_ADDR="+httpAddr, "CALLVAULT_GRPC_ADDR="+freePort(t), "CALLVAULT_NATS_LISTEN="+freePort(t))
	out := &syncBuffer{}
	second.Stdout, second.Stderr = out, out
	if err := second.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- second.Wait() }()
	// It must exit; if it serves instead, that is the failure.
	var err error
	for waiting := true; waiting; {
		select {
		case err = <-exited:
			waiting = false
		default:
			if resp, gerr := http.Get("http://" + httpAddr + "/readyz"); gerr == nil {
				resp.Body.Close()
				_ = second.Process.Kill()
				<-exited
				t.Fatalf("a second serve on %s started:\n%s", first.dataDir, out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if err == nil {
		t.Fatalf("the second serve exited cleanly:\n%s", out)
	}
	abs, _ := filepath.Abs(first.dataDir)
	for _, want := range []string{abs, "process " + strconv.Itoa(first.cmd.Process.Pid)} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("refusal does not name %q:\n%s", want, out)
		}
	}

	first.stop()
	first.start()
}
