package keyvault

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"

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

// wait takes a write token (see providers.WaitTokens): a token the
// call's deadline cannot wait for fails at once as Throttled with the wait
// as RetryAfter.
func (p *Provider) wait(ctx context.Context, op, name string) error {
	d, err := providers.WaitTokens(ctx, p.lim)
	switch {
	case err == nil:
		return nil
	case d > 0:
		e := newErr(op, name, providers.Throttled, fmt.Errorf("limit of %g writes per 10s: %w", p.cfg.CreatesPer10s, err))
		e.RetryAfter = d
		return e
	}
	return ctxErr(op, name, err)
}
