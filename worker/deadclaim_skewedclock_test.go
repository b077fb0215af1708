package worker_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/worker"
)

// TestClaimStandsWhateverTheLocalClock: another worker, its clock right,
// holds a key's claim for event E (generation 2) and is writing it. A
// worker whose clock runs ten minutes ahead gets an event of the same key:
// a newer one (generation 3) or a copy of E under another id. It does not
// write while E's claim stands, nor, for the copy, until the dead-claim
// bound after it: it reads the claim's deadline, written from the other
// worker's clock, against the server's time too, not against its own
// alone. Once the claim has ended (or its bound passed), the event is
// written, as it is when the clocks agree. Before, the skewed worker took
// the claim at once and wrote: two writers on one key, and for the copy a
// second version of E's value.
func TestClaimStandsWhateverTheLocalClock(t *testing.T) {
	const claimFor = 2500 * time.Millisecond
	cases := map[string]struct {
		skew time.Duration
		copy bool // a copy of E; else an event of generation 3
	}{
		"ahead, newer event":    {skew: 10 * time.Minute},
		"ahead, copy of E":      {skew: 10 * time.Minute, copy: true},
		"agreeing, newer event": {},
		"agreeing, copy of E":   {copy: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			const team, key = "team-c", "key-c"
			b := setup(t, setupOptions{})
			w, _ := b.startWorker(nil)
			w.SetClaimClock(func() time.Time { return time.Now().Add(tc.skew) })
			b.publish(b.keyEvent(events.KeyCreated, team, key, 1, "sk-gen-1"))
			b.confirmations(1, 30*time.Second)

			// E's claim, as the other worker wrote it from its clock.
			e := b.keyEvent(events.KeyRotated, team, key, 2, "sk-gen-2")
			kv, err := b.js.KeyValue(b.ctx, worker.LedgerBucket)
			if err != nil {
				t.Fatal(err)
			}
			ledger := worker.NewLedger(kv)
			le, rev, err := ledger.Get(b.ctx, team, key)
			if err != nil || le == nil {
				t.Fatalf("ledger: %+v %v", le, err)
			}
			until := time.Now().Add(claimFor)
			le.Claim = &worker.Claim{EventID: e.ID, Generation: 2, Worker: "writing-elsewhere", Until: until}
			if _, err := ledger.Put(b.ctx, team, key, le, rev); err != nil {
				t.Fatal(err)
			}

			ev := b.keyEvent(events.KeyRotated, team, key, 3, "sk-gen-3")
			// Held back: by the claim, and a copy by the dead-claim bound
			// (ack_wait + claim_lease after it) as well.
			heldUntil := until
			if tc.copy {
				cp := *e
				cp.ID = uuid.NewString()
				ev = &cp
				heldUntil = until.Add(b.topo.AckWait + 3*time.Second)
			}
			b.publish(ev)
			store, secret := b.stores["local"], "litellm/"+team+"/"+key
			for _, at := range []time.Time{until.Add(-500 * time.Millisecond), heldUntil.Add(-time.Second)} {
				time.Sleep(time.Until(at))
				vs, err := store.Versions(b.ctx, secret)
				if got := b.confirmations(1, time.Second); err != nil || len(vs) != 1 || len(got) != 1 {
					t.Fatalf("%s: %v before the other worker's claim (or its bound) ended: %d versions (%v), %d confirmations; want 1 and 1",
						name, time.Until(heldUntil).Round(time.Millisecond), len(vs), err, len(got))
				}
			}
			confs := byEventID(b.confirmations(2, 30*time.Second))
			if c := confs[ev.ID]; c == nil || c.Status != events.StatusRotated {
				t.Errorf("the event after the claim ended: %+v, want rotated", c)
			}
			if vs, err := store.Versions(b.ctx, secret); err != nil || len(vs) != 2 {
				t.Errorf("%d versions (%v), want 2", len(vs), err)
			}
		})
	}
}
