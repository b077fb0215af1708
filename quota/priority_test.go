package quota

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/providers"
)

// The quota the priority tests share out: 20 calls per second, so one
// member alone holds 19/s (Margin 0.95), burst 19, interactive reserve 1.
const prioRate = 20.0

// bulkCtx marks ctx's calls as the bulk lane's.
func bulkCtx(ctx context.Context) context.Context {
	return providers.WithPriority(ctx, providers.PriorityBulk)
}

// flood calls Wait from workers goroutines as fast as tokens come until
// ctx ends (marked PriorityBulk when bulk), recording every token as
// member i's. Any error other than ctx's is counted.
func flood(ctx context.Context, m *Manager, name string, bulk bool, i, workers int, tk *takes) *sync.WaitGroup {
	cctx := ctx
	if bulk {
		cctx = bulkCtx(ctx)
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if _, err := m.Wait(cctx, name, prioRate); err != nil {
					if ctx.Err() == nil {
						tk.err.Add(1)
					}
					continue
				}
				tk.add(i, time.Now())
			}
		}()
	}
	return &wg
}

// interactive calls Wait (unmarked) every period until ctx ends, recording
// every token as member i's and how long each call waited; a call still
// waiting when ctx ends is recorded too (its wait so far), in cut.
func interactive(ctx context.Context, m *Manager, name string, period time.Duration, i int, tk *takes, waits *[]time.Duration, cut *time.Duration) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			t0 := time.Now()
			if _, err := m.Wait(ctx, name, prioRate); err != nil {
				if ctx.Err() == nil {
					tk.err.Add(1)
				} else {
					tk.mu.Lock()
					*cut = time.Since(t0)
					tk.mu.Unlock()
				}
				continue
			}
			now := time.Now()
			tk.add(i, now)
			tk.mu.Lock()
			*waits = append(*waits, now.Sub(t0))
			tk.mu.Unlock()
		}
	}()
	return &wg
}

// waitStats summarizes waits: max, mean, 95th percentile.
func waitStats(waits []time.Duration) (worst, mean, p95 time.Duration) {
	if len(waits) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(waits)
	slices.Sort(s)
	var sum time.Duration
	for _, w := range s {
		sum += w
	}
	return s[len(s)-1], sum / time.Duration(len(s)), s[(len(s)*95)/100]
}

// withShare starts one member and waits until it holds the whole limit of
// the quota named name (19/s), taking one interactive token.
func withShare(t *testing.T, url, name string) *Manager {
	t.Helper()
	m := newMember(t, []string{url}, Config{}).m
	if _, err := m.Wait(context.Background(), name, prioRate); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the member holds the limit", func() bool {
		return stats(m, name).Share >= 0.99*0.95*prioRate
	})
	return m
}

// queued returns how many bulk calls are queued on the quota named name,
// and how many Waits of any priority are blocked on it.
func queued(m *Manager, name string) (bulk, waiting int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if q := m.quotas[name]; q != nil {
		return len(q.bulk), q.waiting
	}
	return 0, 0
}

// TestPriority: one member, a quota of 20/s (19/s shared, burst 19,
// interactive reserve 1 token).
func TestPriority(t *testing.T) {
	srv := testenv.StartNATS(t)
	t.Run("InteractiveAheadOfBulkFlood", func(t *testing.T) { testInteractiveAhead(t, srv.URL) })
	t.Run("BulkAloneUsesTheShare", func(t *testing.T) { testBulkAlone(t, srv.URL) })
	t.Run("BulkDeadline", func(t *testing.T) { testBulkDeadline(t, srv.URL) })
}

