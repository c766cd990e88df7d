// The contract tests live in the external test package: testenv imports cds,
// so an internal test importing testenv would be an import cycle.
package cds_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/callvault/callvault/pkg/cds"
	"github.com/callvault/callvault/pkg/testenv"
)

// partSize mirrors the S3 backend's multipart part size (unexported there).
const partSize = 8 << 20

// backends lists every Store implementation the contract runs against.
var backends = []struct {
	name string
	new  func(t *testing.T) cds.Store
}{
	{"fs", func(t *testing.T) cds.Store {
		t.Helper()
		s, err := cds.NewFS(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}},
	{"s3", func(t *testing.T) cds.Store {
		t.Helper()
		return testenv.S3(t, testenv.Namespace(t))
	}},
}

// TestStoreContract runs the Store contract against both backends. Each
// backend gets one store; every subtest uses keys of its own.
func TestStoreContract(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			s := b.new(t)
			t.Run("PutOpenStat", func(t *testing.T) { t.Parallel(); testPutOpenStat(t, s) })
			t.Run("Sizes", func(t *testing.T) { t.Parallel(); testSizes(t, s) })
			t.Run("Ranges", func(t *testing.T) { t.Parallel(); testRanges(t, s) })
			t.Run("Overwrite", func(t *testing.T) { t.Parallel(); testOverwrite(t, s) })
			t.Run("ConcurrentPutSameKey", func(t *testing.T) { t.Parallel(); testConcurrentPutSameKey(t, s) })
			t.Run("Delete", func(t *testing.T) { t.Parallel(); testDelete(t, s) })
			t.Run("MissingKey", func(t *testing.T) { t.Parallel(); testMissingKey(t, s) })
			t.Run("FailedPutLeavesNothing", func(t *testing.T) { t.Parallel(); testFailedPut(t, s) })
			t.Run("UnsafeKeys", func(t *testing.T) { t.Parallel(); testUnsafeKeys(t, s) })
			t.Run("RangeEdges", func(t *testing.T) { t.Parallel(); testRangeEdges(t, s) })
			t.Run("PrefixIsNotAnObject", func(t *testing.T) { t.Parallel(); testPrefixIsNotAnObject(t, s) })
			t.Run("List", func(t *testing.T) { t.Parallel(); testList(t, s) })
		})
	}
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// onlyReader hides every method but Read (Seek, WriterTo, Len...), so the
// store sees a stream of unknown length.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// failingReader returns the bytes of data, then err instead of io.EOF.
type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

var errBroken = errors.New("reader broke midway")

