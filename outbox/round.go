package outbox

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
)

type roundResult struct {
	published int
	full      bool // the batch was full: more rows may be ready
	held      bool // committed rows wait behind an in-flight transaction
}

// round reads up to BatchSize rows of the owned partitions that no
// in-flight transaction precedes, publishes them keeping per-key order,
// and hands them to the marker. While batches come back full, the next
// round reads after the last (txid, seq) read and overlaps the marking of
// the previous batch; anything else (a short batch, an error, a partition
// change) waits for the marks and reads from the start again.
func (r *Relay) round(ctx context.Context, log *zap.Logger) (res roundResult, err error) {
	start := time.Now()
	defer func() { r.m.roundSeconds.Observe(time.Since(start).Seconds()) }()
	if !r.cursorOK {
		if err := r.flushMarks(); err != nil {
			return res, err
		}
	}
	if err := r.markUnmarked(ctx, log); err != nil {
		return res, err
	}
	// The output column must not be called txid: ORDER BY txid would sort
	// by its text. A payload larger than an event may be (jsonb holds up to
	// 255 MB) is not transferred at all: NULL, failed below, so a batch of
	// them cannot exhaust the relay's memory.
	cols := `seq, txid::text AS txid_text,
		CASE WHEN octet_length(t.payload::text) <= ` + strconv.Itoa(events.MaxEventBytes) + ` THEN t.payload::text END`
	if r.traceCols {
		// At most one character over the limit: enough for remoteParent to
		// see it is oversized, without transferring a huge value.
		lim := strconv.Itoa(maxTraceHeader + 1)
		cols += `, coalesce(left(traceparent, ` + lim + `), ''), coalesce(left(tracestate, ` + lim + `), '')`
	}
	q := `SELECT ` + cols + ` FROM ` + r.n.table + ` AS t
		WHERE state = 'pending' AND part = ANY($1::int[]) AND txid < pg_snapshot_xmin(pg_current_snapshot())`
	args := []any{r.owned, r.cfg.BatchSize}
	if r.cursorOK {
		q += ` AND (t.txid, t.seq) > ($3::text::xid8, $4::bigint)`
		args = append(args, r.cursorTxid, r.cursorSeq)
	}
	qctx, qcancel := context.WithTimeout(ctx, queryTimeout)
	defer qcancel()
	rows, err := r.conn.Query(qctx, q+` ORDER BY t.txid, t.seq LIMIT $2`, args...)
	if err != nil {
		return res, fmt.Errorf("read: %w", err)
	}
	var (
		items      []*item
		job        markJob
		n          int
		lastTxid   string
		lastSeq    int64
		payloadBuf []byte
		tp, ts     string
	)
	for rows.Next() {
		n++
		dest := []any{&lastSeq, &lastTxid, &payloadBuf}
		if r.traceCols {
			dest = append(dest, &tp, &ts)
		}
		if err := rows.Scan(dest...); err != nil {
			rows.Close()
			return res, fmt.Errorf("read: %w", err)
		}
		if payloadBuf == nil {
			job.failedSeqs = append(job.failedSeqs, lastSeq)
			job.failedReasons = append(job.failedReasons, fmt.Sprintf("invalid event: payload is larger than %d bytes", events.MaxEventBytes))
			continue
		}
		it, perr := prepare(lastSeq, payloadBuf)
		if perr != nil {
			job.failedSeqs, job.failedReasons = append(job.failedSeqs, lastSeq), append(job.failedReasons, perr.Reason)
			continue
		}
		it.traceparent, it.tracestate = tp, ts
		items = append(items, it)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return res, fmt.Errorf("read: %w", err)
	}
	qcancel()
	res.full = n == r.cfg.BatchSize

	acked, pubFailed, pubErr := r.publish(items)
	for _, f := range pubFailed {
		job.failedSeqs, job.failedReasons = append(job.failedSeqs, f.seq), append(job.failedReasons, f.reason)
	}
	res.published = len(acked)
	for _, it := range acked {
		job.seqs, job.sseqs = append(job.seqs, it.seq), append(job.sseqs, int64(it.sseq))
	}
	if err := r.startMark(ctx, log, job); err != nil {
		return res, err
	}
	if pubErr != nil {
		r.cursorOK = false
		if err := r.flushMarks(); err != nil {
			return res, err
		}
		if len(pubErr.seqs) > 0 {
			mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			_, _ = r.conn.Exec(mctx, `UPDATE `+r.n.table+` SET attempts = attempts + 1, last_error = $2
				WHERE seq = ANY($1::bigint[]) AND state = 'pending'`, pubErr.seqs, pubErr.err.Error())
			cancel()
		}
		return res, pubErr.err
	}
	if res.full {
		r.cursorOK, r.cursorTxid, r.cursorSeq = true, lastTxid, lastSeq
		return res, nil
	}
	r.cursorOK = false
	if err := r.flushMarks(); err != nil {
		return res, err
	}
	hctx, hcancel := context.WithTimeout(ctx, queryTimeout)
	defer hcancel()
	if err := r.conn.QueryRow(hctx, `SELECT EXISTS (SELECT 1 FROM `+r.n.table+`
		WHERE state = 'pending' AND part = ANY($1::int[]) AND txid >= pg_snapshot_xmin(pg_current_snapshot()))`,
		r.owned).Scan(&res.held); err != nil {
		return res, fmt.Errorf("read: %w", err)
	}
	return res, nil
}
