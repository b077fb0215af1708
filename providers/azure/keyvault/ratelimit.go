package keyvault

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/keyrelay/keyrelay/providers"
)

type limiterKey struct {
	vault string
	per10 float64
}

var (
	limMu    sync.Mutex
	limiters = map[limiterKey]*rate.Limiter{}
)

// createLimiter returns the limiter on secret writes to vault: per10
// tokens per 10 seconds with a burst of per10, shared by every provider in
// the process writing to the same vault with the same limit.
func createLimiter(vault string, per10 float64) *rate.Limiter {
	k := limiterKey{strings.TrimRight(strings.ToLower(vault), "/"), per10}
	limMu.Lock()
	defer limMu.Unlock()
	if l, ok := limiters[k]; ok {
		return l
	}
	l := rate.NewLimiter(rate.Limit(per10/10), max(1, int(math.Ceil(per10))))
	limiters[k] = l
	return l
}

// wait takes a write token. When the context's deadline comes before the
// token, it fails at once with a Throttled error whose RetryAfter is the
// wait.
func (p *Provider) wait(ctx context.Context, op, name string) error {
	r := p.lim.Reserve()
	d := r.Delay()
	if d == 0 {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		r.Cancel()
		e := newErr(op, name, providers.Throttled,
			fmt.Errorf("%w: client-side limit of %g writes per 10s needs %v", providers.ErrThrottled, p.cfg.CreatesPer10s, d.Round(time.Millisecond)))
		e.RetryAfter = d
		return e
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		r.Cancel()
		return ctxErr(op, name, ctx.Err())
	}
}
