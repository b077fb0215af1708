package providers

import (
	"context"
	"fmt"
	"math"
	"time"

	"golang.org/x/time/rate"

	"github.com/keyrelay/keyrelay/internal/ctxtime"
)

// NewLimiter returns a token bucket refilled at perSecond with a burst of
// one second's worth (at least 1): the shape of the published per-second
// quotas providers size their client-side limits to.
func NewLimiter(perSecond float64) *rate.Limiter {
	return rate.NewLimiter(rate.Limit(perSecond), max(1, int(math.Ceil(perSecond))))
}

// WindowRate returns the rate to give NewLimiter (and Quotas.Wait) for a
// quota published as at most limit calls per window, such that the bucket
// never admits more than limit calls in any span of window, its two ends
// included, wherever the backend's windows start (a sliding window is the
// strictest reading).
//
// Such a bucket admits at most burst + rate·window calls in a span of
// window: the burst it holds at the start, then the refill. Sizing it at
// limit/window lets the burst come on top of a full window of refill (610
// calls in a minute for 600 a minute at 10/s, burst 10). WindowRate takes
// the burst out of the window instead:
//
//	rate  = (limit − burst) / window
//	burst = one second's worth at that rate, in whole tokens
//
// that is, burst = ⌈limit / (window + 1s)⌉ and rate = (limit − burst) /
// window (or burst − 1 a second, when that is more and still safe), so
// that ⌈rate⌉ + rate·window ≤ limit. For 600 a minute it is 590/60 ≈ 9.83
// a second with a burst of 10; for 300 per 10 seconds 27.2 a second with a
// burst of 28. A sustained load then gets about window/(window + 1s) of
// the quota (98% of a per-minute one), and its first window all of it.
//
// A limit of 1 gets one call per window (calls exactly window apart, which
// a sliding window still admits); a limit below 1 or a window of 0 or less
// gets 0.
func WindowRate(limit int, window time.Duration) (perSecond float64) {
	if limit < 1 || window <= 0 {
		return 0
	}
	w := window.Seconds()
	if limit == 1 {
		return 1 / w
	}
	burst := math.Ceil(float64(limit) / (w + 1))
	return max((float64(limit)-burst)/w, burst-1)
}

// callShare is the part of the time a call has left that a token wait
// leaves for the call itself: a wait may use at most 1 − 1/callShare of it.
// A token that comes just before the deadline is no use: the call after it
// would run out of time and fail as a deadline error, which spends a retry
// attempt, where a client-side throttle (ErrOwnLimit) does not.
const callShare = 4

// TokenInTime reports whether a wait of d for a rate-limit token leaves a
// call under ctx its share of the time to ctx's deadline (always, without
// one). Every client-side limiter, local or cluster-wide, decides with it.
func TokenInTime(ctx context.Context, d time.Duration) bool {
	dl, ok := ctx.Deadline()
	if !ok {
		return true
	}
	left := time.Until(dl)
	return d <= left-left/callShare
}

// WaitTokens takes one token from each limiter, waiting for the slowest.
// When the wait would not leave the call a quarter of the time to ctx's
// deadline (callShare), it takes none and returns at once an error
// wrapping ErrThrottled and ErrOwnLimit together with the wait needed, so
// a provider can fail with a Throttled *Error whose RetryAfter is that
// wait, instead of holding a worker until a call that cannot finish. A
// context ended while waiting returns its error.
//
// A ctx marked PriorityBulk (WithPriority) takes only what interactive
// calls leave (waitBulk): it never books a future token, so interactive
// calls, which do, go first however many bulk calls wait.
func WaitTokens(ctx context.Context, lims ...*rate.Limiter) (time.Duration, error) {
	if PriorityOf(ctx) == PriorityBulk {
		return waitBulk(ctx, lims)
	}
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
	if !TokenInTime(ctx, d) {
		cancel()
		return d, fmt.Errorf("%w: client-side rate limit needs %v, more than the call can spare before its deadline (%w)", ErrThrottled, d.Round(time.Millisecond), ErrOwnLimit)
	}
	if err := ctxtime.Sleep(ctx, d); err != nil {
		cancel()
		return 0, err
	}
	return 0, nil
}

// bulkSpare is how many tokens a bulk call leaves in a bucket that holds
// more than one: an interactive call arriving at a bucket bulk calls keep
// drained still finds one at once. (A bucket of one token is left nothing:
// bulk calls would never run.)
const bulkSpare = 1

// waitBulk takes one token from each limiter for a bulk call, only when
// each holds one beyond bulkSpare now; otherwise it sleeps until the
// slowest would and looks again, holding no reservation meanwhile. While
// interactive calls keep a limiter busy, their reservations take each new
// token first and bulk calls wait; with none, bulk calls get the whole
// rate (less the spare token, once). Like WaitTokens, a wait that would not
// leave the call its share of the time to ctx's deadline returns at once
// with ErrThrottled and that wait.
func waitBulk(ctx context.Context, lims []*rate.Limiter) (time.Duration, error) {
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		now := time.Now()
		d := time.Duration(0)
		for _, l := range lims {
			lim := l.Limit()
			if lim == rate.Inf {
				continue
			}
			need := 1.0
			if l.Burst() > bulkSpare {
				need += bulkSpare
			}
			if have := l.TokensAt(now); have < need {
				if lim <= 0 {
					d = max(d, time.Hour) // never refilled
					continue
				}
				d = max(d, time.Duration((need-have)/float64(lim)*float64(time.Second))+time.Millisecond)
			}
		}
		if d == 0 {
			// Take them, unless an interactive call got there between the
			// look and the take.
			rs := make([]*rate.Reservation, 0, len(lims))
			took := true
			for _, l := range lims {
				r := l.ReserveN(now, 1)
				rs = append(rs, r)
				if !r.OK() || r.DelayFrom(now) > 0 {
					took = false
					break
				}
			}
			if took {
				return 0, nil
			}
			for _, r := range rs {
				r.CancelAt(now)
			}
			d = time.Millisecond
		}
		if !TokenInTime(ctx, d) {
			return d, fmt.Errorf("%w: client-side rate limit needs %v for a bulk call, more than the call can spare before its deadline (%w)", ErrThrottled, d.Round(time.Millisecond), ErrOwnLimit)
		}
		if t == nil {
			t = time.NewTimer(d)
		} else {
			t.Reset(d)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}
