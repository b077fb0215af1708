package worker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/keyrelay/keyrelay/providers"
)

// errBackendBusy means every slot of the event's backend is taken: the
// event is handed back (without spending its retry budget) so the slot it
// would hold while waiting stays free for keys on other backends.
var errBackendBusy = errors.New("backend slots busy")

// errBreakerOpen marks a call refused because the backend's circuit
// breaker is open. It is a provider failure (the backend is down), so it
// spends the event's retry budget, but it is never retried in process.
var errBreakerOpen = errors.New("circuit breaker open: the backend failed repeatedly")

// backendGuards isolates backends from each other inside one process: a
// bulkhead bounds the slots one backend may hold, and a circuit breaker
// stops calling a backend that keeps failing, so a backend outage costs
// the other backends nothing.
type backendGuards struct {
	slots    int
	failures uint32
	open     time.Duration
	m        *Metrics

	mu     sync.Mutex
	guards map[string]*backendGuard
}

type backendGuard struct {
	provider string
	sem      chan struct{}
	cb       *gobreaker.CircuitBreaker[struct{}]
}

func newBackendGuards(slots, failures int, open time.Duration, m *Metrics) *backendGuards {
	return &backendGuards{slots: slots, failures: uint32(failures), open: open, m: m, guards: map[string]*backendGuard{}}
}

// guardKey names one backend instance: the provider and its options (a
// team's own Vault address or AWS region is another backend).
func guardKey(provider string, opts map[string]string) string {
	var b strings.Builder
	b.WriteString(provider)
	for _, k := range slices.Sorted(maps.Keys(opts)) {
		b.WriteString("\x00" + k + "=" + opts[k])
	}
	return b.String()
}

func (g *backendGuards) get(provider string, opts map[string]string) *backendGuard {
	key := guardKey(provider, opts)
	g.mu.Lock()
	defer g.mu.Unlock()
	if bg, ok := g.guards[key]; ok {
		return bg
	}
	bg := &backendGuard{provider: provider, sem: make(chan struct{}, g.slots)}
	bg.cb = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        provider,
		MaxRequests: 1,
		Timeout:     g.open,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= g.failures },
		// Only retryable failures say the backend is down; a permanent
		// error (access denied, not owned) is an answer.
		IsSuccessful: func(err error) bool {
			return err == nil || !providers.IsRetryable(err) || errors.Is(err, context.Canceled)
		},
		OnStateChange: func(_ string, _, to gobreaker.State) {
			v := 0.0
			if to != gobreaker.StateClosed {
				v = 1
			}
			g.m.BreakerOpen.WithLabelValues(provider).Set(v)
		},
	})
	g.guards[key] = bg
	return bg
}

// acquire takes one of the backend's slots, waiting at most wait; it
// returns errBackendBusy when none freed up.
func (bg *backendGuard) acquire(ctx context.Context, wait time.Duration) (release func(), err error) {
	select {
	case bg.sem <- struct{}{}:
		return func() { <-bg.sem }, nil
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case bg.sem <- struct{}{}:
		return func() { <-bg.sem }, nil
	case <-t.C:
		return nil, errBackendBusy
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// call runs fn through the backend's circuit breaker.
func (bg *backendGuard) call(fn func() error) error {
	_, err := bg.cb.Execute(func() (struct{}, error) { return struct{}{}, fn() })
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return providers.NewError(bg.provider, "call", "", providers.Retryable, fmt.Errorf("%w", errBreakerOpen))
	}
	return err
}
