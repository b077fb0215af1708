package keyedlock

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestLockHonoursContext(t *testing.T) {
	var s Set
	unlock, err := s.Lock(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.Lock(ctx, "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("lock of a held key: %v, want the deadline", err)
	}
	other, err := s.Lock(context.Background(), "other")
	if err != nil {
		t.Fatalf("lock of another key: %v", err)
	}
	other()
	unlock()
	again, err := s.Lock(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	again()
	if n := s.size(); n != 0 {
		t.Errorf("%d entries left, want none", n)
	}
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	if _, err := s.Lock(done, "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("lock with an ended context: %v, want canceled", err)
	}
}

// TestLockExcludes: holders of one key never overlap.
func TestLockExcludes(t *testing.T) {
	var s Set
	var wg sync.WaitGroup
	var mu sync.Mutex
	in, maxIn := 0, 0
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock, err := s.Lock(context.Background(), "k")
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			in++
			maxIn = max(maxIn, in)
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			in--
			mu.Unlock()
			unlock()
		}()
	}
	wg.Wait()
	if maxIn != 1 {
		t.Errorf("%d holders at once, want 1", maxIn)
	}
	if n := s.size(); n != 0 {
		t.Errorf("%d entries left, want none", n)
	}
}