// testInteractiveAhead: 16 goroutines call Wait marked PriorityBulk as fast
// as tokens come while one caller makes an interactive call every 200 ms
// (5/s), for 6 s once the member holds the limit and the flood has run
// for 1 s.
//
// Asserted: no Wait fails; every interactive call returns within one token
// interval plus scheduling slack: 1/share + 100 ms (52.6 + 100 ms); the
// bulk calls get >= 0.8 of what the interactive ones leave
// (0.8 × (19 − interactive rate)); all takes conform to a 20/s bucket with
// burst 20. Logged: the interactive waits (max, mean, 95th percentile),
// both rates, and, for contrast, the interactive waits over 3 s with the
// same flood left unmarked (every call interactive: the interactive calls
// queue behind the flood's reservations).
func testInteractiveAhead(t *testing.T, url string) {
	const name = "aws_secret_manager/111111111111/us-east-1/write"
	m := withShare(t, url, name)
	share := stats(m, name).Share
	interval := time.Duration(float64(time.Second) / share)
	tk := newTakes(2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bulk := flood(ctx, m, name, true, 1, 16, tk)
	time.Sleep(time.Second)
	var waits []time.Duration
	var cut time.Duration
	ictx, stopInteractive := context.WithCancel(ctx)
	inter := interactive(ictx, m, name, 200*time.Millisecond, 0, tk, &waits, &cut)
	start := time.Now()
	time.Sleep(6 * time.Second)
	end := time.Now()
	stopInteractive()
	inter.Wait()
	s := stats(m, name)
	cancel()
	bulk.Wait()

	sec := end.Sub(start).Seconds()
	iRate := float64(tk.count(start, end, 0)) / sec
	bRate := float64(tk.count(start, end, 1)) / sec
	tk.mu.Lock()
	worst, mean, p95 := waitStats(append(waits, cut))
	n := len(waits)
	tk.mu.Unlock()
	all := tk.all()
	t.Logf("share %.2f/s (token interval %v), demand %.2f; 6 s: interactive %d calls, %.2f/s, waits max %v mean %v p95 %v; bulk %.2f/s (%.2f of the %.2f/s left); total %.2f/s; min burst at 20/s %.1f",
		share, interval.Round(100*time.Microsecond), s.Demand, n, iRate, worst.Round(time.Microsecond), mean.Round(time.Microsecond),
		p95.Round(time.Microsecond), bRate, bRate/(share-iRate), share-iRate, iRate+bRate, minBurst(all, prioRate))
	if e := tk.err.Load(); e > 0 {
		t.Errorf("%d Wait errors", e)
	}
	if bound := interval + 100*time.Millisecond; worst > bound {
		t.Errorf("an interactive call waited %v behind the bulk flood, more than one token interval plus slack (%v)", worst, bound)
	}
	if n < 20 {
		t.Errorf("only %d interactive calls in 6 s", n)
	}
	if want := 0.8 * (share - iRate); bRate < want {
		t.Errorf("bulk got %.2f/s, want >= %.2f (0.8 of what the interactive calls left)", bRate, want)
	}
	if b := minBurst(all, prioRate); b > prioRate {
		t.Errorf("the takes need a burst of %.1f at 20/s, more than 20", b)
	}

	// Contrast, logged only: the same flood without the bulk mark.
	const plain = "aws_secret_manager/111111111111/us-east-1/control"
	if _, err := m.Wait(context.Background(), plain, prioRate); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the member holds the limit", func() bool {
		return stats(m, plain).Share >= 0.99*0.95*prioRate
	})
	tk2 := newTakes(2)
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	unmarked := flood(ctx2, m, plain, false, 1, 16, tk2)
	time.Sleep(time.Second)
	var waits2 []time.Duration
	var cut2 time.Duration
	inter2 := interactive(ctx2, m, plain, 200*time.Millisecond, 0, tk2, &waits2, &cut2)
	time.Sleep(3 * time.Second)
	cancel2()
	inter2.Wait()
	unmarked.Wait()
	tk2.mu.Lock()
	worst2, mean2, _ := waitStats(waits2)
	n2 := len(waits2)
	tk2.mu.Unlock()
	t.Logf("contrast, flood unmarked: in 3 s interactive %d calls served, waits max %v mean %v; one still waiting for %v at the end",
		n2, worst2.Round(100*time.Microsecond), mean2.Round(100*time.Microsecond), cut2.Round(time.Millisecond))
}

