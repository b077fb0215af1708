package sealtest

import (
	"context"
	"sync"
	"time"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/seal"
)

// Faulty wraps a Wrapper whose KMS cannot stage failures itself (the local
// keyring): the next calls fail as Fail says, classified by the kind
// given, before reaching the inner wrapper.
type Faulty struct {
	seal.Wrapper
	mu         sync.Mutex
	n          int
	kind       providers.Kind
	retryAfter time.Duration
}

// Fail makes the next n calls fail with an error of kind (and, when
// throttled, the hint retryAfter); n = 0 clears it.
func (f *Faulty) Fail(n int, kind providers.Kind, retryAfter time.Duration) {
	f.mu.Lock()
	f.n, f.kind, f.retryAfter = n, kind, retryAfter
	f.mu.Unlock()
}

func (f *Faulty) fault(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n <= 0 {
		return nil
	}
	f.n--
	cause := providers.ErrUnavailable
	if f.kind == providers.Throttled {
		cause = providers.ErrThrottled
	}
	e := providers.NewError(f.Name(), op, "", f.kind, cause)
	e.RetryAfter = f.retryAfter
	return e
}

// Wrap implements seal.Wrapper.
func (f *Faulty) Wrap(ctx context.Context, dk []byte, wc seal.Context) (seal.Wrapped, error) {
	if err := f.fault("Wrap"); err != nil {
		return seal.Wrapped{}, err
	}
	return f.Wrapper.Wrap(ctx, dk, wc)
}

// Unwrap implements seal.Wrapper.
func (f *Faulty) Unwrap(ctx context.Context, kid string, edk []byte, wc seal.Context) ([]byte, error) {
	if err := f.fault("Unwrap"); err != nil {
		return nil, err
	}
	return f.Wrapper.Unwrap(ctx, kid, edk, wc)
}
