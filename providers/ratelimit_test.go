package providers

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestWaitTokens(t *testing.T) {
	l := NewLimiter(1) // one token per second, burst 1
	if d, err := WaitTokens(context.Background(), l); err != nil || d != 0 {
		t.Fatalf("first token: %v %v", d, err)
	}
	// The next token is a second away; a 100 ms deadline fails at once
	// (before the deadline, which a wait would have run into).
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	d, err := WaitTokens(ctx, l)
	if !errors.Is(err, ErrThrottled) || d < 500*time.Millisecond || time.Since(start) >= 100*time.Millisecond {
		t.Fatalf("got %v %v after %v; want ErrThrottled with the wait, at once", d, err, time.Since(start))
	}
	// A token that would come with too little time left for the call
	// (a second's wait, 1.2 s left) is not waited for either: the call
	// would fail on its deadline and spend a retry attempt.
	ctx1, cancel1 := context.WithTimeout(context.Background(), 1200*time.Millisecond)
	defer cancel1()
	start = time.Now()
	d, err = WaitTokens(ctx1, l)
	if !errors.Is(err, ErrThrottled) || !errors.Is(err, ErrOwnLimit) || d < 500*time.Millisecond || time.Since(start) >= 500*time.Millisecond {
		t.Fatalf("got %v %v after %v; want ErrThrottled with the wait, at once, leaving the call no time", d, err, time.Since(start))
	}
	// Nothing was taken: with a long deadline the token comes after the wait.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel2()
	if _, err := WaitTokens(ctx2, l); err != nil {
		t.Fatal(err)
	}
	// A cancelled context ends the wait with its error.
	ctx3, cancel3 := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel3() }()
	if _, err := WaitTokens(ctx3, l); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

// admittedIn returns how many calls a limiter of perSecond admits in the
// span [0, window], both ends included, to callers taking every token as
// soon as it comes, starting with a full bucket.
func admittedIn(perSecond float64, window time.Duration) int {
	l := NewLimiter(perSecond)
	t0 := time.Unix(1_700_000_000, 0)
	n := 0
	for {
		r := l.ReserveN(t0, 1)
		if !r.OK() || r.DelayFrom(t0) > window {
			return n
		}
		n++
	}
}

func TestWindowRate(t *testing.T) {
	for name, tc := range map[string]struct {
		limit  int
		window time.Duration
		want   float64
	}{
		"600 a minute":       {600, time.Minute, 590.0 / 60},
		"90,000 a minute":    {90000, time.Minute, (90000 - 1476) / 60.0},
		"300 per 10 seconds": {300, 10 * time.Second, 27.2},
		"60 per 6 seconds":   {60, 6 * time.Second, 8.5},
		"one per minute":     {1, time.Minute, 1.0 / 60},
		"none":               {0, time.Minute, 0},
		"no window":          {10, 0, 0},
	} {
		t.Run(name, func(t *testing.T) {
			if got := WindowRate(tc.limit, tc.window); math.Abs(got-tc.want) > 1e-9 {
				t.Fatalf("WindowRate(%d, %v) = %v, want %v", tc.limit, tc.window, got, tc.want)
			}
		})
	}

	// The bucket NewLimiter builds at WindowRate never admits more than
	// limit in a window, ends included, and no more than about a second's
	// worth less; at limit/window it admits more.
	for _, w := range []time.Duration{500 * time.Millisecond, time.Second, 6 * time.Second, 10 * time.Second, time.Minute} {
		for _, limit := range []int{2, 3, 5, 7, 10, 59, 60, 61, 100, 300, 600, 4000} {
			r := WindowRate(limit, w)
			got := admittedIn(r, w)
			if got > limit {
				t.Errorf("limit %d per %v: rate %v admits %d in a window", limit, w, r, got)
			}
			if floor := limit - int(math.Ceil(float64(limit)/(w.Seconds()+1))) - 1; got < floor {
				t.Errorf("limit %d per %v: rate %v admits only %d in a window, want at least %d", limit, w, r, got, floor)
			}
		}
	}
	if got := admittedIn(600.0/60, time.Minute); got <= 600 {
		t.Errorf("600 a minute at 10/s admits %d in a minute; the test shows nothing", got)
	}
}

// TestWaitTokensBulkGoesLast: bulk calls (PriorityBulk) keep a limiter
// busy, and interactive calls still get the next tokens: each interactive
// call lets at most a couple of bulk calls through while it waits, where
// bulk calls holding reservations would put it behind all of them. Bulk
// calls alone get the whole rate, and their waits end with the context
// like any other.
func TestWaitTokensBulkGoesLast(t *testing.T) {
	l := NewLimiter(20) // 20 a second, burst 20
	bulk := WithPriority(context.Background(), PriorityBulk)
	ctx, cancel := context.WithCancel(bulk)
	var bulkTaken atomic.Int64
	var wg sync.WaitGroup
	const bulkCallers = 16
	for range bulkCallers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, err := WaitTokens(ctx, l); err != nil {
					return
				}
				bulkTaken.Add(1)
			}
		}()
	}
	// Bulk alone: the burst (less the spare token) and then the rate.
	time.Sleep(time.Second)
	if n := bulkTaken.Load(); n < 25 {
		t.Fatalf("bulk calls alone took %d tokens in a second from a 20/s limiter with a burst of 20", n)
	}
	worst := int64(0)
	for range 10 {
		before := bulkTaken.Load()
		if _, err := WaitTokens(context.Background(), l); err != nil {
			t.Fatal(err)
		}
		worst = max(worst, bulkTaken.Load()-before)
	}
	cancel()
	wg.Wait()
	// Without priorities each bulk caller holds a reservation, and an
	// interactive call waits for all 16 of them.
	if worst > 3 {
		t.Errorf("an interactive call waited while %d bulk calls took tokens; want at most 3", worst)
	}
	t.Logf("bulk calls took %d tokens; an interactive call let at most %d bulk calls through", bulkTaken.Load(), worst)

	// A bulk wait the deadline cannot cover fails at once as throttled.
	l2 := NewLimiter(1)
	if _, err := WaitTokens(context.Background(), l2); err != nil {
		t.Fatal(err)
	}
	dctx, dcancel := context.WithTimeout(bulk, 100*time.Millisecond)
	defer dcancel()
	d, err := WaitTokens(dctx, l2)
	if !errors.Is(err, ErrThrottled) || !errors.Is(err, ErrOwnLimit) || d < 500*time.Millisecond {
		t.Fatalf("bulk call with a short deadline: %v, %v; want ErrThrottled with the wait", d, err)
	}
}
