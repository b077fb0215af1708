package seal

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/keyrelay/keyrelay/events"
)

// Store is where sealed values are kept between events: the ledger (one
// entry per key, holding the latest sealed value). RewrapStore reads and
// replaces values through it.
type Store interface {
	// Keys returns the key of every entry.
	Keys(ctx context.Context) ([]string, error)
	// Get returns the entry's sealed value (nil when it holds none), the
	// binding it is sealed to, and a revision for Put.
	Get(ctx context.Context, key string) (sv *events.SealedValue, b events.Binding, rev uint64, err error)
	// Put replaces the entry's sealed value if the entry is still at rev,
	// and fails with ErrConflict otherwise.
	Put(ctx context.Context, key string, sv *events.SealedValue, rev uint64) error
}

// ErrConflict is what a Store's Put returns when the entry changed since
// Get; RewrapStore reads it again.
var ErrConflict = errors.New("the entry changed concurrently")

// RewrapOptions configure RewrapStore.
type RewrapOptions struct {
	// After is the cursor to resume from: keys up to and including it (in
	// byte order) are skipped. Empty: from the start.
	After string
	// Reseal, when set, also moves values of other algorithms (the local
	// keyring's A256GCM, another wrapper's) to s: Opener opens them and s
	// seals them again under the same binding. Nil: such values are
	// counted as Other and left alone.
	Reseal events.Opener
	// Progress, when set, is called after each key with the counts so far
	// and the cursor, which a caller saves to resume.
	Progress func(r RewrapResult)
	// MaxConflicts bounds how often one key is read again after a
	// concurrent change. Default 5.
	MaxConflicts int
	// Skip names keys to leave as they are: the way past an entry that
	// cannot be opened (corrupt, or wrapped by a key version already
	// destroyed), which otherwise stops every run at it. Each one met is
	// listed in RewrapResult.Skipped; its value stays under the older key
	// version, which therefore cannot be retired while it is needed.
	Skip []string
}

// RewrapResult counts what RewrapStore did.
type RewrapResult struct {
	// Total is the number of keys after the cursor when the run started.
	Total int
	// Done counts the keys handled so far (every kind below).
	Done int
	// Rewrapped counts values whose data key s wrapped again (or, with
	// Reseal, values sealed again).
	Rewrapped int
	// Empty counts entries without a sealed value (deleted keys).
	Empty int
	// Other counts values of another algorithm left alone.
	Other int
	// Skipped lists the keys passed over because opts.Skip names them, in
	// the order met: their values were not rewrapped.
	Skipped []string
	// Cursor is the last key handled: pass it as After to resume.
	Cursor string
}

// RewrapStore wraps the data key of every sealed value in st again under
// s's newest key-encryption key (Sealer.Rewrap), key by key in byte order
// from opts.After, so an interrupted run resumes from its cursor. A key
// whose entry changes meanwhile (a worker applied a newer event) is read
// again; its new value is rewrapped too. A value that fails to open (or to
// be stored) stops the run with a *RewrapError naming its key and the
// cursor before it, so nothing is skipped silently: fix the cause and run
// again, or name the key in opts.Skip to leave it as it is.
func RewrapStore(ctx context.Context, s *Sealer, st Store, opts RewrapOptions) (RewrapResult, error) {
	if opts.MaxConflicts <= 0 {
		opts.MaxConflicts = 5
	}
	var r RewrapResult
	r.Cursor = opts.After
	keys, err := st.Keys(ctx)
	if err != nil {
		return r, fmt.Errorf("rewrap: list: %w", err)
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	start, _ := slices.BinarySearch(keys, opts.After)
	if opts.After != "" && start < len(keys) && keys[start] == opts.After {
		start++
	}
	keys = keys[start:]
	r.Total = len(keys)
	for _, key := range keys {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		if slices.Contains(opts.Skip, key) {
			r.Skipped = append(r.Skipped, key)
		} else if err := rewrapOne(ctx, s, st, key, opts, &r); err != nil {
			return r, &RewrapError{Key: key, Err: err}
		}
		r.Done++
		r.Cursor = key
		if opts.Progress != nil {
			opts.Progress(r)
		}
	}
	return r, nil
}

// RewrapError is the error RewrapStore stops with at a key it could not
// rewrap. Its message names the key, never a value.
type RewrapError struct {
	Key string
	Err error
}

func (e *RewrapError) Error() string { return fmt.Sprintf("rewrap %s: %v", e.Key, e.Err) }
func (e *RewrapError) Unwrap() error { return e.Err }

func rewrapOne(ctx context.Context, s *Sealer, st Store, key string, opts RewrapOptions, r *RewrapResult) error {
	for attempt := 0; ; attempt++ {
		sv, b, rev, err := st.Get(ctx, key)
		if err != nil {
			return err
		}
		var out *events.SealedValue
		switch {
		case sv == nil:
			r.Empty++
			return nil
		case s.OpensAlg(sv.Alg):
			out, _, err = s.Rewrap(ctx, sv, b)
		case opts.Reseal != nil:
			var pt []byte
			pt, err = opts.Reseal.Open(ctx, sv, b)
			if err == nil {
				out, err = s.Seal(ctx, pt, b)
				clear(pt)
			}
		default:
			r.Other++
			return nil
		}
		if err != nil {
			return err
		}
		err = st.Put(ctx, key, out, rev)
		if errors.Is(err, ErrConflict) && attempt < opts.MaxConflicts {
			continue
		}
		if err != nil {
			return err
		}
		r.Rewrapped++
		return nil
	}
}
