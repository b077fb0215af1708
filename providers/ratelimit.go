package providers

import (
	"context"
	"fmt"
	"math"
	"time"

	"golang.org/x/time/rate"
)

// NewLimiter returns a token bucket refilled at perSecond with a burst of
// one second's worth (at least 1): the shape of the published per-second
// quotas providers size their client-side limits to.
func NewLimiter(perSecond float64) *rate.Limiter {
	return rate.NewLimiter(rate.Limit(perSecond), max(1, int(math.Ceil(perSecond))))
}

// WaitTokens takes one token from each limiter, waiting for the slowest.
// When ctx's deadline comes before the tokens, it takes none and returns
// at once an error wrapping ErrThrottled together with the wait needed, so
// a provider can fail with a Throttled *Error whose RetryAfter is that
// wait, instead of holding a worker until the deadline. A context ended
// while waiting returns its error.
func WaitTokens(ctx context.Context, lims ...*rate.Limiter) (time.Duration, error) {
	rs := make([]*rate.Reservation, 0, len(lims))
	var d time.Duration
	for _, l := range lims {
		r := l.Reserve()
		rs = append(rs, r)
		d = max(d, r.Delay())
	}
	cancel := func() {
		for _, r := range rs {
			r.Cancel()
		}
	}
	if d == 0 {
		return 0, nil
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		cancel()
		return d, fmt.Errorf("%w: client-side rate limit needs %v, more than the call has left", ErrThrottled, d.Round(time.Millisecond))
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return 0, nil
	case <-ctx.Done():
		cancel()
		return 0, ctx.Err()
	}
}
