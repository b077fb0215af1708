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
