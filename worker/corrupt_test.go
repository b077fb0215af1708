package worker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/worker"
)

// counterValue sums the samples of the counter name whose labels include
// the given ones (0 when there are none).
func counterValue(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// TestCorruptEntriesWaitLoudly: an event whose ledger entry, or whose
// team's settings entry, does not decode is handed back (never
// dead-lettered) and the entry is reported: an Error log naming the bucket
// and key (never the value) and keyrelay_corrupt_entries_total{bucket}.
// Other keys' events are confirmed meanwhile.
func TestCorruptEntriesWaitLoudly(t *testing.T) {
	const garbage = "not json SENTINEL-91b3"
	b := setup(t, setupOptions{})
	lkv, err := b.js.KeyValue(b.ctx, worker.LedgerBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lkv.Put(b.ctx, worker.LedgerKey("team-a", "key-bad"), []byte(garbage)); err != nil {
		t.Fatal(err)
	}
	tkv, err := b.js.KeyValue(b.ctx, worker.TeamsBucket)
	if err != nil {
		t.Fatal(err)
	}
	b.startWorker(nil)
	// Published once the worker runs: the teams watch has already loaded.
	if _, err := tkv.Put(b.ctx, "team-c", []byte(garbage)); err != nil {
		t.Fatal(err)
	}
	// A settings event of team-c makes its key events read the bucket.
	b.publish(b.settingsEvent("team-c", 1, &events.TeamSettings{}))
	bad := b.keyEvent(events.KeyCreated, "team-a", "key-bad", 1, "sk-bad")
	badTeam := b.keyEvent(events.KeyCreated, "team-c", "key-1", 1, "sk-team-c")
	good := b.keyEvent(events.KeyCreated, "team-a", "key-good", 1, "sk-good")
	b.publish(bad, badTeam, good)

	testenv.Eventually(t, 20*time.Second, "both corrupt entries counted", func() bool {
		return counterValue(t, b.promReg, "keyrelay_corrupt_entries_total", map[string]string{"bucket": worker.LedgerBucket}) >= 1 &&
			counterValue(t, b.promReg, "keyrelay_corrupt_entries_total", map[string]string{"bucket": worker.TeamsBucket}) >= 1
	})
	cs := byEventID(b.confirmations(1, 30*time.Second))
	if c := cs[good.ID]; c == nil || c.Status != events.StatusStored {
		t.Errorf("another key's event: %+v, want stored", c)
	}
	time.Sleep(500 * time.Millisecond)
	cs = byEventID(b.confirmations(1, time.Second))
	for _, ev := range []*events.Event{bad, badTeam} {
		if c := cs[ev.ID]; c != nil {
			t.Errorf("an event over a corrupt entry was confirmed: %+v", c)
		}
	}
	if n := len(b.rawMessages(worker.DLQStream)); n != 0 {
		t.Errorf("%d dead letters, want none (the entry is ours, not the event's)", n)
	}
	logs := b.logs.String()
	var ledgerLogged, teamsLogged bool
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, `"level":"error"`) || !strings.Contains(line, "corrupt entry") {
			continue
		}
		ledgerLogged = ledgerLogged || strings.Contains(line, worker.LedgerKey("team-a", "key-bad"))
		teamsLogged = teamsLogged || strings.Contains(line, worker.TeamsBucket)
	}
	if !ledgerLogged || !teamsLogged {
		t.Errorf("no error log naming each corrupt entry (ledger %v, teams %v):\n%s", ledgerLogged, teamsLogged, tail(logs, 4000))
	}
	if strings.Contains(logs, "SENTINEL-91b3") {
		t.Error("the logs quote the corrupt entry's bytes")
	}
	// Repaired (an empty entry put over it: the key's next event writes
	// it afresh), the entry no longer holds the event back.
	if _, err := lkv.Put(b.ctx, worker.LedgerKey("team-a", "key-bad"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if c := byEventID(b.confirmations(2, 30*time.Second))[bad.ID]; c == nil || c.Status != events.StatusStored {
		t.Errorf("after the repair: %+v, want stored", c)
	}
}

// TestTeamsEntryNamingAnotherTeamIsIgnored: a teams bucket entry speaks
// for the team of its key only. One under key "x" whose value names
// team-b, with settings that skip every write and the highest applied
// sequence, changes nothing for team-b: its key events are still written.
func TestTeamsEntryNamingAnotherTeamIsIgnored(t *testing.T) {
	b := setup(t, setupOptions{})
	tkv, err := b.js.KeyValue(b.ctx, worker.TeamsBucket)
	if err != nil {
		t.Fatal(err)
	}
	forged := []byte(`{"team":"team-b","applied_seq":18446744073709551615,"settings":{"store_virtual_keys":false}}`)
	if _, err := tkv.Put(b.ctx, "x", forged); err != nil {
		t.Fatal(err)
	}
	b.startWorker(nil)
	// And once more while the watch runs.
	if _, err := tkv.Put(b.ctx, "y", forged); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	ev := b.keyEvent(events.KeyCreated, "team-b", "key-1", 1, "sk-team-b")
	b.publish(ev)
	if c := byEventID(b.confirmations(1, 30*time.Second))[ev.ID]; c == nil || c.Status != events.StatusStored {
		t.Fatalf("team-b's event: %+v, want stored", c)
	}
	if got := b.value("local", "litellm/team-b/key-1"); got != "sk-team-b" {
		t.Errorf("backend holds %q", got)
	}
	if !strings.Contains(b.logs.String(), "whose team is not its key") {
		t.Error("no warning about the entry")
	}
}
