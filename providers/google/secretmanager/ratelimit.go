package secretmanager

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/keyrelay/keyrelay/providers"
)

// limiterKey identifies whose quota a provider's writes count against:
// the project's, on one endpoint.
type limiterKey struct {
	endpoint, project string
	perMinute, perSec float64
}

// limiters holds the project's write limiter and one per secret.
type limiters struct {
	project *rate.Limiter
	perSec  float64

	mu      sync.Mutex
	secrets map[string]*secretLimiter
}

type secretLimiter struct {
	lim  *rate.Limiter
	used time.Time
}

// maxSecretLimiters bounds the per-secret map; idle entries are dropped
// beyond it.
const maxSecretLimiters = 10000

var (
	sharedMu       sync.Mutex
	sharedLimiters = map[limiterKey]*limiters{}
)

// limitersFor returns the limiters for k, shared by every provider with
// the same key in this process.
func limitersFor(k limiterKey) *limiters {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if l, ok := sharedLimiters[k]; ok {
		return l
	}
	perSec := k.perMinute / 60
	l := &limiters{
		project: rate.NewLimiter(rate.Limit(perSec), max(1, int(math.Ceil(perSec)))),
		perSec:  k.perSec,
		secrets: map[string]*secretLimiter{},
	}
	sharedLimiters[k] = l
	return l
}

func (l *limiters) secret(id string) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if s, ok := l.secrets[id]; ok {
		s.used = now
		return s.lim
	}
	if len(l.secrets) >= maxSecretLimiters {
		for k, s := range l.secrets {
			if now.Sub(s.used) > time.Minute {
				delete(l.secrets, k)
			}
		}
	}
	s := &secretLimiter{lim: rate.NewLimiter(rate.Limit(l.perSec), max(1, int(math.Ceil(l.perSec)))), used: now}
	l.secrets[id] = s
	return s.lim
}

// wait takes one token from each limiter. When the context's deadline
// comes before the tokens, it fails at once with a Throttled error whose
// RetryAfter is the wait.
func wait(ctx context.Context, op, name string, lims ...*rate.Limiter) error {
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
		return nil
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		cancel()
		e := providers.NewError(Name, op, name, providers.Throttled,
			fmt.Errorf("%w: client-side write limit needs %v, more than the call has left", providers.ErrThrottled, d.Round(time.Millisecond)))
		e.RetryAfter = d
		return e
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		cancel()
		return ctxErr(op, name, ctx.Err())
	}
}