// testBulkAlone: 16 goroutines call Wait marked PriorityBulk, nothing
// else, for 5 s once the member holds the limit and the flood has run for
// 1 s.
//
// Asserted: no Wait fails; bulk takes >= 0.9 of the share (the reserve is
// a level kept in the bucket, not a cut in the rate); the member announces
// the whole limit as its demand while only bulk calls wait (they count as
// demand, so a job gets the quota when the gateway is idle); the takes
// conform to a 20/s bucket with burst 20.
func testBulkAlone(t *testing.T, url string) {
	const name = "google_secret_manager/bulk-project/write"
	m := withShare(t, url, name)
	share := stats(m, name).Share
	tk := newTakes(1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bulk := flood(ctx, m, name, true, 0, 16, tk)
	time.Sleep(time.Second)
	start := time.Now()
	time.Sleep(5 * time.Second)
	end := time.Now()
	s := stats(m, name)
	cancel()
	bulk.Wait()
	rate := float64(tk.count(start, end)) / end.Sub(start).Seconds()
	all := tk.all()
	t.Logf("share %.2f/s; bulk alone %.2f/s (%.3f of the share), per second %v; demand %.2f of limit %.2f; min burst at 20/s %.1f",
		share, rate, rate/share, perWindow(all, start, time.Second, 5), s.Demand, s.Limit, minBurst(all, prioRate))
	if e := tk.err.Load(); e > 0 {
		t.Errorf("%d Wait errors", e)
	}
	if rate < 0.9*share {
		t.Errorf("bulk alone got %.2f/s, want >= %.2f (0.9 of the share)", rate, 0.9*share)
	}
	if s.Demand < s.Limit {
		t.Errorf("demand %.2f while bulk calls wait, want the limit %.2f", s.Demand, s.Limit)
	}
	if b := minBurst(all, prioRate); b > prioRate {
		t.Errorf("the takes need a burst of %.1f at 20/s, more than 20", b)
	}
}

// testBulkDeadline: the deadline semantics of Wait for bulk calls. When
// the token cannot come before ctx's deadline, Wait returns at once the
// wait needed (counting the interactive reserve and the bulk calls queued
// ahead) with ErrThrottled and takes nothing, joining included; a context
// cancelled while queued returns its error and leaves the queue; with
// time enough the token comes; Close ends queued bulk calls with
// ErrClosed.
func testBulkDeadline(t *testing.T, url string) {
	const name = "azure_key_vault/=deadline.example/write"
	m := newMember(t, []string{url}, Config{}).m
	at := func(ctx context.Context) (time.Duration, time.Duration, error) {
		t0 := time.Now()
		d, err := m.Wait(bulkCtx(ctx), name, prioRate)
		return d, time.Since(t0), err
	}
	short := func(d time.Duration) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		t.Cleanup(cancel)
		return ctx
	}

	// Joining: no share yet.
	d, took, err := at(short(10 * time.Millisecond))
	if !errors.Is(err, providers.ErrThrottled) || d <= 0 || took > 40*time.Millisecond {
		t.Fatalf("joining: Wait = %v, %v after %v; want ErrThrottled with a wait, at once", d, err, took)
	}
	t.Logf("joining: ErrThrottled after %v, retry after %v", took.Round(time.Microsecond), d.Round(time.Millisecond))

	// An interactive call takes the first token: the bucket is empty then.
	if _, err := m.Wait(context.Background(), name, prioRate); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the member holds the limit", func() bool { return stats(m, name).Share >= 0.99*0.95*prioRate })
	share := stats(m, name).Share
	interval := time.Duration(float64(time.Second) / share)
	// Interactive calls drain the bucket: once one has had to wait for its
	// token, the bucket is empty.
	for i := 0; ; i++ {
		t0 := time.Now()
		if _, err := m.Wait(context.Background(), name, prioRate); err != nil {
			t.Fatal(err)
		}
		if time.Since(t0) >= interval/2 {
			break
		}
		if i == 40 {
			t.Fatal("40 interactive calls and the bucket is not empty")
		}
	}

	// A bulk call needs the reserve (1 token) and its own: ~2/19 s, where
	// an interactive call would need ~1/19 s.
	taken := stats(m, name).Taken
	d, took, err = at(short(30 * time.Millisecond))
	if !errors.Is(err, providers.ErrThrottled) || d < interval*3/2 || d > 2*interval+time.Millisecond || took > 40*time.Millisecond {
		t.Fatalf("empty bucket: Wait = %v, %v after %v; want ErrThrottled with about %v (reserve included), at once", d, err, took, 2*interval)
	}
	t.Logf("empty bucket: ErrThrottled after %v, retry after %v (token interval %v: the reserve of 1 is counted)",
		took.Round(time.Microsecond), d.Round(100*time.Microsecond), interval.Round(100*time.Microsecond))
	if got := stats(m, name).Taken; got != taken {
		t.Errorf("a refused bulk Wait took a token (taken %d, was %d)", got, taken)
	}

	// No token was taken: waiting now takes about d.
	_, waited, err := at(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bulk token after %v", waited.Round(time.Millisecond))
	if waited > d+100*time.Millisecond {
		t.Errorf("after a refused Wait the bulk token took %v, want about %v", waited, d)
	}
	// The bulk call left the reserve: an interactive call finds it at once.
	t0 := time.Now()
	if _, err := m.Wait(context.Background(), name, prioRate); err != nil {
		t.Fatal(err)
	}
	if w := time.Since(t0); w > 40*time.Millisecond { // without the reserve: ~1/19 s
		t.Errorf("interactive call after a bulk one waited %v, want the reserve at once", w)
	} else {
		t.Logf("interactive call after a bulk one: the reserve, after %v", w.Round(time.Microsecond))
	}

	// Queued behind 20 bulk calls: the wait told counts them.
	qctx, qcancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var ended sync.Map
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := m.Wait(bulkCtx(qctx), name, prioRate)
			ended.Store(i, err)
		}()
	}
	waitFor(t, 2*time.Second, "20 bulk calls queued", func() bool { n, _ := queued(m, name); return n >= 15 })
	n, _ := queued(m, name)
	d, took, err = at(short(200 * time.Millisecond))
	if !errors.Is(err, providers.ErrThrottled) || d < time.Duration(n-3)*interval || took > 40*time.Millisecond {
		t.Fatalf("behind %d bulk calls: Wait = %v, %v after %v; want ErrThrottled with at least %v, at once", n, d, err, took, time.Duration(n-3)*interval)
	}
	t.Logf("behind %d queued bulk calls: ErrThrottled after %v, retry after %v", n, took.Round(time.Microsecond), d.Round(time.Millisecond))

	// Cancelled while queued: ctx's error, and the queue is left.
	qcancel()
	wg.Wait()
	var cancelled int
	ended.Range(func(_, v any) bool {
		if err, _ := v.(error); errors.Is(err, context.Canceled) {
			cancelled++
		} else if err != nil {
			t.Errorf("queued bulk call cancelled: %v, want context.Canceled or a token", err)
		}
		return true
	})
	if b, w := queued(m, name); b != 0 || w != 0 {
		t.Errorf("after the cancellations: %d bulk calls queued, %d waiting, want none", b, w)
	}
	t.Logf("%d of the 20 queued calls cancelled, %d served before", cancelled, 20-cancelled)

	// With time enough the token comes.
	if _, took, err = at(short(2 * time.Second)); err != nil {
		t.Fatalf("with 2 s left: %v", err)
	}
	t.Logf("with 2 s left: token after %v", took.Round(time.Millisecond))

	// Close ends the queued calls.
	errs := make(chan error, 40)
	for range 40 {
		go func() {
			_, err := m.Wait(bulkCtx(context.Background()), name, prioRate)
			errs <- err
		}()
	}
	waitFor(t, 2*time.Second, "40 bulk calls queued", func() bool { n, _ := queued(m, name); return n >= 30 })
	m.Close()
	var closed int
	for range 40 {
		select {
		case err := <-errs:
			if errors.Is(err, ErrClosed) {
				closed++
			} else if err != nil {
				t.Errorf("queued bulk call at Close: %v", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("queued bulk calls still blocked 2 s after Close (%d returned ErrClosed)", closed)
		}
	}
	if closed == 0 {
		t.Errorf("no queued bulk call returned ErrClosed")
	}
	t.Logf("Close: %d queued bulk calls returned ErrClosed", closed)
}

// TestLimiterBulk: the interactive reserve, and takeAbove leaving it.
func TestLimiterBulk(t *testing.T) {
	for burst, want := range map[float64]float64{0: 0, 1: 0, 2: 1, 9: 1, 19: 1, 20: 2, 28: 2, 47: 4, 600: 60} {
		if got := interactiveReserve(burst); got != want {
			t.Errorf("interactiveReserve(%v) = %v, want %v", burst, got, want)
		}
	}
	now := time.Unix(1000, 0)
	var l limiter
	l.set(now, 20, burstFor(20)) // reserve 2
	keep := interactiveReserve(l.burst)
	if d, ok := l.takeAbove(now, keep); ok || d != 150*time.Millisecond {
		t.Fatalf("empty bucket: %v %v, want 150ms (3 tokens at 20/s), none taken", d, ok)
	}
	now = now.Add(time.Second)
	for i := range 18 {
		if d, ok := l.takeAbove(now, keep); !ok || d != 0 {
			t.Fatalf("bulk token %d of 18: %v %v", i, d, ok)
		}
	}
	if d, ok := l.takeAbove(now, keep); ok || d != 50*time.Millisecond {
		t.Fatalf("at the reserve: %v %v, want 50ms, none taken", d, ok)
	}
	for i := range 2 {
		if d, ok := l.reserve(now, 0); !ok || d != 0 {
			t.Fatalf("interactive token %d of the reserve: %v %v", i, d, ok)
		}
	}
	if d, ok := l.takeAbove(now, keep); ok || d != 150*time.Millisecond {
		t.Fatalf("reserve spent: %v %v, want 150ms", d, ok)
	}
	// Waking when told, the bulk call finds its token.
	if d, ok := l.takeAbove(now.Add(150*time.Millisecond), keep); !ok || d != 0 {
		t.Fatalf("after the wait: %v %v", d, ok)
	}
	if d := l.until(5); d != 150*time.Millisecond {
		t.Errorf("until 5 tokens (2 held): %v, want 150ms", d)
	}
	// A burst of 1 has no reserve: bulk takes the only token.
	l.set(now.Add(time.Hour), 1.5, burstFor(1.5))
	if d, ok := l.takeAbove(now.Add(time.Hour), interactiveReserve(l.burst)); !ok || d != 0 {
		t.Errorf("burst 1: %v %v, want the token", d, ok)
	}
	l.set(now, 0, 0)
	if d, ok := l.takeAbove(now.Add(2*time.Hour), 0); ok || d != 0 {
		t.Errorf("rate 0 gave %v %v", d, ok)
	}
}
