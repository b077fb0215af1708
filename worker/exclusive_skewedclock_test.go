package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/ownership"
	"github.com/keyrelay/keyrelay/worker"
)

// TestExclusiveLoadsIntentsWhateverTheLocalClock: the holder before this
// one died after storing an intent (a write it may have made without
// committing). A process taking the lease over loads it whatever its own
// clock says: the window of intents it reads is counted back from the
// stored time of the intents stream's last message, not from its clock.
// Before, a process whose clock ran an hour ahead read from an hour after
// the intent and loaded none, so an older event could put its value over
// the dead holder's write.
func TestExclusiveLoadsIntentsWhateverTheLocalClock(t *testing.T) {
	for name, skew := range map[string]time.Duration{"ahead": time.Hour, "behind": -time.Hour} {
		t.Run(name, func(t *testing.T) {
			const team, key = "team-s", "key-s"
			b := setup(t, setupOptions{topo: func(c *worker.TopologyConfig) { c.AckWait = 20 * time.Second }})
			// The intent's bound (its deadline + ack_wait + claim_lease)
			// is 30 s: it matters when the next holder starts.
			log := ownership.NewIntentLog(b.js, worker.IntentsSubject)
			in := ownership.Intent{Key: worker.LedgerKey(team, key), EventID: "ev-dead-holder", StreamSeq: 999,
				Lane: string(events.LaneInteractive), Generation: 3, Until: time.Now().Add(-time.Millisecond)}
			if err := log.Append(b.ctx, in); err != nil {
				t.Fatal(err)
			}

			wc := worker.Config{Concurrency: 8, AckWait: 20 * time.Second, MaxDeliver: b.topo.MaxDeliver, CallTimeout: time.Second,
				ClaimLease: 10 * time.Second, RetryInitial: 5 * time.Millisecond, RetryMax: 100 * time.Millisecond, ShutdownGrace: 2 * time.Second,
				Ownership: worker.OwnershipExclusive, LeaseTTL: 600 * time.Millisecond}
			w, err := worker.New(b.ctx, wc, worker.Deps{JS: b.js, Settings: b.cfg, Registry: b.reg, Opener: b.kr, Logger: b.log, Metrics: b.metrics})
			if err != nil {
				t.Fatal(err)
			}
			w.SetExclusiveClock(func() time.Time { return time.Now().Add(skew) })
			ctx, cancel := context.WithCancel(b.ctx)
			done := make(chan error, 1)
			go func() { done <- w.Run(ctx) }()
			t.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("worker: %v", err)
				}
			})
			waitHeld(t, w)

			c := w.OpenIntent(worker.LedgerKey(team, key))
			if c == nil {
				t.Fatalf("clock %s by %s: the previous holder's intent was not loaded", name, skew.Abs())
			}
			if c.EventID != in.EventID || c.Generation != in.Generation {
				t.Fatalf("loaded %+v, want the intent of %s at generation %d", c, in.EventID, in.Generation)
			}
		})
	}
}
