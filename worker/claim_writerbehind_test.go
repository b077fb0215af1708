package worker_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/ownership"
	"github.com/keyrelay/keyrelay/worker"
)

// TestClaimOfAWriterBehindStandsItsLease: another worker, its clock ten
// minutes behind the servers', holds a key's claim for event E
// (generation 2): Until is its clock plus the lease, already ten minutes
// past by every other clock and by the server's time, and Taken is its
// clock when it claimed. A worker whose clock is right gets an event of
// the same key, a newer one or a copy of E: it waits out the claim's
// lease counted from when the claim was stored (and a copy the dead-claim
// bound after that), then writes, as when the clocks agree. Before, it
// read the claim as long expired and wrote at once: two writers on one
// key, and for the copy a second version of E's value.
func TestClaimOfAWriterBehindStandsItsLease(t *testing.T) {
	const claimFor = 2500 * time.Millisecond
	for name, copyOfE := range map[string]bool{"newer event": false, "copy of E": true} {
		t.Run(name, func(t *testing.T) {
			const team, key = "team-b", "key-b"
			b := setup(t, setupOptions{})
			b.startWorker(nil)
			b.publish(b.keyEvent(events.KeyCreated, team, key, 1, "sk-gen-1"))
			b.confirmations(1, 30*time.Second)

			ledger := ledgerOf(b)
			le, rev, err := ledger.Get(b.ctx, team, key)
			if err != nil || le == nil {
				t.Fatalf("ledger: %+v %v", le, err)
			}
			e := b.keyEvent(events.KeyRotated, team, key, 2, "sk-gen-2")
			le.Claim = claimBehind(e.ID, 2, claimFor)
			// The entry is stored after this: the claim stands at least
			// until claimFor after it.
			stored := time.Now()
			if _, err := ledger.Put(b.ctx, team, key, le, rev); err != nil {
				t.Fatal(err)
			}

			ev, heldUntil := b.keyEvent(events.KeyRotated, team, key, 3, "sk-gen-3"), stored.Add(claimFor)
			if copyOfE {
				cp := *e
				cp.ID = uuid.NewString()
				ev, heldUntil = &cp, heldUntil.Add(b.topo.AckWait+3*time.Second)
			}
			b.publish(ev)
			// Nothing written (one version, E's predecessor's; one
			// confirmation) just before the lease ends, and just before
			// the bound.
			for _, ends := range []time.Time{stored.Add(claimFor), heldUntil} {
				time.Sleep(time.Until(ends) - 500*time.Millisecond)
				n, err := b.stores["local"].Versions(b.ctx, "litellm/"+team+"/"+key)
				if confs := b.confirmations(1, 400*time.Millisecond); len(n) != 1 || len(confs) != 1 || err != nil {
					t.Fatalf("written %v before the claim of a writer behind (or its bound) ended: %d versions (%v), %d confirmations; want 1 and 1",
						time.Until(ends).Round(time.Millisecond), len(n), err, len(confs))
				}
			}
			if c := byEventID(b.confirmations(2, 30*time.Second))[ev.ID]; c == nil || c.Status != events.StatusRotated {
				t.Errorf("the event after the claim ended: %+v, want rotated", c)
			}
		})
	}
}

// ledgerOf is the ledger of b's bucket, read as another process would
// (through b's connection: its leader reads go to the leader).
func ledgerOf(b *bundle) *worker.Ledger {
	b.t.Helper()
	kv, err := b.js.KeyValue(b.ctx, worker.LedgerBucket)
	if err != nil {
		b.t.Fatal(err)
	}
	return worker.NewLedger(kv, b.nc)
}

// claimBehind is the claim for event id at generation gen of a writer
// whose clock runs ten minutes behind the servers', for lease.
func claimBehind(id string, gen uint64, lease time.Duration) *worker.Claim {
	writerNow := time.Now().Add(-10 * time.Minute)
	return &worker.Claim{EventID: id, Generation: gen, Worker: "behind-the-servers", Until: writerNow.Add(lease), Taken: writerNow}
}

// TestExclusiveLoadsTheIntentOfAHolderBehind: the holder before this one,
// its clock ten minutes behind the servers', stored an intent and died:
// its Until is ten minutes past by the server's time, past the dead-claim
// bound too. The next holder loads it all the same, its time (Until −
// Taken) counted from when its batch was stored, and holds the key for it.
// Before, the intent was dropped at the load as long past: an older event
// could put its value over the dead holder's write.
func TestExclusiveLoadsTheIntentOfAHolderBehind(t *testing.T) {
	const team, key = "team-i", "key-i"
	b := setup(t, setupOptions{topo: func(c *worker.TopologyConfig) { c.AckWait = 20 * time.Second }})
	holderNow := time.Now().Add(-10 * time.Minute)
	in := ownership.Intent{Key: worker.LedgerKey(team, key), EventID: "ev-holder-behind", StreamSeq: 999,
		Lane: string(events.LaneInteractive), Generation: 3, Until: holderNow.Add(500 * time.Millisecond), Taken: holderNow}
	if err := ownership.NewIntentLog(b.js, worker.IntentsSubject).Append(b.ctx, in); err != nil {
		t.Fatal(err)
	}
	w, _ := b.exclusiveWorker(func(c *worker.Config) { c.AckWait, c.ClaimLease = 20*time.Second, 10*time.Second })
	waitHeld(t, w)
	if c := w.OpenIntent(in.Key); c == nil || c.EventID != in.EventID {
		t.Fatalf("the intent of a holder ten minutes behind: loaded %+v, want %s's", c, in.EventID)
	}
}

