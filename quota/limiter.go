package quota

import (
	"math"
	"time"
)

// limiter is a member's local token bucket: refilled at rate tokens per
// second up to burst tokens. Unlike a rate.Limiter it never reserves a
// token further ahead than the horizon its caller gives, so that when the
// rate is lowered the tokens already promised at the former rate are all
// spent within the horizon; and a cancelled reservation gives its token
// back exactly. It starts empty, and a rate of 0 gives no token at all.
// Not safe for concurrent use (the Manager's lock guards it).
type limiter struct {
	rate   float64
	burst  float64
	tokens float64 // negative: tokens promised to reservations not yet due
	last   time.Time
}

// burstFor is the burst that goes with a share: one second's worth,
// rounded down, and at least one token (a share below one token per second
// still has to take whole tokens).
func burstFor(share float64) float64 {
	if !(share > 0) {
		return 0
	}
	return max(1, math.Floor(share))
}

func (l *limiter) advance(now time.Time) {
	if now.After(l.last) {
		if l.rate > 0 {
			l.tokens = min(l.burst, l.tokens+l.rate*now.Sub(l.last).Seconds())
		}
		l.last = now
	}
}

// set changes the rate and burst from now on; tokens above the new burst
// are dropped.
func (l *limiter) set(now time.Time, rate, burst float64) {
	l.advance(now)
	l.rate, l.burst = rate, burst
	l.tokens = min(l.tokens, burst)
}

// reserve takes one token if it is available now or within horizon, and
// returns the wait until it is due. Otherwise it takes none and returns
// false with the wait a token would need at the current rate (0 when the
// rate is 0: no token will come at this rate).
func (l *limiter) reserve(now time.Time, horizon time.Duration) (time.Duration, bool) {
	l.advance(now)
	if !(l.rate > 0) {
		return 0, false
	}
	if l.tokens >= 1 {
		l.tokens--
		return 0, true
	}
	d := time.Duration((1 - l.tokens) / l.rate * float64(time.Second))
	if d > horizon {
		return d, false
	}
	l.tokens--
	return d, true
}

// cancel gives back the token of a reservation that will not be used.
func (l *limiter) cancel(now time.Time) {
	l.advance(now)
	l.tokens = min(l.burst, l.tokens+1)
}

// reserveFraction is the part of a member's burst (one second of its
// share) that bulk calls leave in its local bucket for interactive ones:
// see interactiveReserve.
const reserveFraction = 0.1

// interactiveReserve is how many tokens bulk calls leave in a bucket of
// burst tokens: reserveFraction of it rounded down, at least one, so that
// an interactive call arriving while a bulk job saturates the quota finds
// a token at once; but never the whole burst, or bulk calls would get
// nothing (a share below 2/s, burst 1: no reserve). It is a level the
// bucket is kept at, not a rate: bulk calls still get every token
// interactive ones do not take.
func interactiveReserve(burst float64) float64 {
	if burst < 2 {
		return 0
	}
	return min(burst-1, max(1, math.Floor(burst*reserveFraction)))
}

// bulkSlack absorbs float rounding: a bulk call woken when the bucket
// reaches its level takes the token.
const bulkSlack = 1e-9

// takeAbove takes one token if the bucket holds one beyond keep tokens now:
// unlike reserve it never promises a token ahead, and never leaves fewer
// than keep. Otherwise it takes none and returns false with the wait until
// the bucket holds 1 + keep tokens at the current rate (0 when the rate is
// 0: no token will come at this rate).
func (l *limiter) takeAbove(now time.Time, keep float64) (time.Duration, bool) {
	l.advance(now)
	if !(l.rate > 0) {
		return 0, false
	}
	if l.tokens >= 1+keep-bulkSlack {
		l.tokens--
		return 0, true
	}
	return l.until(1 + keep), false
}

// until returns how long, from the last advance, until the bucket holds n
// tokens at the current rate (rounded up, at least a microsecond when it
// does not hold them yet; 0 when it does or the rate is 0). n may exceed
// the burst: it is then how long until that many tokens have come, for
// callers taking them one after the other.
func (l *limiter) until(n float64) time.Duration {
	if !(l.rate > 0) || l.tokens >= n-bulkSlack {
		return 0
	}
	return max(time.Microsecond, time.Duration(math.Ceil((n-l.tokens)/l.rate*float64(time.Second))))
}
