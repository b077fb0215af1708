package recovery_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/local"
	"github.com/keyrelay/keyrelay/recovery"
	"github.com/keyrelay/keyrelay/worker"
)

// moveTarget is the name the second store is registered under.
const moveTarget = "hashicorp_vault"

func (p *pipeline) settings(t *testing.T, team string, gen uint64, backend string) {
	t.Helper()
	ev := &events.Event{SpecVersion: events.SpecVersion, ID: fmt.Sprintf("s-%s-%d", team, gen), Type: events.TeamSettingsUpdated,
		Time: time.Now().UTC(), TeamID: team, Generation: gen}
	ev.Data, _ = json.Marshal(events.SettingsData{Settings: events.TeamSettings{Backend: backend}})
	p.publish(t, ev)
	for p.cfg.Resolve(p.teams.Cached(team).Settings).Backend != backend {
		if p.ctx.Err() != nil {
			t.Fatal("settings not applied")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// value reads name from s ("" when absent).
func value(t *testing.T, p *pipeline, s *local.Provider, name string) string {
	t.Helper()
	sec, err := s.Get(p.ctx, name, "")
	if err != nil {
		return ""
	}
	return string(sec.Value)
}

// TestMigrateMovesEveryKeyAndCleansUpAfterGrace: a team moves from one
// backend to another while rotations are published. Every key ends in the
// new backend at its newest value, the ledger points there, the old copies
// stay through the grace period and are deleted after it; a second move
// writes nothing.
func TestMigrateMovesEveryKeyAndCleansUpAfterGrace(t *testing.T) {
	p := newPipeline(t)
	const n = 40
	newest := map[string]string{}
	var evs []*events.Event
	for i := range n {
		k := fmt.Sprintf("key-%02d", i)
		newest[k] = fmt.Sprintf("%s-%d-g1", sentinel, i)
		evs = append(evs, p.event(t, events.KeyCreated, "team-a", k, 1, newest[k]))
	}
	evs = append(evs, p.event(t, events.KeyCreated, "team-b", "key-00", 1, sentinel+"-b"))
	p.publish(t, evs...)
	p.publish(t, p.event(t, events.KeyDeleted, "team-a", "key-39", 2, ""))
	delete(newest, "key-39")

	p.settings(t, "team-a", 10, moveTarget)
	// Rotations published during the move.
	var wg sync.WaitGroup
	var rots []*events.Event
	for i := 0; i < 10; i++ {
		k := fmt.Sprintf("key-%02d", i*3)
		newest[k] = fmt.Sprintf("%s-%d-g2", sentinel, i*3)
		rots = append(rots, p.event(t, events.KeyRotated, "team-a", k, 2, newest[k]))
	}
	wg.Add(1)
	go func() { defer wg.Done(); p.publish(t, rots...) }()
	var progress []recovery.Progress
	rep, err := recovery.Migrate(p.ctx, p.deps(), recovery.MigrateConfig{Team: "team-a", To: moveTarget, Grace: time.Hour,
		Progress: func(pr recovery.Progress) { progress = append(progress, pr) }})
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed != 0 || rep.Moved+rep.Verified != n-1 || rep.Moved == 0 {
		t.Fatalf("moved %d, verified %d, skipped %d, failed %d; want %d moved or verified: %+v", rep.Moved, rep.Verified, rep.Skipped, rep.Failed, n-1, rep.Rows)
	}
	if len(progress) != n-1 || progress[len(progress)-1].Done != n-1 {
		t.Errorf("progress: %d calls, last %+v", len(progress), progress[len(progress)-1])
	}
	// Each key once: a key rotated while the move listed the team is
	// neither left out nor counted twice (TestMigrateScanFindsAKeyTheWatchMissed).
	rows := map[string]int{}
	for _, r := range rep.Rows {
		rows[r.Key]++
	}
	for k := range newest {
		if rows[k] != 1 {
			t.Errorf("%s: %d rows in the report, want 1", k, rows[k])
		}
	}
	if rep.DeleteAfter.Before(time.Now().Add(59 * time.Minute)) {
		t.Errorf("delete after %s, want about an hour from now", rep.DeleteAfter)
	}
	b, _ := json.Marshal(rep)
	if strings.Contains(string(b), "SENTINEL") {
		t.Fatal("the report carries a value")
	}

	check := func(stage string, oldCopies bool) {
		t.Helper()
		for k, v := range newest {
			name := secretName("team-a", k)
			if got := value(t, p, p.store2, name); got != v {
				t.Errorf("%s: %s in the new backend: %q, want %q", stage, k, got, v)
			}
			e, _, err := p.ledger.Get(p.ctx, "team-a", k)
			if err != nil || e.Provider != moveTarget || e.SecretRef != name {
				t.Errorf("%s: ledger of %s: %+v (%v)", stage, k, e, err)
			}
			if has := value(t, p, p.store, name) != ""; has != oldCopies {
				t.Errorf("%s: %s old copy present %v, want %v", stage, k, has, oldCopies)
			}
			if !oldCopies && len(e.Sources) != 0 {
				t.Errorf("%s: %s still records sources %+v", stage, k, e.Sources)
			}
		}
		if got := value(t, p, p.store2, secretName("team-a", "key-39")); got != "" {
			t.Errorf("%s: the deleted key was moved", stage)
		}
		if got := value(t, p, p.store, secretName("team-b", "key-00")); got != sentinel+"-b" {
			t.Errorf("%s: another team's key changed", stage)
		}
	}
	check("after the move", true)

	// Within the grace period nothing is deleted.
	cr, err := recovery.Cleanup(p.ctx, p.deps(), recovery.CleanupConfig{Team: "team-a", Grace: time.Hour})
	if err != nil || cr.Deleted != 0 || cr.Pending != n-1 {
		t.Fatalf("cleanup within grace: %+v, %v", cr, err)
	}
	// A second move writes nothing.
	again, err := recovery.Migrate(p.ctx, p.deps(), recovery.MigrateConfig{Team: "team-a", To: moveTarget, Grace: time.Hour})
	if err != nil || again.Moved != 0 || again.Verified != n-1 {
		t.Fatalf("second move: moved %d verified %d failed %d (%v)", again.Moved, again.Verified, again.Failed, err)
	}
	// After it, every old copy goes. (A grace of a nanosecond rather than a
	// clock two hours ahead: a cleanup's clock alone no longer ends the
	// grace, the server's time must pass it too.)
	cr, err = recovery.Cleanup(p.ctx, p.deps(), recovery.CleanupConfig{Team: "team-a", Grace: time.Nanosecond})
	if err != nil || cr.Deleted != n-1 || cr.Pending != 0 || cr.Failed != 0 {
		t.Fatalf("cleanup after grace: deleted %d pending %d failed %d (%v): %+v", cr.Deleted, cr.Pending, cr.Failed, err, cr.Rows)
	}
	check("after the cleanup", false)
	// Rotations after the move land in the new backend only.
	p.publish(t, p.event(t, events.KeyRotated, "team-a", "key-01", 5, sentinel+"-g5"))
	if got := value(t, p, p.store2, secretName("team-a", "key-01")); got != sentinel+"-g5" {
		t.Errorf("rotation after the move: %q", got)
	}
	if value(t, p, p.store, secretName("team-a", "key-01")) != "" {
		t.Error("rotation after the move wrote the old backend")
	}
}

// TestMigrateWaitsForACreateInFlight: a key whose create is being written
// when the move starts (a claim, no generation yet) may land on the old
// backend, its worker having read the team's settings before they moved.
// The move waits for that write and moves the key; before, the scan left
// such a key out and it stayed on the old backend.
func TestMigrateWaitsForACreateInFlight(t *testing.T) {
	p := newPipeline(t)
	p.publish(t, p.event(t, events.KeyCreated, "team-a", "key-00", 1, sentinel+"-0"))
	p.publish(t, p.event(t, events.KeyCreated, "team-a", "key-01", 1, sentinel+"-1"))
	committed, rev, err := p.ledger.Get(p.ctx, "team-a", "key-01")
	if err != nil || committed == nil || committed.Provider == moveTarget {
		t.Fatalf("ledger of key-01: %+v, %v", committed, err)
	}
	// Put key-01 back to the moment before its create committed: the
	// worker's claim on an entry with no generation.
	inFlight := &worker.LedgerEntry{Claim: &worker.Claim{EventID: committed.EventID, Generation: committed.Generation,
		Worker: "worker-stalled", Until: time.Now().Add(time.Second)}}
	rev, err = p.ledger.Put(p.ctx, "team-a", "key-01", inFlight, rev)
	if err != nil {
		t.Fatal(err)
	}
	p.settings(t, "team-a", 10, moveTarget)
	// The create commits while the move runs, on the old backend.
	done := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		_, err := p.ledger.Put(p.ctx, "team-a", "key-01", committed, rev)
		done <- err
	}()
	rep, err := recovery.Migrate(p.ctx, p.deps(), recovery.MigrateConfig{Team: "team-a", To: moveTarget, Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if rep.Moved != 2 || rep.Failed != 0 {
		t.Fatalf("moved %d, skipped %d, failed %d; want both keys moved: %+v", rep.Moved, rep.Skipped, rep.Failed, rep.Rows)
	}
	for i, k := range []string{"key-00", "key-01"} {
		if got, want := value(t, p, p.store2, secretName("team-a", k)), fmt.Sprintf("%s-%d", sentinel, i); got != want {
			t.Errorf("%s in the new backend: %q, want %q", k, got, want)
		}
		if e, _, err := p.ledger.Get(p.ctx, "team-a", k); err != nil || e.Provider != moveTarget || e.Claim != nil {
			t.Errorf("ledger of %s: %+v (%v)", k, e, err)
		}
	}

	// A create whose worker stopped before committing is not moved: its
	// redelivery writes the team's current backend.
	if _, err := p.ledger.Put(p.ctx, "team-a", "key-02", &worker.LedgerEntry{Claim: &worker.Claim{EventID: "dead", Generation: 1,
		Worker: "worker-dead", Until: time.Now().Add(-time.Second)}}, 0); err != nil {
		t.Fatal(err)
	}
	rep, err = recovery.Migrate(p.ctx, p.deps(), recovery.MigrateConfig{Team: "team-a", To: moveTarget, Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Verified != 2 || rep.Skipped != 1 || rep.Moved != 0 || rep.Failed != 0 {
		t.Fatalf("second move: verified %d, skipped %d, moved %d, failed %d: %+v", rep.Verified, rep.Skipped, rep.Moved, rep.Failed, rep.Rows)
	}
}

// TestMigrateRefusesBeforeTheSettingsMove: moving keys while the team's
// settings still name the old backend would let the next rotation write
// them back there.
func TestMigrateRefusesBeforeTheSettingsMove(t *testing.T) {
	p := newPipeline(t)
	p.publish(t, p.event(t, events.KeyCreated, "team-a", "key-00", 1, sentinel))
	_, err := recovery.Migrate(p.ctx, p.deps(), recovery.MigrateConfig{Team: "team-a", To: moveTarget})
	if err == nil || !strings.Contains(err.Error(), "settings") {
		t.Fatalf("got %v, want ErrNotMoved", err)
	}
	if value(t, p, p.store2, secretName("team-a", "key-00")) != "" {
		t.Fatal("a key was moved")
	}
}

// TestCleanupNeverDeletesWhatIsNotTheKeys: an old name that now holds a
// secret keyrelay does not own for the key is left alone.
func TestCleanupNeverDeletesWhatIsNotTheKeys(t *testing.T) {
	p := newPipeline(t)
	p.publish(t, p.event(t, events.KeyCreated, "team-a", "key-00", 1, sentinel), p.event(t, events.KeyCreated, "team-a", "key-01", 1, sentinel))
	p.settings(t, "team-a", 10, moveTarget)
	if rep, err := recovery.Migrate(p.ctx, p.deps(), recovery.MigrateConfig{Team: "team-a", To: moveTarget}); err != nil || rep.Moved != 2 {
		t.Fatalf("%+v %v", rep, err)
	}
	// Someone else's secret under key-00's old name.
	if _, err := p.store.Put(p.ctx, providers.PutRequest{Name: secretName("team-a", "key-00"), Value: []byte("foreign"), IdempotencyKey: "x",
		Owner: providers.Owner{TeamID: "team-z", KeyID: "other"}, Adopt: true}); err != nil {
		t.Fatal(err)
	}
	cr, err := recovery.Cleanup(p.ctx, p.deps(), recovery.CleanupConfig{Team: "team-a", Force: true})
	if err != nil || cr.Deleted != 1 || cr.Failed != 0 {
		t.Fatalf("cleanup: %+v %v", cr, err)
	}
	if value(t, p, p.store, secretName("team-a", "key-00")) != "foreign" {
		t.Fatal("a secret keyrelay does not own was deleted")
	}
	if value(t, p, p.store, secretName("team-a", "key-01")) != "" {
		t.Fatal("key-01's old copy is still there")
	}
}

// TestSweeperMovesOnRequestAndCleansUp: the path of
// keyrelay.migration.on_settings_change: a requested move is run by the
// sweeper of `keyrelay serve`, then the old copies go when the grace ends.
func TestSweeperMovesOnRequestAndCleansUp(t *testing.T) {
	p := newPipeline(t)
	for i := range 5 {
		p.publish(t, p.event(t, events.KeyCreated, "team-a", fmt.Sprintf("key-%02d", i), 1, sentinel))
	}
	p.settings(t, "team-a", 10, moveTarget)
	m := recovery.Migrations{KV: p.js2, JS: p.js}
	if err := m.Request(p.ctx, "team-a", moveTarget); err != nil {
		t.Fatal(err)
	}
	sw := recovery.NewSweeper(p.deps(), m, recovery.SweeperConfig{Grace: time.Nanosecond})
	if err := sw.Sweep(p.ctx); err != nil {
		t.Fatal(err)
	}
	r, _, err := m.Get(p.ctx, "team-a")
	if err != nil || r == nil || r.State != recovery.MigrationMoved || r.Moved != 5 {
		t.Fatalf("record after the move: %+v %v", r, err)
	}
	for i := range 5 {
		if value(t, p, p.store2, secretName("team-a", fmt.Sprintf("key-%02d", i))) != sentinel {
			t.Fatalf("key-%02d not moved", i)
		}
	}
	if err := sw.Sweep(p.ctx); err != nil {
		t.Fatal(err)
	}
	if r, _, err := m.Get(p.ctx, "team-a"); err != nil || r != nil {
		t.Fatalf("record after the cleanup: %+v %v", r, err)
	}
	for i := range 5 {
		if value(t, p, p.store, secretName("team-a", fmt.Sprintf("key-%02d", i))) != "" {
			t.Fatalf("key-%02d: old copy left", i)
		}
	}
}