func readAll(t *testing.T, s cds.Store, key string, offset, length int64) []byte {
	t.Helper()
	rc, err := s.Open(ctxT(t), key, offset, length)
	if err != nil {
		t.Fatalf("Open(%q, %d, %d): %v", key, offset, length, err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return got
}

func put(t *testing.T, s cds.Store, key string, data []byte) {
	t.Helper()
	n, err := s.Put(ctxT(t), key, bytes.NewReader(data), "audio/ogg")
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	if n != int64(len(data)) {
		t.Fatalf("Put(%q) = %d bytes, want %d", key, n, len(data))
	}
}

func assertNotFound(t *testing.T, s cds.Store, key string) {
	t.Helper()
	ctx := ctxT(t)
	if obj, err := s.Stat(ctx, key); !errors.Is(err, cds.ErrNotFound) {
		t.Errorf("Stat(%q) = %+v, %v; want an error wrapping ErrNotFound", key, obj, err)
	}
	rc, err := s.Open(ctx, key, 0, -1)
	if err == nil {
		rc.Close()
	}
	if !errors.Is(err, cds.ErrNotFound) {
		t.Errorf("Open(%q) error = %v; want an error wrapping ErrNotFound", key, err)
	}
}

func testPutOpenStat(t *testing.T, s cds.Store) {
	data := randomBytes(t, 4096+17)
	const key = "recordings/a.example/2026/11/01/rec-1-abcdef"
	put(t, s, key, data)
	if got := readAll(t, s, key, 0, -1); !bytes.Equal(got, data) {
		t.Fatalf("Open full: got %d bytes (sha %s), want %d bytes (sha %s)", len(got), sum(got), len(data), sum(data))
	}
	obj, err := s.Stat(ctxT(t), key)
	if err != nil {
		t.Fatal(err)
	}
	if obj.Key != key || obj.Size != int64(len(data)) {
		t.Fatalf("Stat = %+v, want key %q size %d", obj, key, len(data))
	}
}

// testSizes round-trips objects around and above the multipart part size,
// through a seekable reader and through a plain stream.
func testSizes(t *testing.T, s cds.Store) {
	sizes := []int{0, 1, partSize - 1, partSize, partSize + 1, 20 << 20}
	for _, size := range sizes {
		for _, stream := range []bool{false, true} {
			name := fmt.Sprintf("%d/seekable", size)
			if stream {
				name = fmt.Sprintf("%d/stream", size)
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				data := randomBytes(t, size)
				var r io.Reader = bytes.NewReader(data)
				if stream {
					r = onlyReader{r: r}
				}
				key := "sizes/" + strings.ReplaceAll(name, "/", "-")
				n, err := s.Put(ctxT(t), key, r, "application/octet-stream")
				if err != nil {
					t.Fatalf("Put: %v", err)
				}
				if n != int64(size) {
					t.Fatalf("Put = %d bytes, want %d", n, size)
				}
				obj, err := s.Stat(ctxT(t), key)
				if err != nil {
					t.Fatal(err)
				}
				if obj.Size != int64(size) {
					t.Fatalf("Stat size = %d, want %d", obj.Size, size)
				}
				if got := readAll(t, s, key, 0, -1); sum(got) != sum(data) {
					t.Fatalf("round trip: got %d bytes sha %s, want %d bytes sha %s", len(got), sum(got), size, sum(data))
				}
			})
		}
	}
}

func testRanges(t *testing.T, s cds.Store) {
	data := randomBytes(t, 1000)
	const key = "ranges/obj"
	put(t, s, key, data)
	cases := []struct {
		name           string
		offset, length int64
		want           []byte
	}{
		{"start", 0, 10, data[:10]},
		{"middle", 100, 50, data[100:150]},
		{"last byte", 999, 1, data[999:]},
		{"to end", 900, -1, data[900:]},
		{"whole", 0, -1, data},
		{"exact whole", 0, 1000, data},
		{"zero length at start", 0, 0, nil},
		{"zero length in middle", 500, 0, nil},
		{"length past end is cut", 990, 100, data[990:]},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got := readAll(t, s, key, c.offset, c.length)
			if !bytes.Equal(got, c.want) {
				t.Fatalf("Open(%d, %d) = %d bytes, want %d bytes %x...", c.offset, c.length, len(got), len(c.want), c.want[:min(len(c.want), 8)])
			}
		})
	}
}

// testRangeEdges pins the edges of the Open contract: a zero-length read
// of a missing object is still not found, and a read starting at the end
// is empty rather than an error.
func testRangeEdges(t *testing.T, s cds.Store) {
	const key = "edges/obj"
	put(t, s, key, randomBytes(t, 100))
	t.Run("zero length of a missing key is ErrNotFound", func(t *testing.T) {
		t.Parallel()
		rc, err := s.Open(ctxT(t), "edges/missing", 0, 0)
		if err == nil {
			rc.Close()
		}
		if !errors.Is(err, cds.ErrNotFound) {
			t.Fatalf("Open(missing, 0, 0) error = %v, want ErrNotFound", err)
		}
	})
	for _, c := range []struct {
		name           string
		offset, length int64
	}{
		{"from the end to the end is empty", 100, -1},
		{"from the end with a length is empty", 100, 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if got := readAll(t, s, key, c.offset, c.length); len(got) != 0 {
				t.Fatalf("Open(%d, %d) = %d bytes, want 0", c.offset, c.length, len(got))
			}
		})
	}
}

