package recovery_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/recovery"
	"github.com/keyrelay/keyrelay/worker"
)

// TestOneCorruptLedgerEntryBreaksNoOtherTeam: a ledger entry of team-x
// that does not decode, and a ledger key that is not <team>.<key>, used
// to make every scan of the ledger fail, so drift and restore failed for
// every team. Now drift and restore of team-a work (team-x's entries are
// not even decoded), drift of every team reports the two entries with a
// reason (never a value) and checks the rest, and --strict refuses.
func TestOneCorruptLedgerEntryBreaksNoOtherTeam(t *testing.T) {
	p := newPipeline(t)
	var evs []*events.Event
	for i := range 3 {
		evs = append(evs, p.event(t, events.KeyCreated, "team-a", fmt.Sprintf("key-%02d", i), 1, sentinel))
		evs = append(evs, p.event(t, events.KeyCreated, "team-x", fmt.Sprintf("key-%02d", i), 1, sentinel))
	}
	p.publish(t, evs...)
	lkv, err := p.js.KeyValue(p.ctx, worker.LedgerBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lkv.Put(p.ctx, worker.LedgerKey("team-x", "key-00"), []byte(`{"generation":1,"sealed":"`+sentinel)); err != nil {
		t.Fatal(err)
	}
	if _, err := lkv.Put(p.ctx, "not-a-ledger-key", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	// A key of team-a lost from its backend: restore has work to do.
	if err := p.store.Delete(p.ctx, providers.DeleteRequest{Name: secretName("team-a", "key-01"), Owner: providers.Owner{TeamID: "team-a", KeyID: "key-01"}, Force: true}); err != nil {
		t.Fatal(err)
	}

	var reported []worker.SkippedEntry
	d := p.deps()
	d.LedgerSkipped = func(se worker.SkippedEntry) { reported = append(reported, se) }

	rep, err := recovery.Drift(p.ctx, d, recovery.Config{Teams: []string{"team-a"}})
	if err != nil {
		t.Fatalf("drift of team-a: %v", err)
	}
	if len(rep.Rows) != 3 || rep.Drifted() != 1 || len(rep.LedgerSkipped) != 0 || len(reported) != 0 {
		t.Fatalf("drift of team-a: rows %+v skipped %+v reported %+v", rep.Rows, rep.LedgerSkipped, reported)
	}

	rep, err = recovery.Drift(p.ctx, d, recovery.Config{All: true})
	if err != nil {
		t.Fatalf("drift of every team: %v", err)
	}
	if len(rep.Rows) != 5 || len(rep.LedgerSkipped) != 2 || len(reported) != 2 {
		t.Fatalf("drift of every team: %d rows, skipped %+v, reported %+v", len(rep.Rows), rep.LedgerSkipped, reported)
	}
	keys := map[string]bool{}
	for _, se := range rep.LedgerSkipped {
		keys[se.Key] = true
		if se.Reason == "" {
			t.Errorf("no reason for %s", se.Key)
		}
	}
	if !keys[worker.LedgerKey("team-x", "key-00")] || !keys["not-a-ledger-key"] {
		t.Errorf("skipped %+v", rep.LedgerSkipped)
	}
	b, _ := json.Marshal(rep)
	if strings.Contains(string(b), "SENTINEL") {
		t.Fatal("the report carries a value")
	}

	if _, err := recovery.Drift(p.ctx, d, recovery.Config{All: true, Strict: true}); !errors.Is(err, recovery.ErrLedgerEntriesSkipped) {
		t.Fatalf("strict drift: %v", err)
	}

	rrep, err := recovery.Restore(p.ctx, d, recovery.RestoreConfig{Config: recovery.Config{Teams: []string{"team-a"}}})
	if err != nil {
		t.Fatalf("restore of team-a: %v", err)
	}
	if rrep.Written != 1 || rrep.Failed != 0 {
		t.Fatalf("restore of team-a: written %d failed %d: %+v", rrep.Written, rrep.Failed, rrep.Rows)
	}
	if got := value(t, p, p.store, secretName("team-a", "key-01")); got != sentinel {
		t.Errorf("restored value %q", got)
	}
}