// TestLeaderReadClaimOfAWriterBehindStands: a claim read from the bucket
// stream's leader (GetFromLeader, a replicated bucket) is given its
// writer's lease from the entry's stored time, which the leader's reply
// carries, as a claim read by Get is. Before, the leader's read carried
// no stored time and the claim of a writer ten minutes behind had ended.
func TestLeaderReadClaimOfAWriterBehindStands(t *testing.T) {
	const team, key = "team-l", "key-l"
	b := setup(t, setupOptions{cluster: true})
	ledger := ledgerOf(b)
	if _, err := ledger.Put(b.ctx, team, key, &worker.LedgerEntry{Claim: claimBehind("ev-l", 1, time.Minute)}, 0); err != nil {
		t.Fatal(err)
	}
	// Get first: the server's time is known either way.
	if _, _, err := ledger.Get(b.ctx, team, key); err != nil {
		t.Fatal(err)
	}
	e, _, err := ledger.GetFromLeader(b.ctx, team, key)
	if err != nil || e == nil || e.Claim == nil {
		t.Fatalf("leader read: %+v, %v", e, err)
	}
	if left, known := ledger.ClaimLeft(e.Claim, time.Now()); !known || left < 50*time.Second {
		t.Fatalf("the claim read from the leader has %v left (known %v), want about its minute's lease", left, known)
	}
}

// TestWorkerBehindWritesItsClaimsLease: a worker whose clock runs ten
// minutes behind the servers' claims a key. The claim it stores records
// its clock (Taken), so any reader gives it its lease from the entry's
// stored time: it stands for about claim_lease, though its Until is ten
// minutes past by the reader's clock and the server's time. Before, it
// had ended when it was stored. (Its release is held back, so the claim
// can be read; only the claim clock is behind here, so the worker does
// not go on to write: its deadline is past by the rest of the process.)
func TestWorkerBehindWritesItsClaimsLease(t *testing.T) {
	const team, key = "team-w", "key-w"
	b := setup(t, setupOptions{})
	restore := worker.SetReleaseHook(func() error { return errors.New("release held back by the test") })
	defer restore()
	w, _ := b.startWorker(nil) // claim_lease 3s
	w.SetClaimClock(func() time.Time { return time.Now().Add(-10 * time.Minute) })
	b.publish(b.keyEvent(events.KeyCreated, team, key, 1, "sk-w"))
	ledger := ledgerOf(b)
	var e *worker.LedgerEntry
	var err error
	for deadline := time.Now().Add(10 * time.Second); e == nil || e.Claim == nil; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no claim stored: %+v, %v", e, err)
		}
		e, _, err = ledger.Get(b.ctx, team, key)
	}
	if left, known := ledger.ClaimLeft(e.Claim, time.Now()); !known || left < 2*time.Second {
		t.Errorf("the claim of a worker ten minutes behind has %v left (known %v), want most of its 3s lease (claim %+v)", left, known, e.Claim)
	}
}

// TestExclusiveIntentsRecordTheHoldersClock: the intents a holder stores
// record its clock when it took them (Taken), at most one lease TTL before
// their deadline, so that the next holder gives each its time from when it
// was stored (TestExclusiveLoadsTheIntentOfAHolderBehind).
func TestExclusiveIntentsRecordTheHoldersClock(t *testing.T) {
	b := setup(t, setupOptions{})
	w, _ := b.exclusiveWorker(nil)
	waitHeld(t, w)
	before := time.Now()
	b.publish(b.keyEvent(events.KeyCreated, "team-t", "key-t", 1, "sk-t"))
	b.confirmations(1, 30*time.Second)
	ins := b.readIntents()
	if len(ins) == 0 {
		t.Fatal("no intent stored")
	}
	for _, in := range ins {
		if in.Taken.Before(before) || in.Taken.After(time.Now()) || in.Until.Sub(in.Taken) > 600*time.Millisecond {
			t.Errorf("intent of %s: Taken %v, Until %v; want the holder's clock at the write, within one lease TTL (600ms) of Until",
				in.EventID, in.Taken, in.Until)
		}
	}
}
