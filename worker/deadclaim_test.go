package worker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/local"
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
