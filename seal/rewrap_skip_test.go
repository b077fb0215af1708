package seal_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/seal"
)

// TestRewrapStoreSkipsNamedEntries: an entry whose value cannot be opened
// stops every run at it, with a *RewrapError naming it and the cursor
// before it; naming it in Skip is the way past: it is left as it is,
// listed in Skipped, and the keys after it are rewrapped.
func TestRewrapStoreSkipsNamedEntries(t *testing.T) {
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
	for i := 0; i < 5; i++ {
		k := fmt.Sprintf("team-a.key-%d", i)
		b := events.Binding{TeamID: "team-a", KeyID: fmt.Sprintf("key-%d", i), Generation: 1}
		sv, err := old.Seal(ctx, []byte(fmt.Sprintf("sk-skip-%d", i)), b)
		if err != nil {
			t.Fatal(err)
		}
		st.vals[k], st.bind[k] = sv, b
	}
	// key-2's wrapped data key is damaged: it opens no more.
	const bad = "team-a.key-2"
	broken := *st.vals[bad]
	broken.EDK = slices.Clone(broken.EDK)
	broken.EDK[len(broken.EDK)-1] ^= 0xff
	st.vals[bad] = &broken
	r.rotate(t)
	s := mk()

	res, err := seal.RewrapStore(ctx, s, st, seal.RewrapOptions{})
	var re *seal.RewrapError
	if !errors.As(err, &re) || re.Key != bad || res.Cursor != "team-a.key-1" || res.Rewrapped != 2 {
		t.Fatalf("first run: %+v %v (want a *RewrapError for %s, cursor team-a.key-1)", res, err, bad)
	}
	if strings.Contains(err.Error(), "sk-skip") {
		t.Fatalf("the error shows a value: %v", err)
	}
	// Run again from the cursor: it stops at the same entry.
	if _, err := seal.RewrapStore(ctx, s, st, seal.RewrapOptions{After: res.Cursor}); !errors.As(err, &re) || re.Key != bad {
		t.Fatalf("second run: %v", err)
	}
	res, err = seal.RewrapStore(ctx, s, st, seal.RewrapOptions{After: res.Cursor, Skip: []string{bad, "team-z.no-such-key"}})
	if err != nil {
		t.Fatalf("run with Skip: %v", err)
	}
	if res.Total != 3 || res.Done != 3 || res.Rewrapped != 2 || !slices.Equal(res.Skipped, []string{bad}) || res.Cursor != "team-a.key-4" {
		t.Fatalf("run with Skip: %+v", res)
	}
	if !slices.Equal(st.vals[bad].EDK, broken.EDK) {
		t.Fatal("the skipped entry was changed")
	}
	for k, sv := range st.vals {
		if k == bad {
			continue
		}
		if member, _, _ := seal.KeyringMember(sv.EDK); member != "k2" {
			t.Errorf("%s still wrapped by %s", k, member)
		}
	}
}
