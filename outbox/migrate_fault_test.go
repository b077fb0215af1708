package outbox_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/outbox"
)

// Relays (or deploy jobs) that migrate at the same time on a database
// whose default isolation is REPEATABLE READ or SERIALIZABLE (a common
// hardening) all succeed: the one that waited for the lock sees what the
// first one applied instead of failing on "relation already exists".
func TestMigrateConcurrentUnderStrictDefaultIsolation(t *testing.T) {
	t.Parallel()
	for _, iso := range []string{"repeatable read", "serializable"} {
		t.Run(iso, func(t *testing.T) {
			db := newDB(t)
			admin := connect(t, pgAdmin)
			if _, err := admin.Exec(context.Background(), "ALTER DATABASE "+db+" SET default_transaction_isolation = '"+iso+"'"); err != nil {
				t.Fatal(err)
			}
			const n = 4
			var wg sync.WaitGroup
			errs := make([]error, n)
			applied := make([][]int, n)
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					conn := connect(t, dsnFor(db))
					applied[i], errs[i] = outbox.Migrate(context.Background(), conn, outbox.DefaultSchema)
				}()
			}
			wg.Wait()
			total := 0
			for i, err := range errs {
				if err != nil {
					t.Fatalf("migrate %d of %d concurrent ones: %v", i, n, err)
				}
				total += len(applied[i])
			}
			ms, _ := outbox.Migrations()
			if total != len(ms) {
				t.Fatalf("applied %d migrations in total, want %d", total, len(ms))
			}
		})
	}
}

// Any schema name Config.Validate accepts works, SQL keywords included
// ("user", "order", "table" are valid by the documented rule).
func TestReservedWordSchema(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	_, js := startNATS(t)
	ctx := context.Background()
	conn := connect(t, dsnFor(db))
	for _, schema := range []string{"user", "order"} {
		cfg := testConfig(dsnFor(db))
		cfg.Schema = schema
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Validate rejects schema %q: %v", schema, err)
		}
		if _, err := outbox.Migrate(ctx, conn, schema); err != nil {
			t.Fatalf("migrate schema %q: %v", schema, err)
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := outbox.NextGeneration(ctx, tx, outbox.InSchema(schema)); err != nil {
			t.Fatalf("next generation in schema %q: %v", schema, err)
		}
		if err := outbox.Enqueue(ctx, tx, updated("t1", "k-"+schema, 0, 1), outbox.InSchema(schema)); err != nil {
			t.Fatalf("enqueue in schema %q: %v", schema, err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		r := startRelay(t, cfg, js, nil)
		testenv.Eventually(t, 10*time.Second, "relay ready on schema "+schema, func() bool { return r.Ready() == nil })
		testenv.Eventually(t, 10*time.Second, "row sent", func() bool {
			st, err := outbox.ReadStatus(ctx, conn, schema, 10)
			return err == nil && st.Sent == 1
		})
	}
}

// Migrate inside a caller's REPEATABLE READ transaction (a savepoint,
// where the isolation cannot change) still works as before.
func TestMigrateInsideRepeatableReadTransaction(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	ctx := context.Background()
	conn := connect(t, dsnFor(db))
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if _, err := outbox.Migrate(ctx, tx, outbox.DefaultSchema); err != nil {
		t.Fatalf("migrate in a repeatable read transaction: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}