// testPrefixIsNotAnObject checks that a key which is only the prefix of
// other keys holds no object: FS keeps such prefixes as directories.
func testPrefixIsNotAnObject(t *testing.T, s cds.Store) {
	const key = "prefix/dir/obj"
	data := randomBytes(t, 100)
	put(t, s, key, data)
	for _, prefix := range []string{"prefix", "prefix/dir"} {
		t.Run(prefix, func(t *testing.T) {
			t.Parallel()
			assertNotFound(t, s, prefix)
			if err := s.Delete(ctxT(t), prefix); err != nil {
				t.Errorf("Delete(%q) = %v, want nil (no object there)", prefix, err)
			}
			if got := readAll(t, s, key, 0, -1); !bytes.Equal(got, data) {
				t.Fatalf("object under the prefix changed: %d bytes", len(got))
			}
		})
	}
}

func testOverwrite(t *testing.T, s cds.Store) {
	const key = "overwrite/obj"
	first, second := randomBytes(t, 5000), randomBytes(t, 300)
	put(t, s, key, first)
	put(t, s, key, second)
	if got := readAll(t, s, key, 0, -1); !bytes.Equal(got, second) {
		t.Fatalf("after overwrite got %d bytes, want the second object's %d", len(got), len(second))
	}
	obj, err := s.Stat(ctxT(t), key)
	if err != nil {
		t.Fatal(err)
	}
	if obj.Size != int64(len(second)) {
		t.Fatalf("Stat size = %d, want %d", obj.Size, len(second))
	}
}

