package worker_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/local"
	"github.com/keyrelay/keyrelay/providers/providertest"
	"github.com/keyrelay/keyrelay/worker"
)

// TestCopyWaitsForADeadClaimOfItsGeneration: a worker died after writing
// event E (generation 2) to the backend and before committing it, leaving
// its claim. A copy of E under a new id (same generation, same value)
// arrives first: it does not write the value again as a second version but
// waits; E's redelivery applies it and the copy is then superseded.
func TestCopyWaitsForADeadClaimOfItsGeneration(t *testing.T) {
	b, e, store, name := deadClaim(t, "team-d", "key-d", 2)

	cp := *e
	cp.ID = uuid.NewString()
	b.publish(&cp)
	time.Sleep(time.Second)
	if got := b.confirmations(1, time.Second); len(got) != 1 {
		t.Fatalf("the copy was decided while the original's claim stood: %d confirmations", len(got))
	}
	b.publish(e)
	confs := byEventID(b.confirmations(3, 30*time.Second))
	if c := confs[e.ID]; c == nil || c.Status != events.StatusRotated {
		t.Errorf("the original: %+v, want rotated", c)
	}
	if c := confs[cp.ID]; c == nil || c.Status != events.StatusSuperseded {
		t.Errorf("the copy: %+v, want superseded", c)
	}
	vs, err := store.Versions(b.ctx, name)
	if err != nil || len(vs) != 2 {
		t.Errorf("%d versions (%v), want 2: the value was written once", len(vs), err)
	}
}

// TestOlderGenerationWaitsForADeadNewerClaim: a worker died after writing
// event E (generation 3) to the backend and before committing it, leaving
// its claim. An older event (generation 2), delivered late, arrives first:
// it does not put its older value over E's, which E's redelivery would
// then write again as a second version; it waits, E's redelivery applies
// E (its version found, not written again) and the older event is then
// superseded.
func TestOlderGenerationWaitsForADeadNewerClaim(t *testing.T) {
	const team, key = "team-o", "key-o"
	b, e, store, name := deadClaim(t, team, key, 3)

	older := b.keyEvent(events.KeyRotated, team, key, 2, "sk-gen-2")
	b.publish(older)
	time.Sleep(time.Second)
	if got := b.confirmations(1, time.Second); len(got) != 1 {
		t.Fatalf("the older event was decided while the newer one's claim stood: %d confirmations", len(got))
	}
	if s, err := store.Get(b.ctx, name, ""); err != nil || string(s.Value) != "sk-gen-3" {
		t.Fatalf("the backend no longer holds the newer value: %v", err) // the value itself is not printed
	}
	b.publish(e)
	confs := byEventID(b.confirmations(3, 30*time.Second))
	if c := confs[e.ID]; c == nil || c.Status != events.StatusRotated {
		t.Errorf("the newer event: %+v, want rotated", c)
	}
	if c := confs[older.ID]; c == nil || c.Status != events.StatusSuperseded {
		t.Errorf("the older event: %+v, want superseded", c)
	}
	vs, err := store.Versions(b.ctx, name)
	if err != nil || len(vs) != 2 {
		t.Errorf("%d versions (%v), want 2: generation 3 written once, generation 2 never", len(vs), err)
	}
}

// deadClaim sets up what a worker leaves when it dies after writing event
// E (a rotation to generation gen, value "sk-gen-<gen>") to the backend and
// before committing it: the key created at generation 1 and confirmed,
// E's value written and recorded in the backend, the ledger still at
// generation 1 with E's expired claim. E itself is not published.
func deadClaim(t *testing.T, team, key string, gen uint64) (*bundle, *events.Event, *local.Provider, string) {
	t.Helper()
	b := setup(t, setupOptions{})
	b.startWorker(nil)
	b.publish(b.keyEvent(events.KeyCreated, team, key, 1, "sk-gen-1"))
	b.confirmations(1, 30*time.Second)

	value := fmt.Sprintf("sk-gen-%d", gen)
	e := b.keyEvent(events.KeyRotated, team, key, gen, value)
	store := b.stores["local"]
	name := "litellm/" + team + "/" + key
	if _, err := store.Put(b.ctx, providers.PutRequest{Name: name, Value: []byte(value), IdempotencyKey: e.ID,
		Owner: providers.Owner{TeamID: team, KeyID: key}}); err != nil {
		t.Fatal(err)
	}
	kv, _ := b.js.KeyValue(b.ctx, worker.LedgerBucket)
	ledger := worker.NewLedger(kv)
	le, rev, err := ledger.Get(b.ctx, team, key)
	if err != nil || le == nil {
		t.Fatalf("ledger: %+v %v", le, err)
	}
	le.Claim = &worker.Claim{EventID: e.ID, Generation: gen, Worker: "dead", Until: time.Now().Add(-time.Millisecond)}
	if _, err := ledger.Put(b.ctx, team, key, le, rev); err != nil {
		t.Fatal(err)
	}
	return b, e, store, name
}

