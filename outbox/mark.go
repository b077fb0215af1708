package outbox

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// markJob is one batch's outcome: rows to mark sent (with their stream
// sequence) and rows to mark failed (with the reason).
type markJob struct {
	seqs, sseqs   []int64
	failedSeqs    []int64
	failedReasons []string
}

// startMark marks job's rows on the marker connection in the background,
// after the previous job finished: at most one job is in flight.
func (r *Relay) startMark(ctx context.Context, log *zap.Logger, job markJob) error {
	if err := r.flushMarks(); err != nil {
		return err
	}
	if len(job.seqs) == 0 && len(job.failedSeqs) == 0 {
		return nil
	}
	r.marking, r.markJob = true, job
	// Mark what the stream holds even when ctx ended meanwhile, so a
	// graceful stop does not leave PubAck'ed rows pending.
	mctx := context.WithoutCancel(ctx)
	go func() { r.markErr <- r.mark(mctx, log, job) }()
	return nil
}

// flushMarks waits for the marking in flight, if any.
func (r *Relay) flushMarks() error {
	if !r.marking {
		return nil
	}
	r.marking = false
	err := <-r.markErr
	if err != nil {
		// Keep the outcome to mark it on the next session instead of
		// publishing those rows again (markUnmarked).
		r.unmarked.seqs = append(r.unmarked.seqs, r.markJob.seqs...)
		r.unmarked.sseqs = append(r.unmarked.sseqs, r.markJob.sseqs...)
		r.unmarked.failedSeqs = append(r.unmarked.failedSeqs, r.markJob.failedSeqs...)
		r.unmarked.failedReasons = append(r.unmarked.failedReasons, r.markJob.failedReasons...)
	}
	r.markJob = markJob{}
	return err
}

// markUnmarked marks the rows whose marking failed in an earlier session
// (PostgreSQL down or stuck after their PubAck) before anything is read:
// read again they would be published again, and after an outage longer
// than the stream's duplicate window the stream would store them twice.
func (r *Relay) markUnmarked(ctx context.Context, log *zap.Logger) error {
	if len(r.unmarked.seqs) == 0 && len(r.unmarked.failedSeqs) == 0 {
		return nil
	}
	if err := r.mark(context.WithoutCancel(ctx), log, r.unmarked); err != nil {
		return err
	}
	r.unmarked = markJob{}
	return nil
}

func (r *Relay) mark(ctx context.Context, log *zap.Logger, job markJob) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if len(job.seqs) > 0 {
		if _, err := r.markConn.Exec(ctx, `UPDATE `+r.n.table+` AS t
			SET state = 'sent', sent_at = now(), attempts = t.attempts + 1, stream_seq = u.sseq, last_error = NULL
			FROM unnest($1::bigint[], $2::bigint[]) AS u(seq, sseq) WHERE t.seq = u.seq AND t.state = 'pending'`, job.seqs, job.sseqs); err != nil {
			return fmt.Errorf("mark sent: %w", err)
		}
	}
	if len(job.failedSeqs) > 0 {
		if _, err := r.markConn.Exec(ctx, `UPDATE `+r.n.table+` AS t
			SET state = 'failed', attempts = t.attempts + 1, last_error = u.reason
			FROM unnest($1::bigint[], $2::text[]) AS u(seq, reason) WHERE t.seq = u.seq AND t.state = 'pending'`, job.failedSeqs, job.failedReasons); err != nil {
			return fmt.Errorf("mark failed: %w", err)
		}
		r.m.failed.Add(float64(len(job.failedSeqs)))
		for i, s := range job.failedSeqs {
			log.Warn("outbox row failed; later rows continue", zap.Int64("seq", s), zap.String("reason", job.failedReasons[i]))
		}
	}
	return nil
}
