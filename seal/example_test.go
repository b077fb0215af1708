package seal_test

import (
	"context"
	"fmt"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/seal"
)

// A Sealer over the local keyring's wrapper: values are sealed under a
// data key that the keyring's active key wraps, and open for their own
// event only.
func ExampleNew() {
	ctx := context.Background()
	ring, _ := events.NewKeyring("kek-1", map[string][]byte{"kek-1": make([]byte, 32)})
	w, _ := seal.NewKeyringWrapper(ring, "")
	s, err := seal.New(w, seal.Config{})
	if err != nil {
		panic(err)
	}
	b := events.Binding{TeamID: "team-a", KeyID: "key-1", Generation: 1}
	sv, _ := s.Seal(ctx, []byte("sk-example"), b)
	fmt.Println(sv.Alg, sv.KID)
	pt, _ := s.Open(ctx, sv, b)
	fmt.Println(string(pt))
	_, err = s.Open(ctx, sv, events.Binding{TeamID: "team-a", KeyID: "key-2", Generation: 1})
	fmt.Println(err != nil)
	// Output:
	// A256GCM-KEYRING keyring
	// sk-example
	// true
}
