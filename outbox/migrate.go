package outbox

import (
	"context"
	"embed"
	"fmt"
	"hash/fnv"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migration is one embedded schema change.
type Migration struct {
	// Version is the number the file name starts with (0001_... is 1).
	Version int
	// Name is the file name.
	Name string
	sql  string
}

// Migrations lists the embedded migrations in version order.
func Migrations() ([]Migration, error) {
	ents, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, e := range ents {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must start with a positive number and '_'", e.Name())
		}
		b, err := migrationFiles.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: e.Name(), sql: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i := 1; i < len(out); i++ {
		if out[i].Version == out[i-1].Version {
			return nil, fmt.Errorf("migrations %s and %s share version %d", out[i-1].Name, out[i].Name, out[i].Version)
		}
	}
	return out, nil
}

// SQL returns the migration's statements for schema.
func (m Migration) SQL(schema string) string {
	n := namesFor(schema)
	return strings.NewReplacer("{{schema}}", n.schema, "{{channel}}", n.channel).Replace(m.sql)
}

// Beginner starts transactions; *pgx.Conn and pgx.Tx are Beginners.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Migrate creates schema (if missing) and applies every embedded migration
// not yet recorded in schema.keyrelay_schema_migrations, all in one
// transaction under an advisory lock: it is idempotent and safe to run
// from several processes at once. It returns the versions it applied.
func Migrate(ctx context.Context, db Beginner, schema string) ([]int, error) {
	if schema == "" {
		schema = DefaultSchema
	}
	if !schemaRE.MatchString(schema) {
		return nil, fmt.Errorf("outbox migrate: invalid schema name %q", schema)
	}
	q := namesFor(schema).schema
	ms, err := Migrations()
	if err != nil {
		return nil, err
	}
	tx, err := beginReadCommitted(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("outbox migrate: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, 0)", lockClass(schema, "migrate")); err != nil {
		return nil, fmt.Errorf("outbox migrate: lock: %w", err)
	}
	if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+q); err != nil {
		return nil, fmt.Errorf("outbox migrate: create schema: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+q+`.keyrelay_schema_migrations (
		version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return nil, fmt.Errorf("outbox migrate: migrations table: %w", err)
	}
	rows, err := tx.Query(ctx, "SELECT version FROM "+q+".keyrelay_schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("outbox migrate: %w", err)
	}
	done, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil, fmt.Errorf("outbox migrate: %w", err)
	}
	have := map[int]bool{}
	for _, v := range done {
		have[int(v)] = true
	}
	var applied []int
	for _, m := range ms {
		if have[m.Version] {
			continue
		}
		if _, err := tx.Exec(ctx, m.SQL(schema)); err != nil {
			return nil, fmt.Errorf("outbox migrate: %s: %w", m.Name, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+q+".keyrelay_schema_migrations (version, name) VALUES ($1, $2)", m.Version, m.Name); err != nil {
			return nil, fmt.Errorf("outbox migrate: record %s: %w", m.Name, err)
		}
		applied = append(applied, m.Version)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("outbox migrate: commit: %w", err)
	}
	return applied, nil
}

// beginReadCommitted begins a READ COMMITTED transaction on db. Under
// REPEATABLE READ or SERIALIZABLE (a database's
// default_transaction_isolation) Migrate's snapshot would be taken before
// its lock is granted, so a migrator that waited would not see what the
// one before it applied and fail on "already exists". SHOW takes no
// snapshot, and SET TRANSACTION must come before any statement that does.
// Inside a caller's transaction (db a pgx.Tx: a savepoint) the isolation
// cannot change and stays the caller's.
func beginReadCommitted(ctx context.Context, db Beginner) (pgx.Tx, error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, err
	}
	var iso string
	if err := tx.QueryRow(ctx, "SHOW transaction_isolation").Scan(&iso); err != nil {
		_ = tx.Rollback(ctx)
		return nil, err
	}
	if iso == "read committed" {
		return tx, nil
	}
	if _, err := tx.Exec(ctx, "SET TRANSACTION ISOLATION LEVEL READ COMMITTED"); err == nil {
		return tx, nil
	}
	if err := tx.Rollback(ctx); err != nil {
		return nil, err
	}
	return db.Begin(ctx)
}

// lockClass is the first key of the two-key advisory locks of one schema's
// outbox: a positive 31-bit hash of schema and purpose. The second key is a
// partition number, a relay id or 0.
func lockClass(schema, purpose string) int32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte("keyrelay_outbox\x00" + schema + "\x00" + purpose))
	return int32(h.Sum32() & 0x7fffffff)
}
