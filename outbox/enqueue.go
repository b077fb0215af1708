package outbox

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/keyrelay/keyrelay/events"
)

// Execer runs a statement; pgx.Tx and *pgx.Conn are Execers. Pass the transaction that changes the key.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Querier runs a query returning one row; pgx.Tx is a Querier.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Option adjusts Enqueue and NextGeneration.
type Option func(*options)

type options struct{ schema string }

// InSchema names the schema holding the outbox (default DefaultSchema).
func InSchema(schema string) Option { return func(o *options) { o.schema = schema } }

func applyOptions(opts []Option) (options, error) {
	o := options{schema: DefaultSchema}
	for _, f := range opts {
		f(&o)
	}
	if !schemaRE.MatchString(o.schema) {
		return o, fmt.Errorf("outbox: invalid schema name %q", o.schema)
	}
	return o, nil
}

// Enqueue validates ev and inserts it into the outbox within tx. The event
// is published when (and only if) tx commits. An empty generation is
// filled in by the relay from the row's sequence, except for events whose
// value is sealed (ErrGenerationRequired): take one from NextGeneration
// before sealing those.
//
// When ctx holds a valid span context, the row records it (traceparent,
// tracestate: schema migration 2, so run `keyrelay outbox migrate` before
// deploying a gateway built with this version), and the relay's span for
// the row continues that trace.
func Enqueue(ctx context.Context, tx Execer, ev *events.Event, opts ...Option) error {
	o, err := applyOptions(opts)
	if err != nil {
		return err
	}
	if err := needsGeneration(ev); err != nil {
		return err
	}
	b, err := ev.Encode()
	if err != nil {
		return fmt.Errorf("outbox enqueue %s: %w", ev.ID, err)
	}
	table := namesFor(o.schema).table
	if tp, ts := traceContextOf(ctx); tp != "" {
		// The relay's span for the row continues ctx's trace (migration 2).
		_, err = tx.Exec(ctx, "INSERT INTO "+table+" (payload, traceparent, tracestate) VALUES ($1::jsonb, $2, NULLIF($3, ''))", string(b), tp, ts)
	} else {
		_, err = tx.Exec(ctx, "INSERT INTO "+table+" (payload) VALUES ($1::jsonb)", string(b))
	}
	if pe := (*pgconn.PgError)(nil); errors.As(err, &pe) && pe.Code == pgUndefinedColumn {
		return fmt.Errorf("outbox enqueue %s: the outbox schema predates its trace-context columns (migration 2): run `keyrelay outbox migrate`: %w", ev.ID, err)
	}
	if err != nil {
		return fmt.Errorf("outbox enqueue %s: %w", ev.ID, err)
	}
	return nil
}

// NextGeneration draws a generation from the outbox sequence, for an event
// whose value must be sealed before it is enqueued. It orders with the
// generations the relay fills in from row sequences.
func NextGeneration(ctx context.Context, q Querier, opts ...Option) (uint64, error) {
	o, err := applyOptions(opts)
	if err != nil {
		return 0, err
	}
	var g int64
	if err := q.QueryRow(ctx, "SELECT "+namesFor(o.schema).schema+".keyrelay_outbox_next_generation()").Scan(&g); err != nil {
		return 0, fmt.Errorf("outbox next generation: %w", err)
	}
	return uint64(g), nil
}

// needsGeneration returns ErrGenerationRequired for a sealed value bound to
// generation 0.
func needsGeneration(ev *events.Event) error {
	if ev.Generation != 0 || (ev.Type != events.KeyCreated && ev.Type != events.KeyRotated) {
		return nil
	}
	kd, err := ev.KeyData()
	if err != nil || kd.Value == nil {
		return nil // Validate reports it
	}
	if kd.Value.Alg != events.AlgPlaintext {
		return ErrGenerationRequired
	}
	return nil
}

// pgUndefinedColumn is PostgreSQL's SQLSTATE for a column that does not
// exist.
const pgUndefinedColumn = "42703"
