package recovery

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/providers"
)

// TestOwnLimitRetry: a throttle of keyrelay's own limits is waited out and
// the call made again, spending nothing; anything else, or a wait the
// context cannot cover, ends it.
func TestOwnLimitRetry(t *testing.T) {
	own := func(wait time.Duration) error {
		return &providers.Error{Provider: "p", Op: "put", Kind: providers.Throttled, RetryAfter: wait,
			Err: fmt.Errorf("%w: needs %v (%w)", providers.ErrThrottled, wait, providers.ErrOwnLimit)}
	}
	backend := &providers.Error{Provider: "p", Op: "put", Kind: providers.Throttled, RetryAfter: time.Millisecond,
		Err: providers.ErrThrottled} // the backend's own 429: the caller's attempts decide
	tests := map[string]struct {
		errs      []error // returned by the calls in turn, then nil
		timeout   time.Duration
		wantCalls int
		wantErr   error
	}{
		"ok at once":                  {nil, time.Second, 1, nil},
		"own throttles waited out":    {[]error{own(20 * time.Millisecond), own(10 * time.Millisecond)}, time.Second, 3, nil},
		"a backend throttle returned": {[]error{backend}, time.Second, 1, providers.ErrThrottled},
		"a wait past the deadline":    {[]error{own(5 * time.Second)}, time.Second, 1, providers.ErrOwnLimit},
		"other errors returned":       {[]error{providers.ErrNotFound}, time.Second, 1, providers.ErrNotFound},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			calls := 0
			start := time.Now()
			err := ownLimitRetry(ctx, func() error {
				calls++
				if calls <= len(tt.errs) {
					return tt.errs[calls-1]
				}
				return nil
			})
			if calls != tt.wantCalls || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("%d calls, %v; want %d calls, %v", calls, err, tt.wantCalls, tt.wantErr)
			}
			if ctx.Err() != nil {
				t.Errorf("returned after the context ended (%v); a wait it cannot cover must end at once", time.Since(start))
			}
		})
	}
}
