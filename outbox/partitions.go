package outbox

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// rebalance counts live relays (their membership locks in pg_locks), then
// gives back partitions above its fair share or takes free ones below it.
func (r *Relay) rebalance(ctx context.Context, conn *pgx.Conn, id int32, log *zap.Logger) error {
	// Marks of rows in a partition about to be released must land first.
	r.cursorOK = false
	if err := r.flushMarks(); err != nil {
		return err
	}
	if c := r.pub.Conn(); c != nil && !c.IsConnected() {
		if r.natsDownSince.IsZero() {
			r.natsDownSince = time.Now()
		}
		if time.Since(r.natsDownSince) >= r.cfg.StandbyAfter && r.member {
			// Without NATS this relay can publish nothing: leave, so the
			// others count one relay less and take its partitions.
			if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock($1, p) FROM unnest($2::int[]) AS p", r.classPart, r.owned); err != nil {
				return err
			}
			if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock($1, $2)", r.classMember, id); err != nil {
				return err
			}
			log.Warn("outbox relay: NATS unreachable; handing its partitions to other relays",
				zap.Int("partitions", len(r.owned)), zap.Duration("down_for", time.Since(r.natsDownSince).Round(time.Millisecond)))
			r.owned, r.member = nil, false
			r.m.partitions.Set(0)
			r.nOwned.Store(0)
		}
		if !r.member {
			return nil
		}
	} else {
		r.natsDownSince = time.Time{}
	}
	if !r.member {
		var ok bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, $2)", r.classMember, id).Scan(&ok); err != nil {
			return fmt.Errorf("membership lock: %w", err)
		}
		if !ok {
			return fmt.Errorf("membership lock %d is held by another relay", id)
		}
		r.member = true
	}
	var live int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid = $1::bigint::oid
		  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`, int64(r.classMember)).Scan(&live); err != nil {
		return err
	}
	live = max(live, 1)
	target := (Partitions + live - 1) / live
	before := len(r.owned)
	if len(r.owned) > target {
		extra := r.owned[target:]
		if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock($1, p) FROM unnest($2::int[]) AS p", r.classPart, extra); err != nil {
			return err
		}
		r.owned = r.owned[:target]
	}
	if len(r.owned) < target {
		have := map[int32]bool{}
		for _, p := range r.owned {
			have[p] = true
		}
		start := id % Partitions
		var cand []int32
		for i := int32(0); i < Partitions; i++ {
			if p := (start + i) % Partitions; !have[p] {
				cand = append(cand, p)
			}
		}
		rows, err := conn.Query(ctx, `SELECT p FROM unnest($2::int[]) WITH ORDINALITY AS c(p, o)
			WHERE pg_try_advisory_lock($1, p) LIMIT $3`, r.classPart, cand, target-len(r.owned))
		if err != nil {
			return err
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			return err
		}
		r.owned = append(r.owned, got...)
	}
	if len(r.owned) != before {
		log.Info("outbox relay partitions", zap.Int("owned", len(r.owned)), zap.Int("live_relays", live))
	}
	r.m.partitions.Set(float64(len(r.owned)))
	r.nOwned.Store(int32(len(r.owned)))
	return nil
}
