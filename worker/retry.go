package worker

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/keyrelay/keyrelay/internal/ctxtime"
	"github.com/keyrelay/keyrelay/providers"
)

// retryPolicy is the exponential backoff with jitter used between attempts
// inside one delivery and between deliveries.
type retryPolicy struct {
	initial, max time.Duration
	multiplier   float64
	attempts     int
}

// do calls fn until it succeeds, returns a permanent error, the attempts
// are spent, or the deadline nears. Provider retry hints (RetryAfter) are
// honoured: the wait is never shorter than the hint. onRetry is called
// before each wait.
func (p retryPolicy) do(ctx context.Context, deadline time.Time, fn func(context.Context) error, onRetry func(error, time.Duration)) error {
	// The backoff is made at the first retry: nearly every call succeeds
	// at once.
	var b *backoff.ExponentialBackOff
	var err error
	for attempt := 1; ; attempt++ {
		err = fn(ctx)
		if err == nil || !providers.IsRetryable(err) || attempt >= p.attempts || errors.Is(err, errBreakerOpen) {
			return err
		}
		if b == nil {
			b = backoff.NewExponentialBackOff()
			b.InitialInterval = p.initial
			b.MaxInterval = p.max
			b.Multiplier = p.multiplier
			b.RandomizationFactor = 0.5
			b.MaxElapsedTime = 0
			b.Reset()
		}
		wait := b.NextBackOff()
		if hint := providers.RetryAfter(err); hint > wait {
			wait = hint
		}
		if !deadline.IsZero() && time.Now().Add(wait).After(deadline) {
			return err
		}
		if onRetry != nil {
			onRetry(err, wait)
		}
		if ctxtime.Sleep(ctx, wait) != nil {
			return err
		}
	}
}

// redeliveryDelay is the NakWithDelay delay after delivery n (1-based) has
// failed: initial × multiplier^(n-1), capped, with ±50% jitter, and never
// shorter than the provider's hint.
func (p retryPolicy) redeliveryDelay(n uint64, hint time.Duration) time.Duration {
	d := float64(p.initial) * math.Pow(p.multiplier, float64(n-1))
	if d > float64(p.max) || math.IsInf(d, 0) {
		d = float64(p.max)
	}
	d = d * (0.5 + rand.Float64())
	out := time.Duration(d)
	if hint > out {
		out = hint
	}
	return out
}
