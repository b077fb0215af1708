package seal_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/seal"
)

// memStore is an in-memory seal.Store with revisions.
type memStore struct {
	mu       sync.Mutex
	vals     map[string]*events.SealedValue
	bind     map[string]events.Binding
	rev      map[string]uint64
	conflict map[string]int // Puts to fail with ErrConflict
}

func (m *memStore) Keys(context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for k := range m.bind {
		out = append(out, k)
	}
	return out, nil
}

func (m *memStore) Get(_ context.Context, k string) (*events.SealedValue, events.Binding, uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.vals[k], m.bind[k], m.rev[k], nil
}

func (m *memStore) Put(_ context.Context, k string, sv *events.SealedValue, rev uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conflict[k] > 0 {
		m.conflict[k]--
		m.rev[k]++
		return seal.ErrConflict
	}
	if rev != m.rev[k] {
		return seal.ErrConflict
	}
	m.vals[k], m.rev[k] = sv, rev+1
	return nil
}

func TestRewrapStore(t *testing.T) {
	ctx := context.Background()
	r := newRing(t)
	mk := func() *seal.Sealer {
		w, _ := seal.NewKeyringWrapper(r.current(), "")
		s, err := seal.New(w, seal.Config{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	old := mk()
	st := &memStore{vals: map[string]*events.SealedValue{}, bind: map[string]events.Binding{}, rev: map[string]uint64{}, conflict: map[string]int{}}
	legacy, _ := events.NewKeyring("legacy", map[string][]byte{"legacy": make([]byte, 32)})
	for i := 0; i < 10; i++ {
		k := fmt.Sprintf("team-%d.key-%d", i%3, i)
		b := events.Binding{TeamID: fmt.Sprintf("team-%d", i%3), KeyID: fmt.Sprintf("key-%d", i), Generation: uint64(i)}
		var sv *events.SealedValue
		var err error
		switch i {
		case 7:
			sv, err = legacy.Seal(ctx, []byte("sk-legacy"), b) // another algorithm
		case 8: // a deleted key: no value
		default:
			sv, err = old.Seal(ctx, []byte(fmt.Sprintf("sk-%d", i)), b)
		}
		if err != nil {
			t.Fatal(err)
		}
		st.vals[k], st.bind[k] = sv, b
	}
	st.conflict["team-1.key-4"] = 2
	r.rotate(t)
	s := mk()

	// Stop after 4 keys, then resume from the cursor.
	cctx, cancel := context.WithCancel(ctx)
	var seen []string
	res, err := seal.RewrapStore(cctx, s, st, seal.RewrapOptions{Progress: func(p seal.RewrapResult) {
		seen = append(seen, p.Cursor)
		if p.Done == 4 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) || res.Done != 4 || res.Total != 10 {
		t.Fatalf("first run: %+v %v", res, err)
	}
	res2, err := seal.RewrapStore(ctx, s, st, seal.RewrapOptions{After: res.Cursor})
	if err != nil {
		t.Fatal(err)
	}
	if res2.Total != 6 || res.Rewrapped+res2.Rewrapped != 8 || res.Other+res2.Other != 1 || res.Empty+res2.Empty != 1 {
		t.Fatalf("runs: %+v %+v", res, res2)
	}
	// Every value is now under the new keyring key, and opens with a
	// sealer that has only... the whole ring (old keys kept).
	for k, sv := range st.vals {
		if sv == nil || sv.Alg != seal.AlgKeyring {
			continue
		}
		if member, _, _ := seal.KeyringMember(sv.EDK); member != "k2" {
			t.Errorf("%s still wrapped by %s", k, member)
		}
		if _, err := mk().Open(ctx, sv, st.bind[k]); err != nil {
			t.Errorf("%s: %v", k, err)
		}
	}
	// With Reseal, the keyring value moves too.
	res3, err := seal.RewrapStore(ctx, s, st, seal.RewrapOptions{Reseal: legacy})
	if err != nil || res3.Other != 0 || res3.Rewrapped != 9 {
		t.Fatalf("reseal run: %+v %v", res3, err)
	}
	if sv := st.vals["team-1.key-7"]; sv.Alg != seal.AlgKeyring {
		t.Fatalf("legacy value not resealed: %s", sv)
	}
	if pt, err := s.Open(ctx, st.vals["team-1.key-7"], st.bind["team-1.key-7"]); err != nil || string(pt) != "sk-legacy" {
		t.Fatalf("resealed value: %q %v", pt, err)
	}
}