// confirmAs stores the confirmation e's own worker would have published
// (status, for generation gen), as if it then stopped before its commit.
func (b *bundle) confirmAs(e *events.Event, status events.Status) {
	b.t.Helper()
	c := events.Confirmation{SpecVersion: events.SpecVersion, EventID: e.ID, EventType: e.Type, TeamID: e.TeamID, KeyID: e.KeyID,
		Generation: e.Generation, Status: status, Provider: "local", Time: time.Now().UTC()}
	data, err := json.Marshal(c)
	if err != nil {
		b.t.Fatal(err)
	}
	if _, err := b.js.Publish(b.ctx, events.ConfirmationSubject(e.TeamID, e.KeyID, e.ID), data); err != nil {
		b.t.Fatal(err)
	}
}

// TestDeadClaimOfAConfirmedWrite: the worker that held E's claim
// (generation 3) wrote E and confirmed it, and its commit failed (NATS
// trouble), so the claim stayed. An older event arriving in the meantime
// does not wait for E's redelivery: E's confirmation says its value is in
// the backend, so the older event is superseded at once, without a write.
// A key.updated of a newer generation is not a value write: an older value
// event waits for it as before.
func TestDeadClaimOfAConfirmedWrite(t *testing.T) {
	t.Run("value event", func(t *testing.T) {
		const team, key = "team-cw", "key-cw"
		b, e, store, name := deadClaim(t, team, key, 3)
		b.confirmAs(e, events.StatusRotated)

		older := b.keyEvent(events.KeyRotated, team, key, 2, "sk-gen-2")
		b.publish(older)
		confs := byEventID(b.confirmations(3, 5*time.Second)) // the create, E's, the older one's
		if c := confs[older.ID]; c == nil || c.Status != events.StatusSuperseded {
			t.Fatalf("the older event: %+v, want superseded at once", c)
		}
		if s, err := store.Get(b.ctx, name, ""); err != nil || string(s.Value) != "sk-gen-3" {
			t.Errorf("the backend no longer holds generation 3's value: %v", err) // the value itself is not printed
		}
		if vs, err := store.Versions(b.ctx, name); err != nil || len(vs) != 2 {
			t.Errorf("%d versions (%v), want 2: generation 2 never written", len(vs), err)
		}
		// E's redelivery still commits it.
		b.publish(e)
		deadline := time.Now().Add(30 * time.Second)
		for {
			le, _, err := b.ledgerGet(team, key)
			if err == nil && le != nil && le.Generation == 3 && le.Claim == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("E was not committed: %+v %v", le, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if got := b.metrics.DeadClaims.WithLabelValues("written"); testutil.ToFloat64(got) < 1 {
			t.Error("keyrelay_dead_claim_decisions_total{outcome=written} not counted")
		}
	})
	t.Run("key.updated", func(t *testing.T) {
		const team, key = "team-cu", "key-cu"
		b, e, _, _ := deadClaim(t, team, key, 3)
		upd := *e
		upd.Type = events.KeyUpdated
		b.confirmAs(&upd, events.StatusStored)

		older := b.keyEvent(events.KeyRotated, team, key, 2, "sk-gen-2")
		b.publish(older)
		time.Sleep(time.Second)
		if got := b.confirmations(2, time.Second); len(got) != 2 {
			t.Fatalf("the older value event was decided against a newer key.updated's claim: %d confirmations", len(got))
		}
	})
}

// TestDeadClaimOfAnAcknowledgedMessage: a claim left by a message the
// consumer has already acknowledged (its release failed, and no
// confirmation says it wrote) is not waited for: no delivery of that
// message will come back, so an older event goes ahead at once instead of
// waiting out the lease, ack_wait and another lease.
func TestDeadClaimOfAnAcknowledgedMessage(t *testing.T) {
	const team, key = "team-ca", "key-ca"
	b, _, store, name := deadClaim(t, team, key, 3)
	created := b.confirmations(1, time.Second)[0]
	cons, err := b.js.Consumer(b.ctx, worker.StreamOf(created.Lane), worker.ConsumerOf(created.Lane))
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		info, err := cons.Info(b.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.AckFloor.Stream >= created.StreamSeq {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the create (stream seq %d) is not acknowledged: ack floor %d", created.StreamSeq, info.AckFloor.Stream)
		}
		time.Sleep(10 * time.Millisecond)
	}
	le, rev, err := b.ledgerGet(team, key)
	if err != nil || le == nil || le.Claim == nil {
		t.Fatalf("ledger: %+v %v", le, err)
	}
	// The claim names the create's stream message, acknowledged long ago.
	le.Claim.StreamSeq, le.Claim.Lane = created.StreamSeq, created.Lane
	kv, _ := b.js.KeyValue(b.ctx, worker.LedgerBucket)
	if _, err := worker.NewLedger(kv).Put(b.ctx, team, key, le, rev); err != nil {
		t.Fatal(err)
	}

	older := b.keyEvent(events.KeyRotated, team, key, 2, "sk-gen-2")
	b.publish(older)
	confs := byEventID(b.confirmations(2, 5*time.Second))
	if c := confs[older.ID]; c == nil || c.Status != events.StatusRotated {
		t.Fatalf("the older event: %+v, want rotated at once", c)
	}
	if s, err := store.Get(b.ctx, name, ""); err != nil || string(s.Value) != "sk-gen-2" {
		t.Errorf("the backend does not hold generation 2's value: %v", err)
	}
	if got := b.metrics.DeadClaims.WithLabelValues("over"); testutil.ToFloat64(got) < 1 {
		t.Error("keyrelay_dead_claim_decisions_total{outcome=over} not counted")
	}
}

// TestFailedReleaseHandsTheEventBack: a message is acknowledged or
// terminated only once its claim is gone. An event whose write fails for
// good (dead-lettered) and whose claim release then fails (NATS trouble)
// is handed back, its budget untouched, instead of being terminated with
// its claim left standing; its redelivery releases the claim and ends it.
func TestFailedReleaseHandsTheEventBack(t *testing.T) {
	var calls atomic.Int32
	defer worker.SetReleaseHook(func() error {
		if calls.Add(1) == 1 {
			return errors.New("injected: ledger unavailable")
		}
		return nil
	})()
	b := setup(t, setupOptions{wrap: map[string]func(providers.Provider) providers.Provider{"local": func(p providers.Provider) providers.Provider {
		return providertest.NewFaulty(p, providertest.FaultConfig{Permanent: func(n string) bool { return strings.HasSuffix(n, "/key-rel") }})
	}}})
	b.startWorker(nil)
	k := b.keyEvent(events.KeyCreated, "team-rel", "key-rel", 1, "sk-rel")
	b.publish(k)
	c := b.waitConfirmed([]*events.Event{k}, 20*time.Second)[k.ID]
	if c == nil || c.Status != events.StatusFailed {
		t.Fatalf("confirmation: %+v, want failed", c)
	}
	if c.Attempts < 2 {
		t.Errorf("confirmed at delivery %d: the delivery whose release failed was not handed back", c.Attempts)
	}
	le, _, err := b.ledgerGet("team-rel", "key-rel")
	if err != nil {
		t.Fatal(err)
	}
	if le != nil && le.Claim != nil {
		t.Errorf("ended with its claim still standing: %+v", le.Claim)
	}
	if n := calls.Load(); n < 2 {
		t.Errorf("%d release attempts, want the failed one and the redelivery's", n)
	}
}

// TestUnwritableEventsTakeNoClaim: an event its team does not store
// (store_virtual_keys false) or may not write (read_only) is confirmed
// skipped or rejected without a ledger write; the ledger is only read, so
// an older event of such a team is still confirmed superseded, not
// rejected. On one server and on a 3-node cluster, where the read is the
// leader's.
func TestUnwritableEventsTakeNoClaim(t *testing.T) {
	t.Run("single", func(t *testing.T) { unwritableEventsTakeNoClaim(t, false) })
	t.Run("cluster", func(t *testing.T) { unwritableEventsTakeNoClaim(t, true) })
}

func unwritableEventsTakeNoClaim(t *testing.T, cluster bool) {
	b := setup(t, setupOptions{cluster: cluster})
	b.startWorker(nil)
	e2 := b.keyEvent(events.KeyCreated, "team-ro", "key-u", 2, "sk-u2")
	b.publish(e2)
	if c := b.waitConfirmed([]*events.Event{e2}, 20*time.Second)[e2.ID]; c == nil || c.Status != events.StatusStored {
		t.Fatalf("before read_only: %+v", c)
	}
	_, rev, err := b.ledgerGet("team-ro", "key-u")
	if err != nil || rev == 0 {
		t.Fatalf("ledger after the write: rev %d, %v", rev, err)
	}

	f := false
	ro := b.settingsEvent("team-ro", 1, &events.TeamSettings{AccessMode: events.AccessReadOnly})
	off0 := b.settingsEvent("team-off", 1, &events.TeamSettings{StoreVirtualKeys: &f})
	b.publish(ro, off0)
	// Applied: the worker knows them before the key events arrive (one
	// that arrives first claims while it looks them up, as their last
	// known settings said to, and releases).
	b.waitConfirmed([]*events.Event{ro, off0}, 20*time.Second)
	e1 := b.keyEvent(events.KeyRotated, "team-ro", "key-u", 1, "sk-u1")
	e3 := b.keyEvent(events.KeyRotated, "team-ro", "key-u", 3, "sk-u3")
	off := b.keyEvent(events.KeyCreated, "team-off", "key-u", 1, "sk-off")
	b.publish(e1, e3, off)
	cs := b.waitConfirmed([]*events.Event{e1, e3, off}, 20*time.Second)
	for _, want := range []struct {
		ev     *events.Event
		status events.Status
	}{{e1, events.StatusSuperseded}, {e3, events.StatusRejected}, {off, events.StatusSkipped}} {
		if c := cs[want.ev.ID]; c == nil || c.Status != want.status {
			t.Errorf("generation %d of %s: %+v, want %s", want.ev.Generation, want.ev.TeamID, c, want.status)
		}
	}
	if _, after, err := b.ledgerGet("team-ro", "key-u"); err != nil || after != rev {
		t.Errorf("read_only team's ledger entry rewritten: revision %d, then %d (%v)", rev, after, err)
	}
	if le, _, err := b.ledgerGet("team-off", "key-u"); err != nil || le != nil {
		t.Errorf("store_virtual_keys=false team has a ledger entry: %+v (%v)", le, err)
	}

	// Settings that change just before a key event: whether the worker
	// has applied them when the event arrives or looks them up then (its
	// guess from the last known settings proven wrong), the event follows
	// the new ones.
	rw := events.AccessReadAndWrite
	e4 := b.keyEvent(events.KeyRotated, "team-ro", "key-u", 4, "sk-u4")
	newOff := b.keyEvent(events.KeyCreated, "team-on", "key-u", 1, "sk-on")
	b.publish(b.settingsEvent("team-ro", 2, &events.TeamSettings{AccessMode: rw}), e4,
		b.settingsEvent("team-on", 1, &events.TeamSettings{StoreVirtualKeys: &f}), newOff)
	cs = b.waitConfirmed([]*events.Event{e4, newOff}, 20*time.Second)
	if c := cs[e4.ID]; c == nil || c.Status != events.StatusRotated {
		t.Errorf("after read_write again: %+v, want rotated", c)
	} else if got := b.value("local", c.SecretRef); got != "sk-u4" {
		t.Errorf("after read_write again the secret holds %q", got)
	}
	if c := cs[newOff.ID]; c == nil || c.Status != events.StatusSkipped {
		t.Errorf("right after store_virtual_keys false: %+v, want skipped", c)
	}
	if le, _, err := b.ledgerGet("team-on", "key-u"); err != nil || (le != nil && le.Claim != nil) {
		t.Errorf("right after store_virtual_keys false, a claim stands: %+v (%v)", le, err)
	}
}
