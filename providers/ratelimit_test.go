package providers

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestWaitTokens(t *testing.T) {
	l := NewLimiter(1) // one token per second, burst 1
	if d, err := WaitTokens(context.Background(), l); err != nil || d != 0 {
		t.Fatalf("first token: %v %v", d, err)
	}
	// The next token is a second away; a 100 ms deadline fails at once.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	d, err := WaitTokens(ctx, l)
	if !errors.Is(err, ErrThrottled) || d < 500*time.Millisecond || time.Since(start) > 50*time.Millisecond {
		t.Fatalf("got %v %v after %v; want ErrThrottled with the wait, at once", d, err, time.Since(start))
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
