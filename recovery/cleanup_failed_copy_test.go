package recovery_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/recovery"
)

// failingDeletes fails the deletion of the names in fail; everything else
// reaches the store beneath.
type failingDeletes struct {
	providers.Provider
	mu   sync.Mutex
	fail map[string]bool
}

func (f *failingDeletes) Delete(ctx context.Context, req providers.DeleteRequest) error {
	f.mu.Lock()
	bad := f.fail[req.Name]
	f.mu.Unlock()
	if bad {
		return errors.New("backend unavailable")
	}
	return f.Provider.Delete(ctx, req)
}

func (f *failingDeletes) setFail(name string, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[name] = on
}

func (f *failingDeletes) Unwrap() providers.Provider { return f.Provider }

// TestCleanupRetriesAFailedOldCopy: an old copy whose deletion fails stays
// recorded in its ledger entry's Sources and counts as pending, so neither
// `migrate --cleanup` (which deletes the migration record only when nothing
// is pending) nor the sweeper of `keyrelay serve` drops the record while it
// is left: the sweeper deletes it at its next sweep, then removes the
// record. The ledger, not the record, holds what is left, so a cleanup run
// after the record is gone deletes a copy that failed too.
func TestCleanupRetriesAFailedOldCopy(t *testing.T) {
	p := newPipeline(t)
	// The old backend, before anything opened it: its deletions can fail.
	old := &failingDeletes{Provider: p.store, fail: map[string]bool{}}
	p.reg.Register("local", func(context.Context, providers.Config) (providers.Provider, error) { return old, nil })
	const team = "team-f"
	for _, k := range []string{"key-00", "key-01", "key-02"} {
		p.publish(t, p.event(t, events.KeyCreated, team, k, 1, sentinel))
	}
	p.settings(t, team, 10, moveTarget)
	if rep, err := recovery.Migrate(p.ctx, p.deps(), recovery.MigrateConfig{Team: team, To: moveTarget, Grace: time.Nanosecond}); err != nil || rep.Moved != 3 {
		t.Fatalf("migrate: %+v %v", rep, err)
	}
	m := recovery.Migrations{KV: p.js2, JS: p.js}
	if err := m.Record(p.ctx, &recovery.MigrationRecord{Team: team, To: moveTarget, State: recovery.MigrationMoved,
		MovedAt: time.Now().UTC(), DeleteAfter: time.Now().UTC(), Moved: 3}); err != nil {
		t.Fatal(err)
	}
	sources := func(key string) int {
		t.Helper()
		e, _, err := p.ledger.Get(p.ctx, team, key)
		if err != nil || e == nil {
			t.Fatalf("%s: %+v %v", key, e, err)
		}
		return len(e.Sources)
	}

	// The command's cleanup: key-01's deletion fails. Its copy stays
	// recorded and pending: the command keeps the record (rep.Pending).
	old.setFail(secretName(team, "key-01"), true)
	cr, err := recovery.Cleanup(p.ctx, p.deps(), recovery.CleanupConfig{Team: team, Force: true})
	if err != nil || cr.Deleted != 2 || cr.Failed != 1 || cr.Pending != 1 {
		t.Fatalf("cleanup with a failing deletion: deleted %d, failed %d, pending %d, %v; want 2, 1, 1", cr.Deleted, cr.Failed, cr.Pending, err)
	}
	if n := sources("key-01"); n != 1 {
		t.Fatalf("key-01's failed copy: %d recorded; want it kept in Sources", n)
	}

	// The sweeper meets the same failure: the record stays.
	sw := recovery.NewSweeper(p.deps(), m, recovery.SweeperConfig{Grace: time.Nanosecond})
	if err := sw.Sweep(p.ctx); err != nil {
		t.Fatal(err)
	}
	if r, _, err := m.Get(p.ctx, team); err != nil || r == nil {
		t.Fatalf("record after a sweep whose deletion failed: %+v %v; want it kept", r, err)
	}
	// The backend is back: the next sweep deletes the copy and ends the move.
	old.setFail(secretName(team, "key-01"), false)
	if err := sw.Sweep(p.ctx); err != nil {
		t.Fatal(err)
	}
	if r, _, err := m.Get(p.ctx, team); err != nil || r != nil {
		t.Fatalf("record after the copy was deleted: %+v %v; want it gone", r, err)
	}
	if value(t, p, p.store, secretName(team, "key-01")) != "" || sources("key-01") != 0 {
		t.Fatal("key-01's old copy is still there after the sweep")
	}

	// With no record at all: a copy that fails is retried by the next
	// cleanup, which reads what is left from the ledger.
	p.settings(t, team, 11, "local")
	p.publish(t, p.event(t, events.KeyRotated, team, "key-02", 2, sentinel+"-2")) // back on local, its moveTarget copy left
	p.settings(t, team, 12, moveTarget)
	p.publish(t, p.event(t, events.KeyRotated, team, "key-02", 3, sentinel+"-3")) // on moveTarget again, its local copy left
	if n := sources("key-02"); n != 1 {
		t.Fatalf("key-02: %d old copies recorded; want its local one", n)
	}
	if r, _, _ := m.Get(p.ctx, team); r != nil {
		t.Fatalf("a record %+v; this part runs without one", r)
	}
	old.setFail(secretName(team, "key-02"), true)
	if cr, err := recovery.Cleanup(p.ctx, p.deps(), recovery.CleanupConfig{Team: team, Force: true}); err != nil || cr.Failed != 1 || cr.Pending != 1 {
		t.Fatalf("cleanup: failed %d, pending %d, %v; want 1, 1", cr.Failed, cr.Pending, err)
	}
	old.setFail(secretName(team, "key-02"), false)
	if cr, err := recovery.Cleanup(p.ctx, p.deps(), recovery.CleanupConfig{Team: team, Force: true}); err != nil || cr.Deleted != 1 || cr.Failed != 0 || cr.Pending != 0 {
		t.Fatalf("the next cleanup: deleted %d, failed %d, pending %d, %v; want 1, 0, 0", cr.Deleted, cr.Failed, cr.Pending, err)
	}
	if value(t, p, p.store, secretName(team, "key-02")) != "" || sources("key-02") != 0 {
		t.Fatal("key-02's old copy is still there after the next cleanup")
	}
}
