package worker_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/ownership"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/worker"
)

// exclusiveWorker starts a worker in ownership mode exclusive with a short
// lease TTL.
func (b *bundle) exclusiveWorker(mut func(*worker.Config)) (*worker.Worker, func()) {
	b.t.Helper()
	return b.startWorker(func(c *worker.Config) {
		c.Ownership, c.LeaseTTL = worker.OwnershipExclusive, 600*time.Millisecond
		if mut != nil {
			mut(c)
		}
	})
}

// ledgerWrites is how many writes the ledger bucket has stored.
func (b *bundle) ledgerWrites() uint64 {
	b.t.Helper()
	s, err := b.js.Stream(b.ctx, "KV_"+worker.LedgerBucket)
	if err != nil {
		b.t.Fatal(err)
	}
	info, err := s.Info(b.ctx)
	if err != nil {
		b.t.Fatal(err)
	}
	return info.State.LastSeq
}

// readIntents returns every intent stored.
func (b *bundle) readIntents() []ownership.Intent {
	b.t.Helper()
	// On the cluster the read's consumer request can meet a moment with no
	// responder (a leader moving); a holder's prepare retries as well.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		ins, bad, err := ownership.ReadIntents(b.ctx, b.js, worker.IntentsStream, worker.IntentsSubject, time.Time{})
		if err == nil && bad == 0 {
			return ins
		}
		if bad != 0 || time.Now().After(deadline) {
			b.t.Fatalf("read intents: %d bad batches, %v", bad, err)
		}
	}
}

// TestExclusiveWritesWithoutClaims: a worker holding the writer lease
// applies creates, rotations, an older generation delivered late and a
// redelivered duplicate exactly as claims mode does, with one ledger write
// per applied event (the commit; no claim) and one stored intent per
// provider write, many intents to a stored message.
func TestExclusiveWritesWithoutClaims(t *testing.T) {
	for _, cluster := range []bool{false, true} {
		t.Run(map[bool]string{false: "one server", true: "cluster"}[cluster], func(t *testing.T) {
			b := setup(t, setupOptions{cluster: cluster})
			// The holder first acts without claims once it has read the
			// claims requests after acquiring; until then it claims keys,
			// which is right, but the counts below assume no claim. Under
			// CPU load (two busy loops beside the test) the first 10 of 40
			// creates were claimed when the events came before that read.
			w, _ := b.exclusiveWorker(nil)
			testenv.Eventually(t, 10*time.Second, "the holder acting without claims", w.ActsClaimless)
			const team, keys = "team-x", 40
			var evs []*events.Event
			for i := range keys {
				evs = append(evs, b.keyEvent(events.KeyCreated, team, fmt.Sprintf("k%d", i), 1, fmt.Sprintf("sk-%d-1", i)))
			}
			b.publish(evs...)
			b.confirmations(keys, 30*time.Second)
			before := b.ledgerWrites()
			var rot []*events.Event
			for i := range keys {
				rot = append(rot, b.keyEvent(events.KeyRotated, team, fmt.Sprintf("k%d", i), 3, fmt.Sprintf("sk-%d-3", i)))
			}
			b.publish(rot...)
			b.confirmations(2*keys, 30*time.Second)
			if got := b.ledgerWrites() - before; got != keys {
				t.Errorf("%d ledger writes for %d rotations, want one each (the commit, no claim)", got, keys)
			}
			// Late: an older generation, and a copy of a rotation under
			// another id.
			cp := *rot[1]
			cp.ID = "copy-of-" + rot[1].ID
			late := []*events.Event{b.keyEvent(events.KeyRotated, team, "k0", 2, "sk-0-2"), &cp}
			b.publish(late...)
			confs := byEventID(b.confirmations(2*keys+2, 30*time.Second))
			for _, e := range late {
				if c := confs[e.ID]; c == nil || c.Status != events.StatusSuperseded {
					t.Errorf("late event %s: %+v, want superseded", e.ID, c)
				}
			}
			for i, e := range rot {
				if c := confs[e.ID]; c == nil || c.Status != events.StatusRotated {
					t.Fatalf("rotation %d: %+v", i, c)
				}
				name := fmt.Sprintf("litellm/%s/k%d", team, i)
				if got := b.value("local", name); got != fmt.Sprintf("sk-%d-3", i) {
					t.Fatalf("key %d holds the wrong value", i)
				}
				if vs, err := b.stores["local"].Versions(b.ctx, name); err != nil || len(vs) != 2 {
					t.Fatalf("key %d: %d versions (%v), want 2", i, len(vs), err)
				}
			}
			ins := b.readIntents()
			if len(ins) != 2*keys {
				t.Errorf("%d intents stored, want %d (one per provider write)", len(ins), 2*keys)
			}
			for _, in := range ins {
				if in.Key == "" || in.Until.IsZero() || in.StreamSeq == 0 {
					t.Fatalf("intent %+v", in)
				}
			}
			if msgs := len(b.rawMessages(worker.IntentsStream)); msgs >= len(ins) {
				t.Logf("%d intents in %d messages (no batching happened in this run)", len(ins), msgs)
			}
			e, _, err := b.ledgerGet(team, "k0")
			if err != nil || e.Claim != nil || e.Generation != 3 {
				t.Errorf("ledger entry: %+v %v", e, err)
			}
		})
	}
}

