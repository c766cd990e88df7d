package cds_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/callvault/callvault/pkg/cds"
)

// tree lists every path under dir (relative, slash-separated), sorted.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		out = append(out, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// newFSInside returns a store rooted at parent/root, so tests can see
// whether anything was written beside the root.
func newFSInside(t *testing.T) (s *cds.FS, parent, root string) {
	t.Helper()
	parent = t.TempDir()
	root = filepath.Join(parent, "root")
	s, err := cds.NewFS(root)
	if err != nil {
		t.Fatal(err)
	}
	return s, parent, root
}

// TestFSUnsafeKeyWritesNothing checks that Put with an unsafe key fails and
// writes nothing, neither inside the root nor beside it.
func TestFSUnsafeKeyWritesNothing(t *testing.T) {
	t.Parallel()
	type unsafeKey struct {
		name string
		key  func(parent string) string // parent: the directory holding the root
	}
	var keys []unsafeKey
	for _, c := range unsafeKeys {
		keys = append(keys, unsafeKey{c.name, func(string) string { return c.key }})
	}
	keys = append(keys,
		unsafeKey{"absolute into parent", func(parent string) string { return filepath.ToSlash(filepath.Join(parent, "escaped")) }},
		unsafeKey{"dotdot into parent", func(string) string { return "../escaped" }},
	)
	for _, c := range keys {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s, parent, root := newFSInside(t)
			key := c.key(parent)
			before := tree(t, parent)
			if _, err := s.Put(ctxT(t), key, strings.NewReader("payload"), ""); err == nil {
				t.Fatalf("Put(%q) succeeded", key)
			}
			if after := tree(t, parent); !slices.Equal(before, after) {
				t.Fatalf("Put(%q) changed the tree under the parent of the root:\nbefore %q\nafter  %q", key, before, after)
			}
			if got := tree(t, root); !slices.Equal(got, []string{".", ".tmp"}) {
				t.Fatalf("root holds %q after a refused Put, want only the empty .tmp", got)
			}
		})
	}
}

// TestFSUnsafeKeyDeletesNothing checks that Delete with a key naming a file
// outside the root refuses and leaves the file.
func TestFSUnsafeKeyDeletesNothing(t *testing.T) {
	t.Parallel()
	s, parent, _ := newFSInside(t)
	victim := filepath.Join(parent, "victim")
	if err := os.WriteFile(victim, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"../victim", filepath.ToSlash(victim), `..\victim`} {
		if err := s.Delete(ctxT(t), key); err == nil {
			t.Errorf("Delete(%q) succeeded", key)
		}
		if rc, err := s.Open(ctxT(t), key, 0, -1); err == nil {
			rc.Close()
			t.Errorf("Open(%q) succeeded", key)
		}
	}
	got, err := os.ReadFile(victim)
	if err != nil || string(got) != "keep me" {
		t.Fatalf("victim after refused deletes: %q, %v", got, err)
	}
}

// TestFSFailedPutLeavesNothing checks that a reader failing midway leaves
// neither an object nor a temporary file, and keeps an older object intact.
func TestFSFailedPutLeavesNothing(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		written int
		prior   []byte // an object already under the key, or nil
	}{
		{"fails after some bytes", 4096, nil},
		{"fails before any byte", 0, nil},
		{"fails over an existing object", 4096, []byte("the older object")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s, _, root := newFSInside(t)
			const key = "recordings/a.example/rec-1"
			if c.prior != nil {
				put(t, s, key, c.prior)
			}
			_, err := s.Put(ctxT(t), key, &failingReader{data: randomBytes(t, c.written), err: errBroken}, "")
			if !errors.Is(err, errBroken) {
				t.Fatalf("Put error = %v, want it to wrap %v", err, errBroken)
			}
			if c.prior == nil {
				assertNotFound(t, s, key)
			} else if got := readAll(t, s, key, 0, -1); !bytes.Equal(got, c.prior) {
				t.Fatalf("older object is now %q, want %q", got, c.prior)
			}
			tmp, err := os.ReadDir(filepath.Join(root, ".tmp"))
			if err != nil {
				t.Fatal(err)
			}
			if len(tmp) != 0 {
				t.Fatalf(".tmp holds %d leftover files after a failed Put", len(tmp))
			}
		})
	}
}

// TestFSKeyLayout checks that an object lands at root/key and nowhere else.
func TestFSKeyLayout(t *testing.T) {
	t.Parallel()
	s, parent, root := newFSInside(t)
	const key = "recordings/a.example/2026/11/01/rec-1-abcdef"
	data := randomBytes(t, 321)
	put(t, s, key, data)
	got, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(key)))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("file at root/key: %d bytes, %v; want the %d bytes put", len(got), err, len(data))
	}
	want := []string{".", "root", "root/.tmp", "root/recordings", "root/recordings/a.example",
		"root/recordings/a.example/2026", "root/recordings/a.example/2026/11",
		"root/recordings/a.example/2026/11/01", "root/" + key}
	if tr := tree(t, parent); !slices.Equal(tr, want) {
		t.Fatalf("tree = %q, want %q", tr, want)
	}
}

// TestFSPutSyncsDirectories checks that a put makes the rename and every
// directory it created durable: the new directories' parents and the
// object's own directory are fsynced.
func TestFSPutSyncsDirectories(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s, err := cds.NewFS(root)
	if err != nil {
		t.Fatal(err)
	}
	var synced []string
	cds.RecordDirSyncs(s, func(dir string) { synced = append(synced, dir) })
	key := "recordings/a.example/2026/11/01/rec-1"
	if _, err := s.Put(t.Context(), key, strings.NewReader("media"), "audio/wav"); err != nil {
		t.Fatal(err)
	}
	want := []string{
		root,
		filepath.Join(root, "recordings"),
		filepath.Join(root, "recordings", "a.example"),
		filepath.Join(root, "recordings", "a.example", "2026"),
		filepath.Join(root, "recordings", "a.example", "2026", "11"),
		filepath.Join(root, "recordings", "a.example", "2026", "11", "01"),
	}
	for _, dir := range want {
		if !slices.Contains(synced, dir) {
			t.Errorf("directory %s was not fsynced; synced %v", dir, synced)
		}
	}
	if len(synced) == 0 || synced[len(synced)-1] != want[len(want)-1] {
		t.Errorf("syncs %v: want the object's directory synced last, after the rename", synced)
	}

	// A second object in the same directory still syncs the directory
	// after its rename.
	synced = nil
	if _, err := s.Put(t.Context(), key+"-b", strings.NewReader("media"), "audio/wav"); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(synced, want[len(want)-1:]) {
		t.Errorf("second put synced %v, want only the object's directory", synced)
	}

	synced = nil
	if err := s.Delete(t.Context(), key); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(synced, want[len(want)-1:]) {
		t.Errorf("delete synced %v, want the object's directory", synced)
	}
}
