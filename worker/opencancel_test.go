package worker_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/worker"
)

// stallingOpener opens through events.Opener, but while stall is set it
// waits for its caller's context to end and then fails as the KMS wrappers
// do (seal.Sealer): a retryable error holding context.Canceled.
type stallingOpener struct {
	events.Opener
	stall   atomic.Bool
	entered chan struct{}
}

func (o *stallingOpener) Open(ctx context.Context, sv *events.SealedValue, b events.Binding) ([]byte, error) {
	if o.stall.Load() {
		select {
		case o.entered <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return nil, providers.NewError("aws_kms", "Unwrap", "", providers.Retryable, fmt.Errorf("canceled: %w", ctx.Err()))
	}
	return o.Opener.Open(ctx, sv, b)
}

// TestShutdownWhileOpeningAValueHandsTheEventBack: a worker stopped while
// the KMS is slow to unwrap an event's data key (its Open fails with the
// worker's cancellation) hands the event back: it is not rejected, not
// dead-lettered, and the next worker stores it.
func TestShutdownWhileOpeningAValueHandsTheEventBack(t *testing.T) {
	b := setup(t, setupOptions{})
	op := &stallingOpener{Opener: b.kr, entered: make(chan struct{}, 1)}
	op.stall.Store(true)
	wc := worker.Config{Concurrency: 4, AckWait: b.topo.AckWait, MaxDeliver: b.topo.MaxDeliver, CallTimeout: time.Second,
		ClaimLease: 3 * time.Second, RetryInitial: 5 * time.Millisecond, RetryMax: 100 * time.Millisecond, ShutdownGrace: 200 * time.Millisecond}
	w, err := worker.New(b.ctx, wc, worker.Deps{JS: b.js, Settings: b.cfg, Registry: b.reg, Opener: op, Logger: b.log, Metrics: b.metrics})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	evs := []*events.Event{b.keyEvent(events.KeyCreated, "team-a", "key-slow-kms", 1, "sk-slow")}
	b.publish(evs...)
	select {
	case <-op.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the worker never opened the event's value")
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("worker: %v", err)
	}
	if got := b.confirmationCounts()[evs[0].ID]; got != 0 {
		t.Fatalf("%d confirmations of the event after a shutdown during its Open; want none (handed back)", got)
	}
	if n := len(b.rawMessages(worker.DLQStream)); n != 0 {
		t.Fatalf("%d dead letters after a shutdown during an Open; want 0", n)
	}
	op.stall.Store(false)
	b.startWorker(nil)
	for id, c := range b.waitConfirmed(evs, 30*time.Second) {
		if c.Status != events.StatusStored {
			t.Errorf("%s: %s %s; want stored", id, c.Status, c.Reason)
		}
	}
}
