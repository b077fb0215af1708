package gopool

import (
	"runtime"
	"sync"
	"testing"
	"time"
)

// Go never queues: functions that each wait for all the others to start
// finish only if every one of them runs at once.
func TestGoNeverQueues(t *testing.T) {
	p := New(time.Minute)
	const n = 32
	var started, done sync.WaitGroup
	started.Add(n)
	done.Add(n)
	all := make(chan struct{})
	for range n {
		p.Go(func() {
			started.Done()
			<-all
			done.Done()
		})
	}
	ok := make(chan struct{})
	go func() { started.Wait(); close(ok) }()
	select {
	case <-ok:
	case <-time.After(10 * time.Second):
		t.Fatal("functions handed to Go waited for others to finish: it queued them")
	}
	close(all)
	done.Wait()
}

// Functions handed over one after another run on a goroutine that ran
// one before, and the goroutines exit once idle for the pool's idle time.
func TestGoReusesAndThenExits(t *testing.T) {
	before := runtime.NumGoroutine()
	p := New(2 * time.Second)
	ids := map[uint64]bool{}
	for range 50 {
		ch := make(chan uint64)
		p.Go(func() { ch <- goid() })
		ids[<-ch] = true
		// Let the goroutine get back to waiting for work. waiting counts
		// it just before it blocks on the hand-over, so a Go right after
		// may still find nobody receiving and start a second goroutine
		// (as `go` would): rare, and allowed below. So is one more after a
		// test goroutine starved past the idle time on a loaded machine.
		eventually(t, "the pool's goroutine never went back to waiting", func() bool { return p.waiting.Load() >= 1 })
	}
	if len(ids) > 3 {
		t.Fatalf("50 functions handed over one at a time ran on %d goroutines, want them reused (at most 3)", len(ids))
	}
	eventuallyWithin(t, 30*time.Second, "the idle goroutines did not exit", func() bool { return runtime.NumGoroutine() <= before })
}

func TestNewDefaultsIdle(t *testing.T) {
	for name, tc := range map[string]struct {
		in, want time.Duration
	}{
		"zero":     {0, DefaultIdle},
		"negative": {-time.Second, DefaultIdle},
		"set":      {3 * time.Second, 3 * time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			if got := New(tc.in).idle; got != tc.want {
				t.Fatalf("New(%v).idle = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	eventuallyWithin(t, 5*time.Second, what, cond)
}

func eventuallyWithin(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal(what)
		}
	}
}

// goid returns the calling goroutine's id, read from its stack header.
func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	// "goroutine 123 [running]:..."
	var id uint64
	for _, c := range b[len("goroutine "):] {
		if c < '0' || c > '9' {
			break
		}
		id = id*10 + uint64(c-'0')
	}
	return id
}
