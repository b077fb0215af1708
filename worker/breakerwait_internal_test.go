package worker

import (
	"testing"
	"time"
)

// TestBreakerWaitGrowsWithTheOutage: an event that finds its backend's
// breaker open follows the breaker's probe while the outage is young; once
// it has lasted park_after the event is parked for at least park_after,
// and for at least a quarter of the outage so far, capped at parkMaxDelay
// (each with up to half as much again as jitter), so a long outage's
// parked events come back less and less often.
func TestBreakerWaitGrowsWithTheOutage(t *testing.T) {
	w := &Worker{cfg: Config{ParkAfter: 10 * time.Second, BreakerOpen: 2 * time.Second},
		retry: retryPolicy{initial: 100 * time.Millisecond, max: 30 * time.Second, multiplier: 2}}
	tests := map[string]struct {
		down     time.Duration // 0: breaker closed
		n        uint64
		min, max time.Duration
	}{
		"young outage: the probe's period":      {down: 3 * time.Second, n: 1, min: time.Second, max: 3 * time.Second},
		"at park_after: parked for park_after":  {down: 10 * time.Second, n: 1, min: 10 * time.Second, max: 15 * time.Second},
		"many deliveries: the failure backoff":  {down: 20 * time.Second, n: 30, min: 15 * time.Second, max: 45 * time.Second},
		"ten minutes down: a quarter of it":     {down: 10 * time.Minute, n: 1, min: 150 * time.Second, max: 225 * time.Second},
		"an hour down: parkMaxDelay at most":    {down: time.Hour, n: 1, min: parkMaxDelay, max: parkMaxDelay * 3 / 2},
		"a day down, many deliveries: the same": {down: 24 * time.Hour, n: 64, min: parkMaxDelay, max: parkMaxDelay * 3 / 2},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			g := &backendGuard{}
			g.downSince.Store(time.Now().Add(-tc.down).UnixNano())
			for range 200 {
				if d := w.breakerWait(g, tc.n); d < tc.min || d > tc.max {
					t.Fatalf("breakerWait = %v, want %v to %v", d, tc.min, tc.max)
				}
			}
		})
	}
	// Parking off: always the probe's period, however long the outage.
	off := &Worker{cfg: Config{ParkAfter: -1, BreakerOpen: 2 * time.Second}, retry: w.retry}
	g := &backendGuard{}
	g.downSince.Store(time.Now().Add(-time.Hour).UnixNano())
	if d := off.breakerWait(g, 1); d > 3*time.Second {
		t.Fatalf("parking off: breakerWait = %v", d)
	}
}
