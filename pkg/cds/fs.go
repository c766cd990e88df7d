package cds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// FS stores objects as files under a root directory.
type FS struct {
	root string
	// syncDir fsyncs a directory; tests replace it to see which
	// directories a write made durable.
	syncDir func(dir string) error
}

var (
	_ Store  = (*FS)(nil)
	_ Lister = (*FS)(nil)
)

// NewFS returns a store rooted at dir, creating it if needed.
func NewFS(dir string) (*FS, error) {
	f := &FS{root: dir, syncDir: syncDir}
	if err := f.mkdirAll(filepath.Join(dir, ".tmp")); err != nil {
		return nil, fmt.Errorf("cds fs: %w", err)
	}
	return f, nil
}

// syncDir fsyncs dir, so that the entries created, renamed or removed in
// it survive a crash: without it a renamed file can vanish on power loss
// even though its own data was fsynced.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func (f *FS) path(key string) (string, error) {
	if err := CheckKey(key); err != nil {
		return "", err
	}
	return filepath.Join(f.root, filepath.FromSlash(key)), nil
}

// Put writes to a temporary file, fsyncs it and renames it into place, so a
// reader never sees a partial object.
func (f *FS) Put(ctx context.Context, key string, r io.Reader, _ string) (int64, error) {
	dst, err := f.path(key)
	if err != nil {
		return 0, err
	}
	tmp, err := os.CreateTemp(filepath.Join(f.root, ".tmp"), "put-*")
	if err != nil {
		return 0, fmt.Errorf("cds fs put %s: %w", key, err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	n, err := io.Copy(tmp, ctxReader{ctx: ctx, r: r})
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("cds fs put %s: %w", key, err)
	}
	if err := f.mkdirAll(filepath.Dir(dst)); err != nil {
		return n, fmt.Errorf("cds fs put %s: %w", key, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return n, fmt.Errorf("cds fs put %s: %w", key, err)
	}
	// The rename is only durable once the directory holding it is.
	if err := f.syncDir(filepath.Dir(dst)); err != nil {
		return n, fmt.Errorf("cds fs put %s: sync dir: %w", key, err)
	}
	return n, nil
}

// mkdirAll creates dir and its missing parents, and fsyncs the parent of
// every directory it created so that none of them is lost on a crash.
func (f *FS) mkdirAll(dir string) error {
	var created []string
	for d := dir; ; d = filepath.Dir(d) {
		_, err := os.Stat(d)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		created = append(created, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if len(created) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	// Top-down: the outermost new directory's parent existed before.
	for i := len(created) - 1; i >= 0; i-- {
		if err := f.syncDir(filepath.Dir(created[i])); err != nil {
			return fmt.Errorf("sync dir: %w", err)
		}
	}
	return nil
}

// Open opens key for reading a byte range.
func (f *FS) Open(_ context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	p, err := f.path(key)
	if err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("cds fs open %s: negative offset %d", key, offset)
	}
	if _, err := f.Stat(context.Background(), key); err != nil {
		return nil, err
	}
	file, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if err != nil {
		return nil, fmt.Errorf("cds fs open %s: %w", key, err)
	}
	if offset > 0 {
		if _, err := file.Seek(offset, io.SeekStart); err != nil {
			file.Close()
			return nil, fmt.Errorf("cds fs open %s: %w", key, err)
		}
	}
	if length < 0 {
		return file, nil
	}
	return limitedReadCloser{Reader: io.LimitReader(file, length), Closer: file}, nil
}

// Stat reports an object's size.
func (f *FS) Stat(_ context.Context, key string) (Object, error) {
	p, err := f.path(key)
	if err != nil {
		return Object{}, err
	}
	fi, err := os.Stat(p)
	// A key that is only a prefix of other keys is a directory here, and no
	// object, just as in a bucket.
	if errors.Is(err, fs.ErrNotExist) || (err == nil && !fi.Mode().IsRegular()) {
		return Object{}, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if err != nil {
		return Object{}, fmt.Errorf("cds fs stat %s: %w", key, err)
	}
	return Object{Key: key, Size: fi.Size()}, nil
}

// Delete removes key; a missing key is not an error.
func (f *FS) Delete(_ context.Context, key string) error {
	p, err := f.path(key)
	if err != nil {
		return err
	}
	if fi, err := os.Lstat(p); err == nil && !fi.Mode().IsRegular() {
		return nil // a prefix of other keys, not an object
	}
	if err := os.Remove(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("cds fs delete %s: %w", key, err)
	}
	// A deletion the retention rules required must not come back after a
	// crash.
	if err := f.syncDir(filepath.Dir(p)); err != nil {
		return fmt.Errorf("cds fs delete %s: sync dir: %w", key, err)
	}
	return nil
}

// List walks the root for regular files under prefix. Files being
// written (the .tmp directory) are not objects yet and are skipped.
func (f *FS) List(ctx context.Context, prefix string, fn func(Object) error) error {
	err := filepath.WalkDir(f.root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while we walked
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(f.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if de.IsDir() {
			if key == ".tmp" {
				return fs.SkipDir
			}
			return nil
		}
		if !de.Type().IsRegular() || !strings.HasPrefix(key, prefix) {
			return nil
		}
		fi, err := de.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		return fn(Object{Key: key, Size: fi.Size(), Modified: fi.ModTime()})
	})
	if err != nil {
		return fmt.Errorf("cds fs list %s: %w", prefix, err)
	}
	return nil
}

// ctxReader stops a long copy when the request is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
