package worker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/settings"
)

func settingsWorker(borrow time.Duration) settings.WorkerConfig {
	w := settings.Default().Keyrelay.Worker
	w.BackendBorrowBelow = borrow
	return w
}

// TestBulkheadBorrowsWhileFast: a backend holds its share of the slots,
// borrows the rest of the process's slots while its calls are fast, and
// falls back to its share as soon as one call is in flight for longer than
// the borrowing bound; it borrows again once its calls are fast again.
func TestBulkheadBorrowsWhileFast(t *testing.T) {
	const share, total, below = 2, 6, 50 * time.Millisecond
	const most = total // every call slot of the lane
	g := newBackendGuards(share, total, below, 8, time.Second, NewMetrics(nil))
	bg := g.get(guardKey("local", nil), "local")
	ctx := context.Background()
	take := func(n int) (releases []func(), err error) {
		for i := 0; i < n; i++ {
			r, err := bg.acquire(ctx, 5*time.Millisecond)
			if err != nil {
				return releases, err
			}
			releases = append(releases, r)
		}
		return releases, nil
	}
	releaseAll := func(rs []func()) {
		for _, r := range rs {
			r()
		}
	}

	// Fast (no call yet): every call slot of the lane.
	rs, err := take(most)
	if err != nil {
		t.Fatalf("fast backend: %d slots, then %v; want %d", len(rs), err, most)
	}
	if _, err := bg.acquire(ctx, 5*time.Millisecond); !errors.Is(err, errBackendBusy) {
		t.Fatalf("slot %d: %v, want errBackendBusy", most+1, err)
	}
	releaseAll(rs)

	// A call in flight for longer than the bound: back to the share.
	stuck := make(chan struct{})
	go func() { _ = bg.call(func() error { <-stuck; return nil }) }()
	time.Sleep(2 * below)
	rs, err = take(total)
	if len(rs) != share || !errors.Is(err, errBackendBusy) {
		t.Fatalf("with a slow call in flight: %d slots (%v), want the share %d", len(rs), err, share)
	}
	releaseAll(rs)
	close(stuck)

	// Its average is now slow too: still the share, until fast calls
	// bring the average under the bound again.
	time.Sleep(10 * time.Millisecond)
	if bg.fast() {
		t.Fatal("fast right after a slow call")
	}
	for i := 0; i < 40 && !bg.fast(); i++ {
		_ = bg.call(func() error { return nil })
	}
	rs, err = take(most)
	if err != nil {
		t.Fatalf("fast again: %d slots, then %v; want %d", len(rs), err, most)
	}
	releaseAll(rs)

	// Borrowing off: the share only.
	g0 := newBackendGuards(share, total, 0, 8, time.Second, NewMetrics(nil))
	rs, err = func() ([]func(), error) { bg = g0.get(guardKey("local", nil), "local"); return take(total) }()
	if len(rs) != share || !errors.Is(err, errBackendBusy) {
		t.Fatalf("borrowing off: %d slots (%v), want %d", len(rs), err, share)
	}
}

// TestBorrowSetting: the setting's 0 means never borrow, its default the
// worker's 250ms.
func TestBorrowSetting(t *testing.T) {
	for in, want := range map[time.Duration]time.Duration{0: -1, 250 * time.Millisecond: 250 * time.Millisecond, time.Second: time.Second} {
		if got := ConfigFrom(settingsWorker(in)).BackendBorrowBelow; got != want {
			t.Errorf("backend_borrow_below %v: Config %v, want %v", in, got, want)
		}
	}
}
