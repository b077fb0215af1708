package outbox

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyrelay/keyrelay/events"
)

// Status summarizes an outbox.
type Status struct {
	Pending, Sent, Failed int64
	// OldestPending is the age of the oldest pending row (0 when none).
	OldestPending time.Duration
	// FailedRows are the most recent failed rows, newest first. Ids
	// that are not valid ids show as "<invalid>".
	FailedRows []FailedRow
}

// FailedRow is a row the relay could not publish.
type FailedRow struct {
	Seq                    int64
	EventID, TeamID, KeyID string
	Attempts               int
	Reason                 string
	CreatedAt              time.Time
}

// ReadStatus counts rows by state and returns up to limit failed rows.
func ReadStatus(ctx context.Context, q Queryer, schema string, limit int) (*Status, error) {
	if !schemaRE.MatchString(schema) {
		return nil, fmt.Errorf("outbox: invalid schema name %q", schema)
	}
	t := namesFor(schema).table
	st := &Status{}
	var age float64
	if err := q.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'sent'),
		count(*) FILTER (WHERE state = 'failed'),
		COALESCE(EXTRACT(EPOCH FROM now() - min(created_at) FILTER (WHERE state = 'pending')), 0)::float8 FROM `+t).
		Scan(&st.Pending, &st.Sent, &st.Failed, &age); err != nil {
		return nil, fmt.Errorf("outbox status: %w", err)
	}
	st.OldestPending = time.Duration(age * float64(time.Second))
	// Ids longer than an id may be are cut in the query (shownID hides
	// them anyway).
	rows, err := q.Query(ctx, `SELECT seq, COALESCE(left(event_id, 129), ''), COALESCE(left(team_id, 129), ''), COALESCE(left(key_id, 129), ''), attempts,
		COALESCE(last_error, ''), created_at FROM `+t+` WHERE state = 'failed' ORDER BY seq DESC LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("outbox status: %w", err)
	}
	st.FailedRows, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (FailedRow, error) {
		var f FailedRow
		err := r.Scan(&f.Seq, &f.EventID, &f.TeamID, &f.KeyID, &f.Attempts, &f.Reason, &f.CreatedAt)
		f.EventID, f.TeamID, f.KeyID = shownID(f.EventID), shownID(f.TeamID), shownID(f.KeyID)
		return f, err
	})
	if err != nil {
		return nil, fmt.Errorf("outbox status: %w", err)
	}
	return st, nil
}

// invalidID stands in for an id that is not a valid id.
const invalidID = "<invalid>"

// shownID returns id when it is a valid id (or empty), invalidID
// otherwise: a failed row's ids come from a payload that may be anything
// (a value pasted into the wrong field, an object, terminal escapes), so
// they are not echoed.
func shownID(id string) string {
	if id == "" || events.ValidateID("id", id) == nil {
		return id
	}
	return invalidID
}

// Queryer runs queries; *pgx.Conn and pgx.Tx are Queryers.
type Queryer interface {
	Querier
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}