// TestExclusiveOneConsumerAtATime: of two exclusive workers only the
// lease holder handles events; when it stops, the standby takes the lease
// (released at once) and handles the rest.
func TestExclusiveOneConsumerAtATime(t *testing.T) {
	b := setup(t, setupOptions{})
	w1, stop1 := b.exclusiveWorker(nil)
	waitHeld(t, w1)
	w2, _ := b.exclusiveWorker(nil)
	var evs []*events.Event
	for i := range 20 {
		evs = append(evs, b.keyEvent(events.KeyCreated, "team-s", fmt.Sprintf("k%d", i), 1, "sk-s"))
	}
	b.publish(evs...)
	b.confirmations(20, 30*time.Second)
	if w2.Handled() != 0 || w1.Handled() != 20 {
		t.Fatalf("handled: holder %d, standby %d; want 20 and 0", w1.Handled(), w2.Handled())
	}
	stop1()
	start := time.Now()
	waitHeld(t, w2)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the standby took %s to take a released lease", d)
	}
	more := b.keyEvent(events.KeyRotated, "team-s", "k0", 2, "sk-s-2")
	b.publish(more)
	confs := byEventID(b.confirmations(21, 30*time.Second))
	if c := confs[more.ID]; c == nil || c.Status != events.StatusRotated || w2.Handled() != 1 {
		t.Fatalf("after the takeover: %+v, standby handled %d", c, w2.Handled())
	}
}