// testConcurrentPutSameKey checks that concurrent writers never interleave:
// the object is one writer's bytes in full.
func testConcurrentPutSameKey(t *testing.T, s cds.Store) {
	const key = "concurrent/obj"
	const writers = 8
	payloads := make(map[string]bool, writers)
	datas := make([][]byte, writers)
	for i := range datas {
		datas[i] = randomBytes(t, 64<<10+i)
		payloads[sum(datas[i])] = true
	}
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for _, d := range datas {
		wg.Go(func() {
			if _, err := s.Put(ctx, key, bytes.NewReader(d), ""); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Put: %v", err)
	}
	got := readAll(t, s, key, 0, -1)
	if !payloads[sum(got)] {
		t.Fatalf("object of %d bytes is none of the %d payloads written", len(got), writers)
	}
	obj, err := s.Stat(ctxT(t), key)
	if err != nil {
		t.Fatal(err)
	}
	if obj.Size != int64(len(got)) {
		t.Fatalf("Stat size = %d, read %d bytes", obj.Size, len(got))
	}
}

func testDelete(t *testing.T, s cds.Store) {
	const key = "delete/obj"
	put(t, s, key, []byte("to be deleted"))
	ctx := ctxT(t)
	if err := s.Delete(ctx, key); err != nil {
		t.Fatalf("Delete existing: %v", err)
	}
	assertNotFound(t, s, key)
	if err := s.Delete(ctx, key); err != nil {
		t.Fatalf("Delete again: %v", err)
	}
	if err := s.Delete(ctx, "delete/never-existed"); err != nil {
		t.Fatalf("Delete of a key never written: %v", err)
	}
	assertNotFound(t, s, key)
}

func testMissingKey(t *testing.T, s cds.Store) {
	assertNotFound(t, s, "missing/obj")
	assertNotFound(t, s, "missing/deeper/obj")
}

// testFailedPut checks that a Put whose reader fails, or whose context is
// cancelled, reports an error and leaves no object, below and above the
// multipart threshold.
func testFailedPut(t *testing.T, s cds.Store) {
	cases := []struct {
		name string
		size int
	}{
		{"small", 1000},
		{"multipart", 2*partSize + 123},
	}
	for _, c := range cases {
		t.Run(c.name+"/reader error", func(t *testing.T) {
			t.Parallel()
			key := "failed/" + c.name + "-reader"
			n, err := s.Put(ctxT(t), key, &failingReader{data: randomBytes(t, c.size), err: errBroken}, "")
			if err == nil {
				t.Fatalf("Put with a failing reader succeeded (%d bytes)", n)
			}
			if !errors.Is(err, errBroken) {
				t.Errorf("Put error = %v, want it to wrap the reader's error", err)
			}
			assertNotFound(t, s, key)
		})
		t.Run(c.name+"/cancelled", func(t *testing.T) {
			t.Parallel()
			key := "failed/" + c.name + "-cancelled"
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if n, err := s.Put(ctx, key, bytes.NewReader(randomBytes(t, c.size)), ""); err == nil {
				t.Fatalf("Put with a cancelled context succeeded (%d bytes)", n)
			}
			assertNotFound(t, s, key)
		})
	}
}

var unsafeKeys = []struct{ name, key string }{
	{"empty", ""},
	{"absolute", "/abs"},
	{"absolute deep", "/etc/passwd"},
	{"dotdot inside", "a/../b"},
	{"dotdot", ".."},
	{"dotdot leading", "../escape"},
	{"dot", "."},
	{"empty segment", "a//b"},
	{"trailing slash", "a/"},
	{"dot segment", "a/./b"},
	{"backslash", `a\b`},
	{"backslash dotdot", `..\escape`},
	{"space", "a b"},
	{"nul", "a\x00b"},
	{"newline", "a\nb"},
	{"hidden segment", ".tmp/put-1"},
	{"leading dash", "-rf"},
	{"non-ascii", "récord"},
	{"too long", strings.Repeat("a", 1025)},
}

var safeKeys = []string{
	"recordings/a.example/2026/11/01/rec-1-abcdef",
	"a",
	"A_b-c.d/0",
	"voicemail/b.example/v1.ogg",
	// exactly 1024 characters: segments of 99 letters and a slash
	strings.Repeat(strings.Repeat("x", 99)+"/", 10) + strings.Repeat("y", 24),
}

func TestCheckKey(t *testing.T) {
	t.Parallel()
	if n := len(safeKeys[len(safeKeys)-1]); n != 1024 {
		t.Fatalf("longest safe key has %d characters, want 1024", n)
	}
	for _, c := range unsafeKeys {
		t.Run("unsafe/"+c.name, func(t *testing.T) {
			t.Parallel()
			if err := cds.CheckKey(c.key); err == nil {
				t.Fatalf("CheckKey(%q) accepted an unsafe key", c.key)
			}
		})
	}
	for i, key := range safeKeys {
		t.Run(fmt.Sprintf("safe/%d", i), func(t *testing.T) {
			t.Parallel()
			if err := cds.CheckKey(key); err != nil {
				t.Fatalf("CheckKey(%q) = %v, want nil", key, err)
			}
		})
	}
}

// testUnsafeKeys checks every operation refuses an unsafe key.
func testUnsafeKeys(t *testing.T, s cds.Store) {
	for _, c := range unsafeKeys {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx := ctxT(t)
			if _, err := s.Put(ctx, c.key, strings.NewReader("x"), ""); err == nil {
				t.Errorf("Put(%q) succeeded", c.key)
			}
			if rc, err := s.Open(ctx, c.key, 0, -1); err == nil {
				rc.Close()
				t.Errorf("Open(%q) succeeded", c.key)
			}
			if _, err := s.Stat(ctx, c.key); err == nil {
				t.Errorf("Stat(%q) succeeded", c.key)
			}
			if err := s.Delete(ctx, c.key); err == nil {
				t.Errorf("Delete(%q) succeeded", c.key)
			}
		})
	}
}

// testList checks that List returns exactly the objects under a prefix,
// with their sizes and a write time, and none of another prefix.
func testList(t *testing.T, s cds.Store) {
	l, ok := s.(cds.Lister)
	if !ok {
		t.Fatalf("%T does not implement cds.Lister", s)
	}
	before := time.Now().Add(-time.Minute)
	want := map[string]int64{"list/a/one": 3, "list/a/deep/two": 5, "list/a/deep/er/three": 1}
	for k, n := range want {
		put(t, s, k, randomBytes(t, int(n)))
	}
	put(t, s, "list/b/other", randomBytes(t, 2))
	got := map[string]int64{}
	err := l.List(ctxT(t), "list/a/", func(o cds.Object) error {
		if o.Modified.Before(before) || o.Modified.After(time.Now().Add(time.Minute)) {
			t.Errorf("%s: modified %v, want about now", o.Key, o.Modified)
		}
		got[o.Key] = o.Size
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("List(list/a/) = %v, want %v", got, want)
	}
	stop := errors.New("stop")
	if err := l.List(ctxT(t), "list/", func(cds.Object) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("List with a failing callback = %v, want its error", err)
	}
}
