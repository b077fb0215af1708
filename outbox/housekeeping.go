package outbox

import (
	"context"

	"go.uber.org/zap"
)

// stats refreshes the table gauges.
func (r *Relay) stats(ctx context.Context) error {
	var n int64
	var age float64
	if err := r.conn.QueryRow(ctx, `SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8
		FROM `+r.n.table+` WHERE state = 'pending'`).Scan(&n, &age); err != nil {
		return err
	}
	r.m.pending.Set(float64(n))
	r.m.oldestAge.Set(max(age, 0))
	return nil
}

const pruneChunk = 5000

// prune deletes sent rows older than the retention, in short chunks (a
// long delete transaction would hold back every relay's snapshot xmin).
// Relays pruning at once skip each other's rows.
func (r *Relay) prune(ctx context.Context, log *zap.Logger) error {
	total := int64(0)
	for ctx.Err() == nil {
		qctx, cancel := context.WithTimeout(ctx, slowQueryTimeout)
		tag, err := r.conn.Exec(qctx, `DELETE FROM `+r.n.table+` WHERE seq IN (
			SELECT seq FROM `+r.n.table+` WHERE state = 'sent' AND sent_at < now() - make_interval(secs => $1)
			ORDER BY sent_at LIMIT $2 FOR UPDATE SKIP LOCKED)`, r.cfg.Retention.Seconds(), pruneChunk)
		cancel()
		if err != nil {
			return err
		}
		total += tag.RowsAffected()
		r.m.pruned.Add(float64(tag.RowsAffected()))
		if tag.RowsAffected() < pruneChunk {
			break
		}
	}
	if total > 0 {
		log.Info("outbox relay pruned sent rows", zap.Int64("rows", total), zap.Duration("retention", r.cfg.Retention))
	}
	return nil
}
