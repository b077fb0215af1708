package recovery_test

import (
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/recovery"
)

// TestCleanupKeepsOldCopiesWhateverTheLocalClock: a cleanup runs on a
// machine whose clock is two hours ahead, with a grace of one hour, over
// an old copy the move recorded ten minutes ago (by the servers' time).
// The copy's Since was written from the moving process's clock, so its
// grace ends only once both this process's clock and the server's time
// have passed it: the copy stays (the gateway may still read it during the
// grace), and the cleanup says when, by its own clock, it is due. Before,
// the cleanup went by its clock alone and deleted the copy at once. A copy
// recorded two hours ago is past its grace by every clock and goes.
func TestCleanupKeepsOldCopiesWhateverTheLocalClock(t *testing.T) {
	const team, key, grace, skew = "team-a", "key-00", time.Hour, 2 * time.Hour
	ahead := func() time.Time { return time.Now().Add(skew) }
	for name, tc := range map[string]struct {
		recorded time.Duration // how long ago the old copy was recorded
		deleted  bool
	}{
		"recorded 10 minutes ago": {recorded: 10 * time.Minute},
		"recorded 2 hours ago":    {recorded: 2 * time.Hour, deleted: true},
	} {
		t.Run(name, func(t *testing.T) {
			p := newPipeline(t)
			p.publish(t, p.event(t, events.KeyCreated, team, key, 1, sentinel))
			p.settings(t, team, 10, moveTarget)
			rep, err := recovery.Migrate(p.ctx, p.deps(), recovery.MigrateConfig{Team: team, To: moveTarget, Grace: grace})
			if err != nil || rep.Moved != 1 {
				t.Fatalf("move: %+v, %v", rep, err)
			}
			// Date the recorded copy back (the move's clock is right).
			e, rev, err := p.ledger.Get(p.ctx, team, key)
			if err != nil || len(e.Sources) != 1 {
				t.Fatalf("ledger after the move: %+v, %v", e, err)
			}
			e.Sources[0].Since = time.Now().Add(-tc.recorded)
			if _, err := p.ledger.Put(p.ctx, team, key, e, rev); err != nil {
				t.Fatal(err)
			}

			cr, err := recovery.Cleanup(p.ctx, p.deps(), recovery.CleanupConfig{Team: team, Grace: grace, Now: ahead})
			if err != nil {
				t.Fatal(err)
			}
			old := value(t, p, p.store, secretName(team, key))
			if !tc.deleted {
				if cr.Deleted != 0 || cr.Pending != 1 || old != sentinel {
					t.Fatalf("a cleanup %v ahead deleted a copy still in its grace: deleted %d, pending %d, old copy %q: %+v",
						skew, cr.Deleted, cr.Pending, old, cr.Rows)
				}
				// Due once the server's time has passed Since + grace: by
				// this clock, skew later.
				if due := e.Sources[0].Since.Add(grace + skew); cr.NextDue.Before(due.Add(-time.Minute)) {
					t.Errorf("next due %v, want about %v (the end of the grace by the server's time, on this clock)", cr.NextDue, due)
				}
				return
			}
			if cr.Deleted != 1 || cr.Pending != 0 || old != "" {
				t.Fatalf("a copy past its grace by every clock: deleted %d, pending %d, old copy %q: %+v", cr.Deleted, cr.Pending, old, cr.Rows)
			}
		})
	}
}
