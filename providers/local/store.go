package local

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/keyrelay/keyrelay/internal/ctxtime"
	"github.com/keyrelay/keyrelay/internal/keyedlock"
)

// store keeps records. Errors wrapping ErrCorrupt mean a record cannot be
// trusted; other errors are I/O (or context) errors.
type store interface {
	// lock takes the exclusive lock on name for a read-modify-write.
	lock(ctx context.Context, name string) (unlock func(), err error)
	// load returns the record for name, or nil when there is none. The
	// caller owns the result's fields, but its Tags map and its Versions
	// may be shared with the stored record: replace Tags, never change it
	// in place; change a version only in a copy (record.writableVersion),
	// and append only while holding lock(name).
	load(name string) (*record, error)
	// save stores rec atomically; readers see the old or the new record.
	save(rec *record) error
	// remove deletes the record for name, if any.
	remove(name string) error
	// list returns every record.
	list() ([]*record, error)
}

// memStore is the in-memory mode.
type memStore struct {
	locks keyedlock.Set
	mu    sync.RWMutex
	m     map[string]*record
}

func newMemStore() *memStore { return &memStore{m: map[string]*record{}} }

func (s *memStore) lock(ctx context.Context, name string) (func(), error) {
	return s.locks.Lock(ctx, name)
}

func (s *memStore) load(name string) (*record, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.m[name].clone(), nil
}

func (s *memStore) save(rec *record) error {
	c := rec.clone()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[rec.Name] = c
	return nil
}

func (s *memStore) remove(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, name)
	return nil
}

func (s *memStore) clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m = map[string]*record{}
}

func (s *memStore) list() ([]*record, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*record, 0, len(s.m))
	for _, r := range s.m {
		out = append(out, r.clone())
	}
	return out, nil
}

// fileStore keeps one JSON file per secret:
//
//	<dir>/secrets/<sha256(name) hex>.json   the record, replaced by rename
//	<dir>/locks/<sha256(name) hex>.lock     flock'ed around read-modify-write
//
// File names depend only on a hash, so any name is safe; the record holds
// the real name. Lock files are never removed (removing them would race
// with processes waiting on them); they are empty.
type fileStore struct {
	secrets string
	locks   string
	fsync   bool
	mem     keyedlock.Set
}

const (
	secretsDir = "secrets"
	locksDir   = "locks"
	fileExt    = ".json"
)

func newFileStore(dir string, fsync bool) (*fileStore, error) {
	s := &fileStore{secrets: filepath.Join(dir, secretsDir), locks: filepath.Join(dir, locksDir), fsync: fsync}
	for _, d := range []string{dir, s.secrets, s.locks} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	s.removeStaleTemps()
	return s, nil
}

// staleTempAge is how old a temp file must be before New removes it: far
// older than any write in progress in another process.
const staleTempAge = time.Hour

// removeStaleTemps removes temp files left by writers that crashed
// between creating and renaming them. Failures are ignored: the files are
// harmless, only clutter.
func (s *fileStore) removeStaleTemps() {
	entries, err := os.ReadDir(s.secrets)
	if err != nil {
		return
	}
	for _, e := range entries {
		if n := e.Name(); strings.HasPrefix(n, ".") && strings.HasSuffix(n, ".tmp") {
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > staleTempAge {
				os.Remove(filepath.Join(s.secrets, n))
			}
		}
	}
}

func fileID(name string) string {
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:])
}

func (s *fileStore) path(name string) string {
	return filepath.Join(s.secrets, fileID(name)+fileExt)
}

// Lock polling bounds: another process holds a lock for one write.
const (
	lockPollMin = 100 * time.Microsecond
	lockPollMax = 5 * time.Millisecond
)

func (s *fileStore) lock(ctx context.Context, name string) (func(), error) {
	unlockMem, err := s.mem.Lock(ctx, name)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(s.locks, fileID(name)+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		unlockMem()
		return nil, err
	}
	fail := func(err error) (func(), error) {
		f.Close()
		unlockMem()
		return nil, err
	}
	for wait := lockPollMin; ; wait = min(2*wait, lockPollMax) {
		ok, err := tryFlock(f)
		if err != nil {
			return fail(err)
		}
		if ok {
			break
		}
		if err := ctxtime.Sleep(ctx, wait); err != nil {
			return fail(err)
		}
	}
	return func() {
		_ = funlock(f) // closing releases it anyway
		f.Close()
		unlockMem()
	}, nil
}

func (s *fileStore) load(name string) (*record, error) {
	b, err := os.ReadFile(s.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	r, err := decodeRecord(b)
	if err != nil {
		return nil, err
	}
	// What was read from disk is checked; the in-memory mode holds only
	// records Put built.
	if err := r.check(name); err != nil {
		return nil, err
	}
	return r, nil
}

func decodeRecord(b []byte) (*record, error) {
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return &r, nil
}

func (s *fileStore) save(rec *record) (err error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	final := s.path(rec.Name)
	tmp, err := os.CreateTemp(s.secrets, "."+filepath.Base(final)+".*.tmp") // mode 0600
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if s.fsync {
		if err := tmp.Sync(); err != nil {
			tmp.Close()
			return err
		}
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return err
	}
	if s.fsync {
		return syncDir(s.secrets)
	}
	return nil
}

func (s *fileStore) remove(name string) error {
	err := os.Remove(s.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if s.fsync {
		return syncDir(s.secrets)
	}
	return nil
}

func (s *fileStore) list() ([]*record, error) {
	entries, err := os.ReadDir(s.secrets)
	if err != nil {
		return nil, err
	}
	var out []*record
	for _, e := range entries {
		n := e.Name()
		id, ok := strings.CutSuffix(n, fileExt)
		if !ok || len(id) != 2*sha256.Size || strings.HasPrefix(n, ".") {
			continue // temp files and strangers
		}
		b, err := os.ReadFile(filepath.Join(s.secrets, n))
		if errors.Is(err, fs.ErrNotExist) {
			continue // force-deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		r, err := decodeRecord(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n, err)
		}
		if fileID(r.Name) != id {
			return nil, fmt.Errorf("%s: %w: file holds another secret", n, ErrCorrupt)
		}
		out = append(out, r)
	}
	return out, nil
}
