package main

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/recovery"
	"github.com/keyrelay/keyrelay/worker"
)

// migrationsFixture starts a server with the topology and returns a
// context for the test, a command configuration pointing at it, and the
// migration records.
func migrationsFixture(t *testing.T) (context.Context, string, jetstream.JetStream, recovery.Migrations) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	srv, js := startTopology(ctx, t)
	cfg, _, _ := commandConfig(t, srv.URL, "")
	rkv, err := js.KeyValue(ctx, worker.RecoveryBucket)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, cfg, js, recovery.Migrations{KV: rkv, JS: js}
}

// TestMigrateCleanupKeepsAMoveStillToDo: `keyrelay migrate --cleanup`
// ends a finished move's record once no old copy is left, but a record
// whose move is requested or running (the sweeper of keyrelay serve has
// keys still to move, e.g. after keys failed) has nothing pending only
// because those keys were not moved yet: it must stay, or the sweeper
// never moves them. The command used to delete any record when nothing
// was pending.
func TestMigrateCleanupKeepsAMoveStillToDo(t *testing.T) {
	ctx, cfg, _, m := migrationsFixture(t)
	for _, state := range []string{recovery.MigrationRequested, recovery.MigrationRunning, recovery.MigrationMoved} {
		team := "team-" + state
		if err := m.Record(ctx, &recovery.MigrationRecord{Team: team, To: "local", State: state, RequestedAt: time.Now().UTC(),
			Failed: 1, LastError: "1 keys failed; retried at the next sweep"}); err != nil {
			t.Fatal(err)
		}
		out, err := runCommand(ctx, migrateCmd(&globals{configPath: cfg}), "--team", team, "--cleanup", "--delete-source")
		if err != nil {
			t.Fatalf("migrate --cleanup (%s): %v\n%s", state, err, out)
		}
		r, _, err := m.Get(ctx, team)
		if err != nil {
			t.Fatal(err)
		}
		if gone := r == nil; gone != (state == recovery.MigrationMoved) {
			t.Errorf("record in state %s after a cleanup with nothing pending: %+v; want it kept unless the move is done", state, r)
		}
	}
}

// TestMigrateCleanupKeepsTheRecordWhileAnEntryIsUnreadable: a finished
// move's record is not ended while one of the team's ledger entries cannot
// be read: the old copy it may record is known only to it, and without the
// record no sweeper looks for it again. The command exits 1 for the
// unusable entry and keeps the record; once the entry is gone, a cleanup
// ends it.
func TestMigrateCleanupKeepsTheRecordWhileAnEntryIsUnreadable(t *testing.T) {
	ctx, cfg, js, m := migrationsFixture(t)
	lkv, err := js.KeyValue(ctx, worker.LedgerBucket)
	if err != nil {
		t.Fatal(err)
	}
	const team = "team-u"
	if err := m.Record(ctx, &recovery.MigrationRecord{Team: team, To: "local", State: recovery.MigrationMoved, RequestedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	if _, err := lkv.Put(ctx, worker.LedgerKey(team, "key-corrupt"), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	cleanup := func() (string, error) {
		return runCommand(ctx, migrateCmd(&globals{configPath: cfg}), "--team", team, "--cleanup", "--delete-source")
	}
	out, err := cleanup()
	wantPartialFailure(t, "cleanup past an unreadable entry", err, out)
	if r, _, err := m.Get(ctx, team); err != nil || r == nil {
		t.Fatalf("the record was ended with an unreadable entry of the team: %+v, %v", r, err)
	}
	if err := lkv.Purge(ctx, worker.LedgerKey(team, "key-corrupt")); err != nil {
		t.Fatal(err)
	}
	if out, err := cleanup(); err != nil {
		t.Fatalf("cleanup with every entry readable: %v\n%s", err, out)
	}
	if r, _, err := m.Get(ctx, team); err != nil || r != nil {
		t.Fatalf("record after a complete cleanup: %+v, %v; want it ended", r, err)
	}
}
