package recovery_test

import (
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/recovery"
)

// TestSweeperLeaseStandsWhateverTheLocalClock: another sweeper, its clock
// right, runs a team's move and renewed its 30 s lease on the record 5 s
// ago. A sweeper whose clock is ten minutes ahead reads the lease's end,
// written from the other's clock, against the server's time too (the
// record's stored time): it leaves the record alone instead of taking
// the move over (two sweepers on one record). Before, it went by its
// clock alone and took the record. A lease that ended by every clock is
// taken over, and the move finished.
func TestSweeperLeaseStandsWhateverTheLocalClock(t *testing.T) {
	const team, holder, lease = "team-a", "sweeper-elsewhere", 30 * time.Second
	for name, tc := range map[string]struct {
		renewed time.Duration // how long ago the holder renewed its lease
		taken   bool
	}{
		"renewed 5 s ago":   {renewed: 5 * time.Second},
		"renewed 1 min ago": {renewed: time.Minute, taken: true},
	} {
		t.Run(name, func(t *testing.T) {
			p := newPipeline(t)
			p.publish(t, p.event(t, events.KeyCreated, team, "key-00", 1, sentinel))
			p.settings(t, team, 10, moveTarget)
			m := recovery.Migrations{KV: p.js2, JS: p.js}
			running := &recovery.MigrationRecord{Team: team, To: moveTarget, State: recovery.MigrationRunning,
				RequestedAt: time.Now().UTC(), Holder: holder, LeaseUntil: time.Now().Add(lease - tc.renewed).UTC()}
			if err := m.Record(p.ctx, running); err != nil {
				t.Fatal(err)
			}
			_, rev, err := m.Get(p.ctx, team)
			if err != nil {
				t.Fatal(err)
			}

			sw := recovery.NewSweeper(p.deps(), m, recovery.SweeperConfig{Grace: time.Hour, Lease: lease})
			sw.SetClock(func() time.Time { return time.Now().Add(10 * time.Minute) })
			if err := sw.Sweep(p.ctx); err != nil {
				t.Fatal(err)
			}
			r, after, err := m.Get(p.ctx, team)
			if err != nil || r == nil {
				t.Fatalf("record after the sweep: %+v, %v", r, err)
			}
			if !tc.taken {
				if after != rev || r.Holder != holder || r.State != recovery.MigrationRunning {
					t.Fatalf("a sweeper 10m ahead took over a live lease: record %+v (revision %d, was %d)", r, after, rev)
				}
				if got := value(t, p, p.store2, secretName(team, "key-00")); got != "" {
					t.Fatal("a sweeper 10m ahead moved a key of a move another sweeper runs")
				}
				return
			}
			if r.State != recovery.MigrationMoved || r.Holder != "" || r.Moved != 1 {
				t.Fatalf("a lease ended by every clock was not taken over: record %+v", r)
			}
		})
	}
}
