package outbox

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// session runs one PostgreSQL session: the connection that holds the
// relay's membership and partition locks and listens for notifications.
func (r *Relay) session(ctx context.Context, pgBackoff *backoff.ExponentialBackOff) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := pgx.ConnectConfig(cctx, r.connCfg.Copy())
	cancel()
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	cctx, cancel = context.WithTimeout(ctx, 10*time.Second)
	markConn, err := pgx.ConnectConfig(cctx, r.connCfg.Copy())
	cancel()
	if err != nil {
		_ = conn.Close(context.Background())
		return fmt.Errorf("connect: %w", err)
	}
	r.conn, r.markConn, r.markErr, r.marking, r.cursorOK = conn, markConn, make(chan error, 1), false, false
	defer func() {
		if err := r.flushMarks(); err != nil {
			r.log.Warn("outbox relay: marking rows failed; they are marked when the next session is up", zap.String("error", sanitizeDBError(err)))
		}
		c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = markConn.Close(c)
		cancel()
		r.conn, r.markConn = nil, nil
		// Closing the session releases every advisory lock it holds.
		c, cancel = context.WithTimeout(context.Background(), 2*time.Second)
		_ = conn.Close(c)
		cancel()
	}()
	// Migration 2 adds the rows' trace context. A schema not migrated yet
	// is still relayed, each row under a new trace, until a session after
	// the migration.
	qctx, qcancel := context.WithTimeout(ctx, queryTimeout)
	defer qcancel()
	if err := conn.QueryRow(qctx, `SELECT count(*) = 2 FROM pg_attribute
		WHERE attrelid = $1::regclass AND attname IN ('traceparent', 'tracestate') AND NOT attisdropped`,
		r.n.table).Scan(&r.traceCols); err != nil {
		return fmt.Errorf("read the outbox columns: %w", err)
	}
	id := rand.Int32N(1 << 30)
	r.member, r.natsDownSince = false, time.Time{}
	if _, err := conn.Exec(qctx, "LISTEN "+r.n.channel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	qcancel()
	log := r.log.With(zap.Int32("relay_id", id))
	log.Info("outbox relay session up", zap.String("schema", r.cfg.Schema))
	r.setPG("")
	pgBackoff.Reset()

	natsBackoff := r.newBackoff()
	var nextRebalance, nextStats, nextPrune time.Time
	nextPrune = time.Now().Add(time.Duration(rand.Int64N(int64(r.cfg.PruneInterval))))
	heldDelay := time.Duration(0)
	for ctx.Err() == nil {
		now := time.Now()
		if !now.Before(nextRebalance) {
			qctx, cancel := context.WithTimeout(ctx, queryTimeout)
			err := r.rebalance(qctx, conn, id, log)
			cancel()
			if err != nil {
				return fmt.Errorf("rebalance: %w", err)
			}
			nextRebalance = now.Add(r.cfg.RebalanceInterval)
		}
		if !now.Before(nextStats) {
			qctx, cancel := context.WithTimeout(ctx, slowQueryTimeout)
			err := r.stats(qctx)
			cancel()
			if err != nil {
				return fmt.Errorf("stats: %w", err)
			}
			nextStats = now.Add(r.cfg.StatsInterval)
		}
		if !now.Before(nextPrune) {
			if err := r.prune(ctx, log); err != nil {
				return fmt.Errorf("prune: %w", err)
			}
			nextPrune = now.Add(r.cfg.PruneInterval)
		}
		wait := r.cfg.PollInterval
		if len(r.owned) == 0 {
			r.setNATS("") // nothing to publish, nothing failing
		} else {
			res, err := r.round(ctx, log)
			var pe *publishError
			switch {
			case errors.As(err, &pe):
				r.m.publishErrs.Inc()
				r.setNATS(pe.Error())
				d := natsBackoff.NextBackOff()
				log.Warn("outbox relay: publish failed; rows stay pending", zap.Error(pe.err), zap.Duration("retry_in", d))
				if !sleep(ctx, d) {
					return nil
				}
				continue
			case err != nil:
				return err
			}
			r.setNATS("")
			natsBackoff.Reset()
			if res.full {
				continue
			}
			if res.held {
				// Committed rows wait behind an older transaction still in
				// flight, which may send no notification: look again soon.
				heldDelay = min(max(2*heldDelay, 5*time.Millisecond), r.cfg.PollInterval)
				wait = heldDelay
			} else {
				heldDelay = 0
			}
		}
		if d := time.Until(nextRebalance); d < wait {
			wait = max(d, 0)
		}
		if err := waitNotify(ctx, conn, wait); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("wait for notification: %w", err)
		}
	}
	return nil
}

// queryTimeout bounds each query on the session connection (the marker's
// are bounded alike, in mark): a connection that died without a reset (a
// failover that moved the server, a silent network partition) fails the
// session, which reconnects, instead of hanging until the kernel's TCP
// timeout (about 15 minutes) while the relay reports ready.
const queryTimeout = 10 * time.Second

// slowQueryTimeout bounds the queries whose time grows with the table:
// the whole-table stats (a backlog of millions of pending rows) and one
// chunk of pruning.
const slowQueryTimeout = time.Minute

// waitNotify returns when a notification arrives, d passes or ctx ends
// (nil in all three cases), draining notifications already buffered.
func waitNotify(ctx context.Context, conn *pgx.Conn, d time.Duration) error {
	if d > 0 {
		wctx, cancel := context.WithTimeout(ctx, d)
		_, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil && wctx.Err() == nil {
			return err
		}
	}
	// Drain what else has arrived: one round covers them all.
	done, cancel := context.WithCancel(ctx)
	cancel()
	for {
		if n, _ := conn.WaitForNotification(done); n == nil {
			break
		}
	}
	if conn.IsClosed() {
		return errors.New("session connection closed")
	}
	return nil
}
