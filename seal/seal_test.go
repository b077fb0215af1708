package seal_test

import (
	"crypto/rand"
	"sync"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/seal"
	"github.com/keyrelay/keyrelay/seal/sealtest"
)

// ring is a local keyring that can rotate: each rotation adds a key and
// makes it active, keeping the older ones.
type ring struct {
	mu   sync.Mutex
	keys map[string][]byte
	kr   *events.Keyring
}

func newRing(t *testing.T) *ring {
	r := &ring{keys: map[string][]byte{}}
	r.rotate(t)
	return r
}

func (r *ring) rotate(t *testing.T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	kid := "k" + string(rune('1'+len(r.keys)))
	r.keys[kid] = k
	kr, err := events.NewKeyring(kid, r.keys)
	if err != nil {
		t.Fatal(err)
	}
	r.kr = kr
}

func (r *ring) current() *events.Keyring {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.kr
}

func TestConformanceKeyring(t *testing.T) {
	r := newRing(t)
	var faulty []*sealtest.Faulty
	var mu sync.Mutex
	fail := func(n int, kind providers.Kind, after time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		for _, f := range faulty {
			f.Fail(n, kind, after)
		}
	}
	sealtest.Run(t, sealtest.Options{
		New: func(t *testing.T) seal.Wrapper {
			w, err := seal.NewKeyringWrapper(r.current(), "")
			if err != nil {
				t.Fatal(err)
			}
			f := &sealtest.Faulty{Wrapper: w}
			mu.Lock()
			faulty = append(faulty, f)
			mu.Unlock()
			return f
		},
		Outage:   func(t *testing.T, n int) { fail(n, providers.Retryable, 0) },
		Throttle: func(t *testing.T, n int, after time.Duration) { fail(n, providers.Throttled, after) },
		Rotate:   r.rotate,
		Features: sealtest.Features{BindsContext: true, RetryAfter: true},
	})
}
