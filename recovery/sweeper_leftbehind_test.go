package recovery_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/recovery"
	"github.com/keyrelay/keyrelay/worker"
)

// TestSweeperDoesNotFinishAMoveWithAKeyLeftBehind: a key held by a worker
// (its claim renewed) through the move's three waits is left on the old
// backend. The migration must not be marked moved (and later deleted as
// finished) with that key still living on the old backend: it is tried
// again at the next sweep, and moves once the claim is gone.
func TestSweeperDoesNotFinishAMoveWithAKeyLeftBehind(t *testing.T) {
	p := newPipeline(t)
	for i := range 2 {
		p.publish(t, p.event(t, events.KeyCreated, "team-a", fmt.Sprintf("key-%02d", i), 1, sentinel))
	}
	p.settings(t, "team-a", 10, moveTarget)
	e, rev, err := p.ledger.Get(p.ctx, "team-a", "key-01")
	if err != nil || e == nil {
		t.Fatal(e, err)
	}
	held := *e
	held.Claim = &worker.Claim{EventID: "busy", Generation: e.Generation + 1, Worker: "worker-busy", Until: time.Now().Add(time.Minute)}
	rev, err = p.ledger.Put(p.ctx, "team-a", "key-01", &held, rev)
	if err != nil {
		t.Fatal(err)
	}
	m := recovery.Migrations{KV: p.js2, JS: p.js}
	if err := m.Request(p.ctx, "team-a", moveTarget); err != nil {
		t.Fatal(err)
	}
	sw := recovery.NewSweeper(p.deps(), m, recovery.SweeperConfig{Grace: time.Hour, ClaimLease: 100 * time.Millisecond})
	if err := sw.Sweep(p.ctx); err != nil {
		t.Fatal(err)
	}
	if e, _, _ := p.ledger.Get(p.ctx, "team-a", "key-01"); e.Provider == moveTarget {
		t.Fatal("the held key was moved under another's claim")
	}
	r, _, err := m.Get(p.ctx, "team-a")
	if err != nil || r == nil {
		t.Fatal(r, err)
	}
	if r.State == recovery.MigrationMoved {
		t.Fatalf("migration marked moved with key-01 still on the old backend: %+v", r)
	}
	// The claim ends; the next sweep moves it.
	e.Claim = nil
	if _, err := p.ledger.Put(p.ctx, "team-a", "key-01", e, rev); err != nil {
		t.Fatal(err)
	}
	if err := sw.Sweep(p.ctx); err != nil {
		t.Fatal(err)
	}
	if e, _, _ := p.ledger.Get(p.ctx, "team-a", "key-01"); e.Provider != moveTarget {
		t.Fatalf("key-01 not moved by the next sweep: %+v", e)
	}
	if r, _, _ := m.Get(p.ctx, "team-a"); r == nil || r.State != recovery.MigrationMoved {
		t.Fatalf("record after the second sweep: %+v", r)
	}
}