func waitHeld(t *testing.T, w *worker.Worker) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !w.HoldsLease() {
		if time.Now().After(deadline) {
			t.Fatal("the worker never held the writer lease")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestExclusiveIntentOfADeadHolder: the holder before this one wrote
// event E (generation 3) to the backend and died before committing it; its
// intent is in the log, the ledger still says generation 1. The new holder
// loads the intent: an older event (generation 2) delivered first waits
// for E's redelivery instead of putting its older value over E's; E's
// redelivery applies E without writing it again, and the older event is
// then superseded. (Without the intent the older event would write, as
// claims mode without its claim would.)
func TestExclusiveIntentOfADeadHolder(t *testing.T) {
	for _, cluster := range []bool{false, true} {
		t.Run(map[bool]string{false: "one server", true: "cluster"}[cluster], func(t *testing.T) {
			const team, key = "team-d", "key-d"
			// The dead intent's bound (its deadline + ack_wait +
			// claim_lease) is kept long, 30 s, so that a slow start of the
			// next holder on a loaded machine cannot outlast it.
			b := setup(t, setupOptions{cluster: cluster, topo: func(c *worker.TopologyConfig) { c.AckWait = 20 * time.Second }})
			long := func(c *worker.Config) { c.AckWait, c.ClaimLease = 20*time.Second, 10*time.Second }
			_, stop := b.exclusiveWorker(long)
			b.publish(b.keyEvent(events.KeyCreated, team, key, 1, "sk-gen-1"))
			b.confirmations(1, 30*time.Second)
			stop()

			e := b.keyEvent(events.KeyRotated, team, key, 3, "sk-gen-3")
			store, name := b.stores["local"], "litellm/"+team+"/"+key
			if _, err := store.Put(b.ctx, providers.PutRequest{Name: name, Value: []byte("sk-gen-3"), IdempotencyKey: e.ID,
				Owner: providers.Owner{TeamID: team, KeyID: key}}); err != nil {
				t.Fatal(err)
			}
			log := ownership.NewIntentLog(b.js, worker.IntentsSubject)
			if err := log.Append(b.ctx, ownership.Intent{Key: worker.LedgerKey(team, key), EventID: e.ID, StreamSeq: 999,
				Lane: string(events.LaneInteractive), Generation: 3, Until: time.Now().Add(-time.Millisecond)}); err != nil {
				t.Fatal(err)
			}
			w, _ := b.exclusiveWorker(long)
			waitHeld(t, w)

			older := b.keyEvent(events.KeyRotated, team, key, 2, "sk-gen-2")
			b.publish(older)
			time.Sleep(time.Second)
			if got := b.confirmations(1, time.Second); len(got) != 1 {
				t.Fatalf("the older event was decided while the dead holder's intent stood: %d confirmations", len(got))
			}
			if got := b.value("local", name); got != "sk-gen-3" {
				t.Fatal("the backend no longer holds the newer value")
			}
			b.publish(e)
			confs := byEventID(b.confirmations(3, 30*time.Second))
			if c := confs[e.ID]; c == nil || c.Status != events.StatusRotated {
				t.Errorf("E: %+v, want rotated", c)
			}
			if c := confs[older.ID]; c == nil || c.Status != events.StatusSuperseded {
				t.Errorf("the older event: %+v, want superseded", c)
			}
			if vs, err := store.Versions(b.ctx, name); err != nil || len(vs) != 2 {
				t.Errorf("%d versions (%v), want 2: E's value was written once", len(vs), err)
			}
		})
	}
}

// TestExclusiveCommitFailureKeepsTheIntent: event E (generation 3) is
// written to the backend by the lease holder and its ledger commit fails
// (NATS trouble) for a while. The ledger still says generation 1, and
// there is no claim in it; the intent E left in this process stands for
// it. An older event (generation 2) arriving meanwhile does not put its
// value over E's: it is superseded (E's confirmation says its value is in
// the backend) or waits. E commits once the trouble ends, its value
// written once.
func TestExclusiveCommitFailureKeepsTheIntent(t *testing.T) {
	const team, key = "team-c", "key-c"
	b := setup(t, setupOptions{})
	b.exclusiveWorker(nil)
	b.publish(b.keyEvent(events.KeyCreated, team, key, 1, "sk-gen-1"))
	b.confirmations(1, 30*time.Second)

	e := b.keyEvent(events.KeyRotated, team, key, 3, "sk-gen-3")
	failing := make(chan struct{})
	var first time.Time
	restore := worker.SetCommitHook(func(id string) error {
		if id != e.ID {
			return nil
		}
		if first.IsZero() {
			first = time.Now()
			close(failing)
		}
		if time.Since(first) < 1500*time.Millisecond {
			return errors.New("test: ledger commit refused")
		}
		return nil
	})
	defer restore()
	b.publish(e)
	<-failing
	older := b.keyEvent(events.KeyRotated, team, key, 2, "sk-gen-2")
	b.publish(older)
	confs := byEventID(b.confirmations(3, 30*time.Second))
	if c := confs[older.ID]; c == nil || c.Status != events.StatusSuperseded {
		t.Errorf("the older event: %+v, want superseded", c)
	}
	name := "litellm/" + team + "/" + key
	deadline := time.Now().Add(20 * time.Second)
	for {
		le, _, err := b.ledgerGet(team, key)
		if err == nil && le != nil && le.Generation == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("E never committed: %+v %v", le, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := b.value("local", name); got != "sk-gen-3" {
		t.Error("the backend does not hold E's value")
	}
	if vs, err := b.stores["local"].Versions(b.ctx, name); err != nil || len(vs) != 2 {
		t.Errorf("%d versions (%v), want 2: E's value written once, the older never", len(vs), err)
	}
}

// TestExclusiveUnreadableIntentsPutEveryKeyInDoubt: a stored intent batch
// the new holder cannot read may have named any key, so no key is written
// without a claim until such an intent's bound has passed; then events
// flow again. (Anyone who can publish to the intents subject can delay
// the event path this way, never make it write over a newer value.)
func TestExclusiveUnreadableIntentsPutEveryKeyInDoubt(t *testing.T) {
	b := setup(t, setupOptions{})
	b.publishRaw(worker.IntentsSubject, []byte(`[{"key":"t.k","event_id":"x"`)) // cut short
	w, _ := b.exclusiveWorker(nil)
	waitHeld(t, w)
	start := time.Now()
	e := b.keyEvent(events.KeyCreated, "team-u", "key-u", 1, "sk-u")
	b.publish(e)
	time.Sleep(2 * time.Second)
	if got := len(b.rawMessages(worker.ConfirmationsStream)); got != 0 {
		t.Fatalf("%d confirmations while every key was in doubt", got)
	}
	confs := byEventID(b.confirmations(1, 30*time.Second))
	if c := confs[e.ID]; c == nil || c.Status != events.StatusStored {
		t.Fatalf("after the doubt: %+v", c)
	}
	// The bound: ack_wait 5s + claim_lease 3s + two lease TTLs.
	if d := time.Since(start); d < 7*time.Second {
		t.Errorf("confirmed %s after start: before the doubt's bound", d)
	}
}

// TestExclusiveHolderClaimsNextToAClaimsWorker: part way through a change
// of worker.ownership, a worker in claims mode runs next to the lease
// holder. The claims worker's request makes the holder claim keys too, so
// the two exclude each other through the ledger: every rotation costs a
// claim and a commit again, and every event is applied once. When the
// claims worker stops, the holder writes without claims again.
func TestExclusiveHolderClaimsNextToAClaimsWorker(t *testing.T) {
	b := setup(t, setupOptions{})
	holder, _ := b.exclusiveWorker(nil)
	waitHeld(t, holder)
	const team, keys = "team-m", 20
	var evs []*events.Event
	for i := range keys {
		evs = append(evs, b.keyEvent(events.KeyCreated, team, fmt.Sprintf("k%d", i), 1, "sk-1"))
	}
	b.publish(evs...)
	b.confirmations(keys, 30*time.Second)

	_, stopClaims := b.startWorker(nil) // claims mode
	time.Sleep(500 * time.Millisecond)  // its request granted, the holder acknowledged
	before, intents := b.ledgerWrites(), len(b.readIntents())
	var rot []*events.Event
	for i := range keys {
		rot = append(rot, b.keyEvent(events.KeyRotated, team, fmt.Sprintf("k%d", i), 2, "sk-2"))
	}
	b.publish(rot...)
	confs := byEventID(b.confirmations(2*keys, 30*time.Second))
	for _, e := range rot {
		if c := confs[e.ID]; c == nil || c.Status != events.StatusRotated {
			t.Fatalf("rotation %s: %+v", e.KeyID, c)
		}
	}
	// Every rotation claimed its key: no intent was stored, and the ledger
	// took a claim and a commit for each (more when an event, its claim
	// stored, was handed back because the lease's deadline was near: a
	// release, then a claim and a commit at its redelivery; the lease
	// TTL here is 600 ms, and a loaded machine renews it late).
	if got := len(b.readIntents()) - intents; got != 0 {
		t.Errorf("%d intents stored next to a claims worker, want none (every write claimed)", got)
	}
	if got := b.ledgerWrites() - before; got < 2*keys {
		t.Errorf("%d ledger writes for %d rotations next to a claims worker, want at least %d (a claim and a commit each)", got, keys, 2*keys)
	}

	stopClaims()
	deadline := time.Now().Add(20 * time.Second)
	for gen := uint64(3); ; gen++ {
		before = b.ledgerWrites()
		n := len(b.rawMessages(worker.ConfirmationsStream))
		b.publish(b.keyEvent(events.KeyRotated, team, "k0", gen, "sk-3"))
		b.confirmations(n+1, 30*time.Second)
		if b.ledgerWrites()-before == 1 {
			break // claimless again
		}
		if time.Now().After(deadline) {
			t.Fatal("the holder never wrote without claims again after the claims worker stopped")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestLeaderReadsOnlyWhenReplicated: a read that must be the leader's is a
// direct get on a bucket of one replica (its only copy is the leader) and
// a request to the stream's leader on a replicated one.
func TestLeaderReadsOnlyWhenReplicated(t *testing.T) {
	for _, cluster := range []bool{false, true} {
		b := setup(t, setupOptions{cluster: cluster})
		l := worker.NewLedger(b.kv(worker.LedgerBucket), b.nc)
		if got := l.Single(b.ctx); got == cluster {
			t.Errorf("cluster %v: single %v", cluster, got)
		}
		if _, err := l.Put(b.ctx, "t", "k", &worker.LedgerEntry{Generation: 1, EventID: "e"}, 0); err != nil {
			t.Fatal(err)
		}
		if e, rev, err := l.GetFromLeader(b.ctx, "t", "k"); err != nil || e == nil || e.Generation != 1 || rev == 0 {
			t.Errorf("cluster %v: %+v %d %v", cluster, e, rev, err)
		}
	}
}

// TestExclusiveEarlyIntentOfAnEventThatDidNotWrite: on a cache miss the
// holder stores the write's intent while it reads the key's entry from the
// leader. When the entry then shows the event is not newer (here an older
// generation delivered to a holder with an empty cache, the newer ones
// written in claims mode), the stored intent
// names an event that wrote nothing; the next holder loads it and still
// writes the key's next generation without waiting on it (an intent
// blocks only events of its generation or older, which the entry
// supersedes anyway).
func TestExclusiveEarlyIntentOfAnEventThatDidNotWrite(t *testing.T) {
	b := setup(t, setupOptions{})
	const team, key = "team-e", "k"
	// Generations 1 and 5 written in claims mode: no intent names the key,
	// so only its entry says generation 3 is older. (Written by an
	// exclusive holder, generation 5's intent, loaded by the next holder,
	// would already make generation 3 superseded before any read.)
	_, stop1 := b.startWorker(nil)
	b.publish(b.keyEvent(events.KeyCreated, team, key, 1, "sk-1"), b.keyEvent(events.KeyRotated, team, key, 5, "sk-5"))
	b.confirmations(2, 30*time.Second)
	stop1()

	w2, stop2 := b.exclusiveWorker(nil)
	waitHeld(t, w2)
	old := b.keyEvent(events.KeyRotated, team, key, 3, "sk-3")
	b.publish(old)
	if c := byEventID(b.confirmations(3, 30*time.Second))[old.ID]; c == nil || c.Status != events.StatusSuperseded {
		t.Fatalf("older generation: %+v, want superseded", c)
	}
	early := false
	for _, in := range b.readIntents() {
		early = early || in.EventID == old.ID
	}
	if !early {
		t.Fatal("no intent stored for the older event: its cache miss did not append early")
	}
	stop2()

	w3, _ := b.exclusiveWorker(nil)
	waitHeld(t, w3)
	next := b.keyEvent(events.KeyRotated, team, key, 6, "sk-6")
	b.publish(next)
	if c := byEventID(b.confirmations(4, 30*time.Second))[next.ID]; c == nil || c.Status != events.StatusRotated {
		t.Fatalf("next generation: %+v, want rotated", c)
	}
	if got := b.value("local", "litellm/"+team+"/"+key); got != "sk-6" {
		t.Fatalf("value %q, want generation 6's", got)
	}
	if n := testutil.ToFloat64(b.metrics.DeadClaims.WithLabelValues("waited")); n != 0 {
		t.Errorf("waited %v times on a dead intent", n)
	}
}

// A writer lease that leaves a write less than call_timeout (the lease's
// deadline is as little as 0.65 TTL ahead) is warned about at start; one
// that leaves enough is not.
func TestExclusiveWarnsWhenTheLeaseIsShorterThanACall(t *testing.T) {
	const warning = "may get less time than call_timeout"
	for _, c := range []struct {
		lease time.Duration
		warn  bool
	}{
		{time.Second, true},      // 650 ms for a call of 800 ms
		{2 * time.Second, false}, // 1.3 s
	} {
		b := setup(t, setupOptions{})
		_, stop := b.exclusiveWorker(func(wc *worker.Config) { wc.LeaseTTL, wc.CallTimeout = c.lease, 800*time.Millisecond })
		stop()
		if got := strings.Contains(b.logs.String(), warning); got != c.warn {
			t.Errorf("lease_ttl %v, call_timeout 800ms: warned %v, want %v", c.lease, got, c.warn)
		}
	}
}
