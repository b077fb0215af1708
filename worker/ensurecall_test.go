package worker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyrelay/keyrelay/worker"
)

// TestEnsureCall: a call that times out (a create the cluster left
// unanswered) is made again with a longer deadline; any other error, and
// success, end it at once; so does the caller's context.
func TestEnsureCall(t *testing.T) {
	t.Parallel()
	t.Run("timeouts are tried again with longer deadlines", func(t *testing.T) {
		t.Parallel()
		var deadlines []time.Duration
		err := worker.EnsureCall(context.Background(), func(ctx context.Context) error {
			dl, _ := ctx.Deadline()
			deadlines = append(deadlines, time.Until(dl).Round(100*time.Millisecond))
			switch len(deadlines) {
			case 1:
				return context.DeadlineExceeded // the request's own deadline
			case 2:
				return nats.ErrTimeout
			}
			return nil
		})
		if err != nil || len(deadlines) != 3 {
			t.Fatalf("err %v after %d calls", err, len(deadlines))
		}
		if deadlines[0] != worker.TopologyCallTimeout || deadlines[1] != 2*worker.TopologyCallTimeout || deadlines[2] != 4*worker.TopologyCallTimeout {
			t.Fatalf("deadlines %v, want %v doubling", deadlines, worker.TopologyCallTimeout)
		}
	})
	t.Run("other errors end it", func(t *testing.T) {
		t.Parallel()
		calls := 0
		bad := errors.New("stream name already in use with a different configuration")
		if err := worker.EnsureCall(context.Background(), func(context.Context) error { calls++; return bad }); !errors.Is(err, bad) || calls != 1 {
			t.Fatalf("err %v after %d calls", err, calls)
		}
	})
	t.Run("the caller's context ends it", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := worker.EnsureCall(ctx, func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
			t.Fatalf("err %v after %v", err, time.Since(start))
		}
	})
}
