package recovery_test

import (
	"strings"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/recovery"
	"github.com/keyrelay/keyrelay/worker"
)

// TestMigrateWaitsForAWorkersClaimWhateverTheLocalClock: `keyrelay
// migrate` runs on a machine whose clock is ten minutes ahead while a
// worker, its clock right, holds a key's claim (writing a rotation, or
// the key's create). The move reads the claim's deadline, written from the
// worker's clock, against the server's time too: it neither claims nor
// writes the key until the claim has ended, and a create in flight is
// waited for and moved, not skipped as one whose worker stopped. Before,
// the move took the live claim for expired and wrote the key beside the
// worker (two writers), and skipped the create, which stayed on the old
// backend.
func TestMigrateWaitsForAWorkersClaimWhateverTheLocalClock(t *testing.T) {
	const claimFor = 2500 * time.Millisecond
	ahead := func() time.Time { return time.Now().Add(10 * time.Minute) }
	for name, create := range map[string]bool{"a rotation being written": false, "a create being written": true} {
		t.Run(name, func(t *testing.T) {
			const team, key = "team-a", "key-00"
			p := newPipeline(t)
			p.publish(t, p.event(t, events.KeyCreated, team, key, 1, sentinel))
			committed, rev, err := p.ledger.Get(p.ctx, team, key)
			if err != nil || committed == nil {
				t.Fatalf("ledger: %+v, %v", committed, err)
			}
			p.settings(t, team, 10, moveTarget)

			// The worker's claim, from its clock.
			until := time.Now().Add(claimFor)
			held := *committed
			held.Claim = &worker.Claim{EventID: "ev-rotating", Generation: 2, Worker: "writing-elsewhere", Until: until}
			if create {
				// Back to the moment before the create committed: a
				// claim on an entry with no generation. It commits, on
				// the old backend, a second before its claim ends.
				held = worker.LedgerEntry{Claim: &worker.Claim{EventID: committed.EventID, Generation: 1, Worker: "writing-elsewhere", Until: until}}
			}
			if rev, err = p.ledger.Put(p.ctx, team, key, &held, rev); err != nil {
				t.Fatal(err)
			}
			if create {
				go func() {
					time.Sleep(time.Until(until.Add(-time.Second)))
					if _, err := p.ledger.Put(p.ctx, team, key, committed, rev); err != nil {
						t.Errorf("commit the create: %v", err)
					}
				}()
			}

			type result struct {
				rep *recovery.MigrateReport
				err error
			}
			done := make(chan result, 1)
			go func() {
				rep, err := recovery.Migrate(p.ctx, p.deps(), recovery.MigrateConfig{Team: team, To: moveTarget, Grace: time.Hour, Now: ahead})
				done <- result{rep, err}
			}()
			// When the move first shows: its claim in the entry, or the
			// value in the new backend.
			var moved time.Time
			var res result
			for res.rep == nil && res.err == nil {
				select {
				case res = <-done:
				case <-time.After(20 * time.Millisecond):
				}
				if !moved.IsZero() {
					continue
				}
				e, _, err := p.ledger.Get(p.ctx, team, key)
				if err != nil {
					t.Fatal(err)
				}
				if (e.Claim != nil && strings.HasPrefix(e.Claim.Worker, "migrate-")) || value(t, p, p.store2, secretName(team, key)) != "" {
					moved = time.Now()
				}
			}
			if res.err != nil {
				t.Fatal(res.err)
			}
			if !moved.IsZero() && moved.Before(until) {
				t.Errorf("the move claimed or wrote the key %v before the worker's claim ended", until.Sub(moved).Round(time.Millisecond))
			}
			if res.rep.Moved != 1 || res.rep.Failed != 0 {
				t.Fatalf("moved %d, skipped %d, failed %d; want the key moved once its claim ended: %+v",
					res.rep.Moved, res.rep.Skipped, res.rep.Failed, res.rep.Rows)
			}
			if got := value(t, p, p.store2, secretName(team, key)); got != sentinel {
				t.Errorf("the new backend holds %q, want the key's value", got)
			}
			if e, _, err := p.ledger.Get(p.ctx, team, key); err != nil || e.Provider != moveTarget || e.Claim != nil {
				t.Errorf("ledger after the move: %+v (%v)", e, err)
			}
		})
	}
}
