package worker_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/worker"
)

// ownLimited refuses the first n writes as keyrelay's own rate limit does
// (Throttled, ErrOwnLimit: no call made).
type ownLimited struct {
	providers.Provider
	left *atomic.Int64
}

func (o ownLimited) Put(ctx context.Context, r providers.PutRequest) (providers.PutResult, error) {
	if o.left.Add(-1) >= 0 {
		e := providers.NewError("local", "put", r.Name, providers.Throttled,
			fmt.Errorf("%w: cluster-wide quota needs 1s, more than the call can spare before its deadline (%w)", providers.ErrThrottled, providers.ErrOwnLimit))
		e.RetryAfter = 5 * time.Millisecond
		return providers.PutResult{}, e
	}
	return o.Provider.Put(ctx, r)
}

func (o ownLimited) Unwrap() providers.Provider { return o.Provider }

// TestOwnRateLimitIsNotAFailure: writes held back by keyrelay's own rate
// limits (the shared quota) are waits: with a retry budget of 1 ms, any of
// them counted as the event's failure would dead-letter it, and more of
// them than the breaker's threshold would open the backend's breaker. The
// event is stored, no dead letter, breaker closed.
func TestOwnRateLimitIsNotAFailure(t *testing.T) {
	var left atomic.Int64
	left.Store(12)
	b := setup(t, setupOptions{wrap: map[string]func(providers.Provider) providers.Provider{
		"local": func(p providers.Provider) providers.Provider { return ownLimited{p, &left} },
	}})
	b.startWorker(func(c *worker.Config) {
		c.RetryFor = time.Millisecond
		c.BreakerFailures = 3
	})
	b.publish(b.keyEvent(events.KeyCreated, "team-a", "k1", 1, "v1"))
	confs := b.confirmations(1, time.Minute)
	if c := confs[0]; c.Status != events.StatusStored {
		t.Fatalf("confirmation %+v, want stored", c)
	}
	if left.Load() >= 0 {
		t.Fatalf("only %d writes held back, want 12", 12-left.Load())
	}
	if n := len(b.rawMessages(worker.DLQStream)); n != 0 {
		t.Fatalf("%d dead letters", n)
	}
	if got := testutil.ToFloat64(b.metrics.BreakerOpen.WithLabelValues("local")); got != 0 {
		t.Fatalf("breaker open gauge %v, want 0", got)
	}
}
