package recovery_test

import (
	"strings"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/recovery"
	"github.com/keyrelay/keyrelay/worker"
)

// TestSweeperKeepsTheRecordWhileAnEntryIsUnreadable: the cleanup after a
// move meets a ledger entry of the team that does not decode. The copies
// it may record are known to nobody else, so the move's record must stay
// (saying why) until the entry is repaired; the sweep after the repair
// ends it. It used to be deleted as soon as no readable entry had a copy
// pending, leaving the unreadable one's copies to a manual cleanup.
func TestSweeperKeepsTheRecordWhileAnEntryIsUnreadable(t *testing.T) {
	p := newPipeline(t)
	p.publish(t, p.event(t, events.KeyCreated, "team-a", "key-00", 1, sentinel))
	p.settings(t, "team-a", 10, moveTarget)
	m := recovery.Migrations{KV: p.js2, JS: p.js}
	if err := m.Request(p.ctx, "team-a", moveTarget); err != nil {
		t.Fatal(err)
	}
	const grace = 200 * time.Millisecond
	sw := recovery.NewSweeper(p.deps(), m, recovery.SweeperConfig{Grace: grace})
	sweep := func() *recovery.MigrationRecord {
		t.Helper()
		time.Sleep(2 * grace) // the old copies' grace period over
		if err := sw.Sweep(p.ctx); err != nil {
			t.Fatal(err)
		}
		r, _, err := m.Get(p.ctx, "team-a")
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := sweep(); r == nil || r.State != recovery.MigrationMoved {
		t.Fatalf("record after the move: %+v", r)
	}
	lkv, err := p.js.KeyValue(p.ctx, worker.LedgerBucket)
	if err != nil {
		t.Fatal(err)
	}
	bad := worker.LedgerKey("team-a", "key-bad")
	if _, err := lkv.Put(p.ctx, bad, []byte(`{"generation":1,"sources":[`)); err != nil {
		t.Fatal(err)
	}
	r := sweep()
	if r == nil {
		t.Fatal("the move's record was deleted while one of the team's ledger entries could not be read")
	}
	if !strings.Contains(r.LastError, "1 of the team's ledger entries could not be read") {
		t.Fatalf("record kept with last error %q; want it to say an entry could not be read", r.LastError)
	}
	if e, _, err := p.ledger.Get(p.ctx, "team-a", "key-00"); err != nil || len(e.Sources) != 0 {
		t.Fatalf("key-00's old copy not cleaned up beside the unreadable entry: %+v, %v", e, err)
	}
	// Repaired as documented: an empty entry in its place.
	if _, err := lkv.Put(p.ctx, bad, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if r := sweep(); r != nil {
		t.Fatalf("record after the entry was repaired: %+v; want the migration finished", r)
	}
}
