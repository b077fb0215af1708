package worker_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/worker"
)

// failingPuts fails the first n Puts of secrets whose name contains match
// with a retryable error, as a backend that is briefly unavailable does.
type failingPuts struct {
	providers.Provider
	match string
	n     atomic.Int32
}

func (f *failingPuts) Put(ctx context.Context, req providers.PutRequest) (providers.PutResult, error) {
	if strings.Contains(req.Name, f.match) && f.n.Add(-1) >= 0 {
		return providers.PutResult{}, providers.NewError("local", "put", req.Name, providers.Retryable,
			errors.Join(providers.ErrUnavailable, errors.New("injected outage")))
	}
	return f.Provider.Put(ctx, req)
}

// maxDeliverSetup runs one worker at max_deliver maxDeliver, one call per
// delivery, over a local backend whose first n Puts of names containing
// match fail.
func maxDeliverSetup(t *testing.T, match string, n int32, maxDeliver int) (*bundle, *failingPuts) {
	faults := &failingPuts{match: match}
	faults.n.Store(n)
	b := setup(t, setupOptions{
		wrap: map[string]func(providers.Provider) providers.Provider{"local": func(p providers.Provider) providers.Provider {
			faults.Provider = p
			return faults
		}},
		topo: func(c *worker.TopologyConfig) { c.MaxDeliver = maxDeliver },
	})
	b.startWorker(func(c *worker.Config) { c.MaxDeliver, c.InProcessAttempts = maxDeliver, 1 })
	return b, faults
}

// TestWaitsDoNotSpendMaxDeliver: deliveries handed back because the key was
// claimed by another (here a dead) worker spend nothing, max_deliver
// included. An event that waited out a dead claim over more deliveries
// than max_deliver and then met one provider failure is retried and
// written, not dead-lettered. (Seen in the Vault restore end-to-end run: a
// rotation waited out a killed restore's claim over five deliveries, and
// its first provider failure, on the sixth, dead-lettered it.)
func TestWaitsDoNotSpendMaxDeliver(t *testing.T) {
	t.Parallel()
	const maxDeliver = 3
	b, faults := maxDeliverSetup(t, "/held", 1, maxDeliver)
	b.plantClaims("team-w", []string{"held"}, 5*time.Second)
	ev := b.keyEvent(events.KeyRotated, "team-w", "held", 2, "sk-held-2")
	b.publish(ev)
	c := b.waitConfirmed([]*events.Event{ev}, 60*time.Second)[ev.ID]
	if c.Status != events.StatusRotated {
		t.Fatalf("confirmation %s (%s), want rotated", c.Status, c.Reason)
	}
	// The test means something only if the waits alone went past
	// max_deliver before the failure.
	waits := testutil.ToFloat64(b.metrics.Retries.WithLabelValues("wait"))
	t.Logf("written at delivery %d: %v waits, then 1 provider failure (max_deliver %d)", c.Attempts, waits, maxDeliver)
	if c.Attempts <= maxDeliver+1 || waits < maxDeliver {
		t.Fatalf("written at delivery %d after %v waits: the waits did not pass max_deliver %d", c.Attempts, waits, maxDeliver)
	}
	if faults.n.Load() >= 0 {
		t.Fatal("the injected failure did not happen")
	}
	if got := b.value("local", name("team-w", "held")); got != "sk-held-2" {
		t.Fatalf("holds %q", got)
	}
}

// TestMaxDeliverEndsAFailureLoop: the safety net still holds. An event
// whose every delivery fails is dead-lettered at its max_deliver-th failed
// delivery, well inside retry_for, with a reason naming the setting.
func TestMaxDeliverEndsAFailureLoop(t *testing.T) {
	t.Parallel()
	const maxDeliver = 3
	b, faults := maxDeliverSetup(t, "/loop", 1<<20, maxDeliver)
	ev := b.keyEvent(events.KeyCreated, "team-w", "loop", 1, "sk-loop")
	b.publish(ev)
	c := b.waitConfirmed([]*events.Event{ev}, 60*time.Second)[ev.ID]
	if c.Status != events.StatusFailed || !strings.Contains(c.Reason, "worker.max_deliver") {
		t.Fatalf("confirmation %s (%s), want failed by worker.max_deliver", c.Status, c.Reason)
	}
	if c.Attempts != maxDeliver || int(1<<20-faults.n.Load()) != maxDeliver {
		t.Fatalf("dead-lettered at delivery %d after %d calls, want %d of each", c.Attempts, 1<<20-faults.n.Load(), maxDeliver)
	}
}
