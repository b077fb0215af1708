package worker_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/worker"
)

// TestHeartbeatCoversFinish: an event whose finishing (the ledger commit
// and the confirmation, each retried through NATS trouble for up to
// infra_wait) outlasts ack_wait keeps its delivery: the heartbeat runs
// until the event is acknowledged, so the server does not deliver it a
// second time meanwhile (which would handle one event twice at once).
func TestHeartbeatCoversFinish(t *testing.T) {
	b := setup(t, setupOptions{topo: func(c *worker.TopologyConfig) { c.AckWait = 2 * time.Second }})
	b.startWorker(func(c *worker.Config) { c.ClaimLease = 1500 * time.Millisecond })
	ev := b.keyEvent(events.KeyCreated, "team-f", "key-f", 1, "sk-finish-slow")
	var commits atomic.Int32
	restore := worker.SetCommitHook(func(id string) error {
		if id == ev.ID && commits.Add(1) == 1 {
			// The first commit attempt stalls past ack_wait, as a commit
			// waiting out NATS trouble does.
			time.Sleep(5 * time.Second)
		}
		return nil
	})
	defer restore()
	b.publish(ev)
	confs := b.confirmations(1, 30*time.Second)
	if confs[0].Status != events.StatusStored || confs[0].Attempts != 1 {
		t.Fatalf("confirmation: %s after %d deliveries, want stored after 1", confs[0].Status, confs[0].Attempts)
	}
	// Wait for the first delivery's ack, past the stalled commit, then one
	// more ack_wait: a second delivery would have reached its own commit.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		info, err := b.js.Consumer(b.ctx, worker.EventsStream, worker.ConsumerName)
		if err != nil {
			t.Fatal(err)
		}
		if ci := info.CachedInfo(); ci.NumAckPending == 0 && ci.NumPending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the event was never acknowledged")
		}
	}
	time.Sleep(2 * time.Second)
	if n := commits.Load(); n != 1 {
		t.Fatalf("%d commit attempts for one event: it was delivered again while its first delivery was finishing", n)
	}
}
