package callvault_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/callvault/callvault/services/callvault"
)

// A second holder of a data directory is refused with a message naming the
// directory and the holder's pid; once the first lets go, a new one starts.
func TestDataDirLockIsExclusive(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	first, err := callvault.LockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = callvault.LockDataDir(dir)
	if !errors.Is(err, callvault.ErrDataDirInUse) {
		t.Fatalf("second lock: got %v, want ErrDataDirInUse", err)
	}
	abs, _ := filepath.Abs(dir)
	for _, want := range []string{abs, "process " + strconv.Itoa(os.Getpid())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not name %q", err, want)
		}
	}
	first.Unlock()
	again, err := callvault.LockDataDir(dir)
	if err != nil {
		t.Fatalf("lock after the first let go: %v", err)
	}
	again.Unlock()
}
