package worker_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/worker"
)

// TestClusterNodeLossDeadLettersNothing (issue 10, points 5 and 7, on the
// production shape): a 3-node cluster, every stream and bucket at
// replicas 3, two workers under load. The node leading the ledger bucket
// is SIGKILLed (a ledger leader election, the review's "no responders"),
// then the node leading the events stream; each comes back after 5 s.
// Nothing is dead-lettered, every event has exactly one confirmation and
// every key ends at its newest value.
func TestClusterNodeLossDeadLettersNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("kills cluster nodes under load")
	}
	t.Parallel()
	b := setup(t, setupOptions{cluster: true, timeout: 5 * time.Minute,
		topo: func(c *worker.TopologyConfig) { c.MaxDeliver, c.MaxAckPending = 0, 4096; c.AckWait = 10 * time.Second }})
	for i := 0; i < 2; i++ {
		b.startWorker(func(c *worker.Config) {
			c.MaxDeliver, c.AckWait, c.ClaimLease, c.CallTimeout, c.InfraWait = 0, 10*time.Second, 6*time.Second, 2*time.Second, 5*time.Second
		})
	}
	const keys, gens = 200, 5
	var all []*events.Event
	newest := map[string]string{}
	for g := uint64(1); g <= gens; g++ {
		for k := 0; k < keys; k++ {
			typ := events.KeyRotated
			if g == 1 {
				typ = events.KeyCreated
			}
			key := fmt.Sprintf("key-%03d", k)
			v := fmt.Sprintf("sk-%s-g%d", key, g)
			all = append(all, b.keyEvent(typ, "team-c", key, g, v))
			newest[key] = v
		}
	}
	// Publish over ~16 s, retrying through elections (same id: deduplicated).
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i, ev := range all {
			for {
				ctx, cancel := context.WithTimeout(b.ctx, 3*time.Second)
				_, err := b.pub.Publish(ctx, ev)
				cancel()
				if err == nil {
					break
				}
				if b.ctx.Err() != nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			if i%60 == 59 {
				time.Sleep(time.Second)
			}
		}
	}()
	kill := func(stream string) {
		idx, err := b.cluster.LeaderOf(b.ctx, stream)
		if err != nil {
			t.Fatalf("leader of %s: %v", stream, err)
		}
		t.Logf("SIGKILL node %s, leader of %s", b.cluster.Name(idx), stream)
		b.cluster.Kill(idx)
		time.Sleep(5 * time.Second)
		b.cluster.Restart(idx)
	}
	time.Sleep(3 * time.Second)
	kill("KV_" + worker.LedgerBucket)
	time.Sleep(2 * time.Second)
	kill(worker.EventsStream)
	restored := time.Now()
	wg.Wait()
	cs := b.waitConfirmed(all, 3*time.Minute)
	t.Logf("all %d events confirmed %v after the last node came back", len(all), time.Since(restored).Round(100*time.Millisecond))
	for _, ev := range all {
		c := cs[ev.ID]
		if c.Status == events.StatusFailed || c.Status == events.StatusRejected {
			t.Errorf("%s g%d: %s %s", ev.KeyID, ev.Generation, c.Status, c.Reason)
		}
	}
	for key, v := range newest {
		if got := b.value("local", name("team-c", key)); got != v {
			t.Errorf("%s holds %q, want %q", key, got, v)
		}
	}
	if dl := b.rawMessages(worker.DLQStream); len(dl) != 0 {
		t.Fatalf("%d dead letters after node loss", len(dl))
	}
	if n := len(b.rawMessages(worker.ConfirmationsStream)); n != len(all) {
		t.Fatalf("%d confirmations for %d events", n, len(all))
	}
}
