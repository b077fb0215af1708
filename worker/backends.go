package worker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
//
// The bulkhead is work-conserving: beyond its share (slots) a backend may
// borrow the lane's other call slots (up to total) while it answers fast:
// its calls' moving average under borrowBelow and no call of it in flight
// for longer than that. One healthy backend can so use every slot (a 50 ms
// backend at concurrency 64 is not held to 32 calls in flight), while a
// backend that slows down or hangs falls back to its share within one
// borrowBelow, leaving the rest to the others.
type backendGuards struct {
	slots, total int
	borrowBelow  time.Duration
	failures     uint32
	open         time.Duration
	m            *Metrics

	mu     sync.Mutex
	guards map[string]*backendGuard
}

type backendGuard struct {
	provider string
	sem      chan struct{}
	// extra holds the slots borrowed beyond the share (nil: none to borrow).
	extra       chan struct{}
	borrowBelow time.Duration
	// avg is the calls' exponentially weighted moving average duration
	// (ns); slowNow counts calls in flight for longer than borrowBelow.
	avg     atomic.Int64
	slowNow atomic.Int64
	cb      *gobreaker.CircuitBreaker[struct{}]
	// downSince is when the breaker last opened from closed (unix ns; 0
	// while closed): it stays set while probes fail (half-open, open again).
	downSince atomic.Int64
}

// downFor is how long the backend's breaker has not been closed (0 while
// it is closed).
func (bg *backendGuard) downFor() time.Duration {
	if s := bg.downSince.Load(); s != 0 {
		return time.Since(time.Unix(0, s))
	}
	return 0
}

// newBackendGuards makes guards giving each backend slots of the
// process's total, and more while it answers within borrowBelow (0: never
// borrow).
func newBackendGuards(slots, total int, borrowBelow time.Duration, failures int, open time.Duration, m *Metrics) *backendGuards {
	return &backendGuards{slots: slots, total: total, borrowBelow: borrowBelow, failures: uint32(failures), open: open, m: m, guards: map[string]*backendGuard{}}
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

// backendFailure reports whether err says the backend is down, which the
// breaker counts. Only retryable failures do; a permanent error (access
// denied, not owned) is an answer. So are the retryable refusals that
// concern one secret of a backend that answered: a concurrent
// modification (ErrConflict) and a per-secret quota (ErrSecretLimit).
// Counted, one hot or full secret would open the breaker and hold back
// every team's writes to a healthy backend. keyrelay's own rate limits
// (ErrOwnLimit) made no call: they say nothing of the backend either.
func backendFailure(err error) bool {
	switch {
	case err == nil, !providers.IsRetryable(err), errors.Is(err, context.Canceled):
		return false
	case errors.Is(err, providers.ErrOwnLimit), errors.Is(err, providers.ErrConflict), errors.Is(err, providers.ErrSecretLimit):
		return false
	}
	return true
}

// get returns the guard of key (guardKey of provider and its options).
func (g *backendGuards) get(key, provider string) *backendGuard {
	g.mu.Lock()
	defer g.mu.Unlock()
	if bg, ok := g.guards[key]; ok {
		return bg
	}
	bg := &backendGuard{provider: provider, sem: make(chan struct{}, g.slots), borrowBelow: g.borrowBelow}
	if n := g.total - g.slots; n > 0 && g.borrowBelow > 0 {
		bg.extra = make(chan struct{}, n)
	}
	bg.cb = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:         provider,
		MaxRequests:  1,
		Timeout:      g.open,
		ReadyToTrip:  func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= g.failures },
		IsSuccessful: func(err error) bool { return !backendFailure(err) },
		// A call cut short by keyrelay's own deadline (errOwnDeadline: the
		// claim, the writer lease or the claims request ran out first)
		// says nothing of the backend either way: it is neither a failure
		// nor, in half-open state, the success that would close the breaker.
		IsExcluded: func(err error) bool { return errors.Is(err, errOwnDeadline) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			v := 0.0
			if to != gobreaker.StateClosed {
				v = 1
			}
			switch {
			case to == gobreaker.StateClosed:
				bg.downSince.Store(0)
			case from == gobreaker.StateClosed:
				bg.downSince.Store(time.Now().UnixNano())
			}
			g.m.BreakerOpen.WithLabelValues(provider).Set(v)
		},
	})
	g.guards[key] = bg
	return bg
}

// fast reports whether the backend may borrow slots beyond its share: its
// calls average under borrowBelow and none is in flight for longer.
func (bg *backendGuard) fast() bool {
	return bg.extra != nil && bg.slowNow.Load() == 0 && time.Duration(bg.avg.Load()) < bg.borrowBelow
}

// acquire takes one of the backend's slots (its share, or a borrowed one
// while it is fast), waiting at most wait; it returns errBackendBusy when
// none freed up.
func (bg *backendGuard) acquire(ctx context.Context, wait time.Duration) (release func(), err error) {
	share := func() { <-bg.sem }
	borrowed := func() { <-bg.extra }
	select {
	case bg.sem <- struct{}{}:
		return share, nil
	default:
	}
	var extra chan struct{}
	if bg.fast() {
		extra = bg.extra
		select {
		case extra <- struct{}{}:
			return borrowed, nil
		default:
		}
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case bg.sem <- struct{}{}:
		return share, nil
	case extra <- struct{}{}: // nil (never) when not fast
		return borrowed, nil
	case <-t.C:
		return nil, errBackendBusy
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// call runs fn through the backend's circuit breaker, timing it for the
// borrowing rule.
func (bg *backendGuard) call(fn func() error) error {
	if bg.extra != nil {
		start := time.Now()
		slow := time.AfterFunc(bg.borrowBelow, func() { bg.slowNow.Add(1) })
		defer func() {
			if !slow.Stop() {
				bg.slowNow.Add(-1)
			}
			d := int64(time.Since(start))
			for {
				old := bg.avg.Load()
				next := d
				if old != 0 {
					next = old + (d-old)/8
				}
				if bg.avg.CompareAndSwap(old, next) {
					return
				}
			}
		}()
	}
	_, err := bg.cb.Execute(func() (struct{}, error) { return struct{}{}, fn() })
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return providers.NewError(bg.provider, "call", "", providers.Retryable, fmt.Errorf("%w", errBreakerOpen))
	}
	return err
}
