package worker_test

import (
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/worker"
)

// TestDeletedLedgerEntryIsWrittenAgain: a ledger key whose last message is
// a delete or purge marker (an operator's `nats kv del` or `kv purge`)
// reads as missing, but its subject is not empty. The key's next event
// still writes and commits: its commit used to expect sequence 0, conflict
// with the marker on every attempt, and never confirm.
func TestDeletedLedgerEntryIsWrittenAgain(t *testing.T) {
	b := setup(t, setupOptions{})
	b.startWorker(nil)
	lkv, err := b.js.KeyValue(b.ctx, worker.LedgerBucket)
	if err != nil {
		t.Fatal(err)
	}
	first := []*events.Event{
		b.keyEvent(events.KeyCreated, "team-a", "key-del", 1, "sk-del-1"),
		b.keyEvent(events.KeyCreated, "team-a", "key-purge", 1, "sk-purge-1"),
	}
	b.publish(first...)
	cs := byEventID(b.confirmations(2, 30*time.Second))
	for _, ev := range first {
		if c := cs[ev.ID]; c == nil || c.Status != events.StatusStored {
			t.Fatalf("%s: %+v, want stored", ev.KeyID, c)
		}
	}
	if err := lkv.Delete(b.ctx, worker.LedgerKey("team-a", "key-del")); err != nil {
		t.Fatal(err)
	}
	if err := lkv.Purge(b.ctx, worker.LedgerKey("team-a", "key-purge")); err != nil {
		t.Fatal(err)
	}
	second := []*events.Event{
		b.keyEvent(events.KeyRotated, "team-a", "key-del", 2, "sk-del-2"),
		b.keyEvent(events.KeyRotated, "team-a", "key-purge", 2, "sk-purge-2"),
	}
	b.publish(second...)
	cs = byEventID(b.confirmations(4, 30*time.Second))
	for _, ev := range second {
		if c := cs[ev.ID]; c == nil || c.Status != events.StatusRotated {
			t.Errorf("%s after its ledger entry was removed: %+v, want rotated", ev.KeyID, c)
		}
		e, err := lkv.Get(b.ctx, worker.LedgerKey("team-a", ev.KeyID))
		if err != nil {
			t.Errorf("%s: ledger entry not written again: %v", ev.KeyID, err)
			continue
		}
		if len(e.Value()) == 0 {
			t.Errorf("%s: empty ledger entry", ev.KeyID)
		}
	}
}
