package outbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/tracing"
)

// Publisher is the part of jetstream.JetStream the relay uses.
type Publisher interface {
	PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error)
	Conn() *nats.Conn
}

var _ Publisher = (jetstream.JetStream)(nil)

// Relay moves committed outbox rows to JetStream. Create it with NewRelay,
// run it with Run; any number of relays may run against one outbox.
type Relay struct {
	cfg     Config
	n       names
	pub     Publisher
	log     *zap.Logger
	m       *metrics
	connCfg *pgx.ConnConfig
	tracer  trace.Tracer

	classPart, classMember int32

	nOwned  atomic.Int32
	mu      sync.Mutex
	pgErr   string // "" when the session is up
	natsErr string // "" after the last publish succeeded

	// Run's goroutine only: the session connection (locks, LISTEN and all
	// queries; the relay is one sequential loop) and the partitions held.
	conn  *pgx.Conn
	owned []int32
	// markConn marks batches in the background (markErr receives the
	// outcome; marking says one is in flight) while conn reads the next.
	markConn *pgx.Conn
	markErr  chan error
	marking  bool
	// cursor: while batches come back full, read after this (txid, seq).
	cursorOK   bool
	cursorTxid string
	cursorSeq  int64
	// member says the session holds its membership lock; natsDownSince is
	// when the NATS connection was first seen down (zero: up).
	member        bool
	natsDownSince time.Time
}

// RelayOption adjusts a Relay.
type RelayOption func(*Relay)

// WithTracerProvider makes the relay's spans with tp. Default: the
// process-wide provider (otel.GetTracerProvider), a no-op one unless the
// program installed another.
func WithTracerProvider(tp trace.TracerProvider) RelayOption {
	return func(r *Relay) { r.tracer = tracing.Tracer(tp) }
}

// NewRelay checks cfg and prepares a relay; it does not connect yet. reg
// may be nil (no metrics).
//
// Each row published opens a root span ("keyrelay.outbox.relay": the
// outbox table has no column for the inserting transaction's trace
// context) that ends with its PubAck, and carries it in the message's
// traceparent header, so the worker's span continues that trace. A row
// published again after a failure gets a new span (and trace).
func NewRelay(cfg Config, pub Publisher, log *zap.Logger, reg prometheus.Registerer, opts ...RelayOption) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	pcfg, err := pgx.ParseConfig(cfg.DSN)
	if err != nil {
		// pgx's parse errors can quote the DSN, password included.
		return nil, fmt.Errorf("outbox: cannot parse the PostgreSQL DSN")
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	r := &Relay{
		cfg: cfg, n: namesFor(cfg.Schema), pub: pub, log: log.Named("outbox"), m: m,
		connCfg:   pcfg,
		classPart: lockClass(cfg.Schema, "partition"), classMember: lockClass(cfg.Schema, "member"),
		pgErr: "not connected yet",
	}
	for _, o := range opts {
		o(r)
	}
	if r.tracer == nil {
		r.tracer = tracing.Tracer(nil)
	}
	return r, nil
}

// Ready returns nil when the relay can make progress: its PostgreSQL
// session (which holds its partitions) is up, NATS is connected and the
// last publish did not fail. Otherwise the error wraps ErrNotReady.
func (r *Relay) Ready() error {
	r.mu.Lock()
	pgErr, natsErr := r.pgErr, r.natsErr
	r.mu.Unlock()
	switch {
	case pgErr != "":
		return fmt.Errorf("%w: postgres: %s", ErrNotReady, pgErr)
	case r.pub.Conn() != nil && !r.pub.Conn().IsConnected():
		return fmt.Errorf("%w: nats: %s", ErrNotReady, r.pub.Conn().Status())
	case natsErr != "":
		return fmt.Errorf("%w: nats: %s", ErrNotReady, natsErr)
	}
	return nil
}

// Partitions returns how many of the Partitions this relay holds now.
func (r *Relay) Partitions() int { return int(r.nOwned.Load()) }

func (r *Relay) setPG(msg string) {
	r.mu.Lock()
	r.pgErr = msg
	r.mu.Unlock()
}

func (r *Relay) setNATS(msg string) {
	r.mu.Lock()
	r.natsErr = msg
	r.mu.Unlock()
}

func (r *Relay) newBackoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = r.cfg.InitialBackoff, r.cfg.MaxBackoff, 0
	b.Reset()
	return b
}

// Run relays until ctx ends; call it once per Relay. PostgreSQL errors
// drop the session (and with it the partitions) and reconnect with
// backoff; publish errors retry with backoff, keeping the partitions
// unless the NATS connection stays down for Config.StandbyAfter. It
// returns nil when ctx ends.
func (r *Relay) Run(ctx context.Context) error {
	bo := r.newBackoff()
	for {
		err := r.session(ctx, bo)
		r.owned = nil
		r.m.partitions.Set(0)
		r.nOwned.Store(0)
		if ctx.Err() != nil {
			r.setPG("stopped")
			return nil
		}
		r.m.dbErrs.Inc()
		r.setPG(sanitizeDBError(err))
		d := bo.NextBackOff()
		r.log.Warn("outbox relay: postgres session lost; retrying", zap.String("error", sanitizeDBError(err)), zap.Duration("retry_in", d))
		if !sleep(ctx, d) {
			r.setPG("stopped")
			return nil
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

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
			r.log.Warn("outbox relay: marking rows failed; they will be re-published (duplicates are dropped by the stream)", zap.String("error", sanitizeDBError(err)))
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
	id := rand.Int32N(1 << 30)
	r.member, r.natsDownSince = false, time.Time{}
	if _, err := conn.Exec(ctx, "LISTEN "+r.n.channel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
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
			if err := r.rebalance(ctx, conn, id, log); err != nil {
				return fmt.Errorf("rebalance: %w", err)
			}
			nextRebalance = now.Add(r.cfg.RebalanceInterval)
		}
		if !now.Before(nextStats) {
			if err := r.stats(ctx); err != nil {
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
		tag, err := r.conn.Exec(ctx, `DELETE FROM `+r.n.table+` WHERE seq IN (
			SELECT seq FROM `+r.n.table+` WHERE state = 'sent' AND sent_at < now() - make_interval(secs => $1)
			ORDER BY sent_at LIMIT $2 FOR UPDATE SKIP LOCKED)`, r.cfg.Retention.Seconds(), pruneChunk)
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

// publishError is a transient publish failure: the rows stay pending.
type publishError struct{ err error }

func (e *publishError) Error() string { return "publish: " + e.err.Error() }
func (e *publishError) Unwrap() error { return e.err }

type roundResult struct {
	published int
	full      bool // the batch was full: more rows may be ready
	held      bool // committed rows wait behind an in-flight transaction
}

type item struct {
	seq  int64
	key  string
	id   string
	msg  *nats.Msg
	sseq uint64
	// typ, team and keyID label the row's span.
	typ         events.Type
	team, keyID string
	span        trace.Span
}

// startSpan opens the row's root span and carries it in its message.
func (r *Relay) startSpan(it *item) {
	_, it.span = r.tracer.Start(context.Background(), tracing.SpanOutboxRelay, trace.WithSpanKind(trace.SpanKindProducer))
	if it.span.IsRecording() {
		it.span.SetAttributes(tracing.MessagingSystem.String("nats"), tracing.OutboxSeq.Int64(it.seq), tracing.EventID.String(it.id),
			tracing.EventType.String(string(it.typ)), tracing.TeamID.String(it.team), tracing.KeyID.String(it.keyID))
	}
	if it.span.SpanContext().IsValid() {
		// Also when sampled out: the worker follows the decision.
		tracing.Inject(trace.ContextWithSpan(context.Background(), it.span), it.msg.Header)
	}
}

// endSpan ends the row's span: published (with its stream sequence) or
// not, with a fixed reason (never an error's text).
func (it *item) endSpan(failure string, duplicate bool) {
	if it.span == nil {
		return
	}
	if failure != "" {
		it.span.SetStatus(codes.Error, failure)
	} else {
		it.span.SetAttributes(tracing.StreamSeq.Int64(int64(it.sseq)), tracing.Duplicate.Bool(duplicate))
	}
	it.span.End()
	it.span = nil
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
	// The output column must not be called txid: ORDER BY txid would sort
	// by its text.
	q := `SELECT seq, txid::text AS txid_text, payload::text FROM ` + r.n.table + ` AS t
		WHERE state = 'pending' AND part = ANY($1::int[]) AND txid < pg_snapshot_xmin(pg_current_snapshot())`
	args := []any{r.owned, r.cfg.BatchSize}
	if r.cursorOK {
		q += ` AND (t.txid, t.seq) > ($3::text::xid8, $4::bigint)`
		args = append(args, r.cursorTxid, r.cursorSeq)
	}
	rows, err := r.conn.Query(ctx, q+` ORDER BY t.txid, t.seq LIMIT $2`, args...)
	if err != nil {
		return res, fmt.Errorf("read: %w", err)
	}
	var (
		items      []*item
		job        markJob
		n          int
		lastTxid   string
		lastSeq    int64
		payloadBuf string
	)
	for rows.Next() {
		n++
		if err := rows.Scan(&lastSeq, &lastTxid, &payloadBuf); err != nil {
			rows.Close()
			return res, fmt.Errorf("read: %w", err)
		}
		it, perr := prepare(lastSeq, []byte(payloadBuf))
		if perr != nil {
			job.failedSeqs, job.failedReasons = append(job.failedSeqs, lastSeq), append(job.failedReasons, perr.Reason)
			continue
		}
		items = append(items, it)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return res, fmt.Errorf("read: %w", err)
	}
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
	if err := r.conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+r.n.table+`
		WHERE state = 'pending' AND part = ANY($1::int[]) AND txid >= pg_snapshot_xmin(pg_current_snapshot()))`,
		r.owned).Scan(&res.held); err != nil {
		return res, fmt.Errorf("read: %w", err)
	}
	return res, nil
}

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
	r.marking = true
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
	return <-r.markErr
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

// prepare validates a row's payload and builds its message, filling an
// empty generation from seq.
func prepare(seq int64, payload []byte) (*item, *PermanentError) {
	ev, err := events.Decode(payload)
	if err != nil {
		return nil, permanent("%s", reason(err))
	}
	if ev.Generation == 0 {
		if err := needsGeneration(ev); err != nil {
			return nil, permanent("%s", err.Error())
		}
		ev.Generation = uint64(seq)
	}
	b, err := encodeDecoded(ev)
	if err != nil {
		return nil, permanent("%s", reason(err))
	}
	m := &nats.Msg{Subject: ev.Subject(), Data: b, Header: nats.Header{}}
	m.Header.Set(jetstream.MsgIDHeader, ev.ID)
	return &item{seq: seq, key: ev.TeamID + "\x00" + ev.KeyID, id: ev.ID, msg: m, typ: ev.Type, team: ev.TeamID, keyID: ev.KeyID}, nil
}

// encodeDecoded is Event.Encode for an event events.Decode accepted and
// only the generation of which changed since: the same compact encoding,
// without validating the payload a second time.
func encodeDecoded(ev *events.Event) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(ev); err != nil {
		return nil, err
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if len(b) > events.MaxEventBytes {
		return nil, &events.ValidationError{Reason: fmt.Sprintf("event is %d bytes once re-encoded, larger than %d", len(b), events.MaxEventBytes)}
	}
	return b, nil
}

// reason is the failure text recorded for a row: the validation error,
// which names the field and never holds a value, or a fixed phrase.
func reason(err error) string {
	var ve *events.ValidationError
	if errors.As(err, &ve) {
		return ve.Error()
	}
	return "cannot encode the event"
}

type rowFailure struct {
	seq    int64
	reason string
}

type wavePublishError struct {
	err  error
	seqs []int64
}

// publish sends items in waves: wave w holds the w-th item of every key,
// published asynchronously; the next wave starts once every PubAck of this
// one arrived. So at most one message per key is in flight, and a row is
// never stored before an earlier row of its key. A transient error stops
// after the wave (the rows behind stay pending); a permanent one fails
// that row only.
func (r *Relay) publish(items []*item) (acked []*item, failed []rowFailure, perr *wavePublishError) {
	if len(items) == 0 {
		return nil, nil, nil
	}
	byKey := map[string][]*item{}
	var order []string
	for _, it := range items {
		if _, ok := byKey[it.key]; !ok {
			order = append(order, it.key)
		}
		byKey[it.key] = append(byKey[it.key], it)
	}
	futs := make([]jetstream.PubAckFuture, 0, min(len(order), maxInFlight))
	wave := make([]*item, 0, len(order))
	for w := 0; ; w++ {
		wave = wave[:0]
		for _, k := range order {
			if g := byKey[k]; w < len(g) {
				wave = append(wave, g[w])
			}
		}
		if len(wave) == 0 {
			return acked, failed, nil
		}
		for len(wave) > maxInFlight {
			// Order across keys is free: publish a long wave in chunks, to
			// stay below the client's async publish limit.
			a, f, perr := r.publishWave(wave[:maxInFlight], futs)
			acked, failed = append(acked, a...), append(failed, f...)
			if perr != nil {
				return acked, failed, perr
			}
			wave = wave[maxInFlight:]
		}
		a, f, perr := r.publishWave(wave, futs)
		acked, failed = append(acked, a...), append(failed, f...)
		if perr != nil {
			return acked, failed, perr
		}
	}
}

// maxInFlight bounds the PubAcks one relay waits for at once (the client's
// async publish limit defaults to 4000).
const maxInFlight = 1024

// publishWave publishes items, which are of distinct keys, asynchronously
// and waits for every PubAck.
func (r *Relay) publishWave(wave []*item, futs []jetstream.PubAckFuture) (acked []*item, failed []rowFailure, perr *wavePublishError) {
	futs = futs[:0]
	var transient error
	var tseqs []int64
	for _, it := range wave {
		r.startSpan(it)
		f, err := r.pub.PublishMsgAsync(it.msg, jetstream.WithExpectStream(r.cfg.Stream))
		if err != nil {
			if errors.Is(err, nats.ErrMaxPayload) {
				failed = append(failed, rowFailure{it.seq, "message larger than the NATS server's max_payload"})
				futs = append(futs, nil)
				it.endSpan("message too large", false)
				continue
			}
			transient = err
			it.endSpan("publish failed", false)
			break
		}
		futs = append(futs, f)
	}
	timer := time.NewTimer(r.cfg.PublishTimeout)
	for i, f := range futs {
		if f == nil {
			continue
		}
		it := wave[i]
		select {
		case pa := <-f.Ok():
			it.sseq = pa.Sequence
			if pa.Duplicate {
				r.m.duplicates.Inc()
			}
			r.m.published.Inc()
			acked = append(acked, it)
			it.endSpan("", pa.Duplicate)
		case err := <-f.Err():
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum {
				failed = append(failed, rowFailure{it.seq, "message larger than the stream's max_msg_size"})
				it.endSpan("message too large", false)
				continue
			}
			if transient == nil {
				transient = err
			}
			tseqs = append(tseqs, it.seq)
			it.endSpan("publish failed", false)
		case <-timer.C:
			if transient == nil {
				transient = fmt.Errorf("no PubAck within %v", r.cfg.PublishTimeout)
			}
			tseqs = append(tseqs, it.seq)
			it.endSpan("no PubAck in time", false)
			// Drain the rest without waiting.
			timer.Reset(0)
		}
	}
	timer.Stop()
	if transient != nil {
		if len(futs) < len(wave) && len(tseqs) == 0 {
			tseqs = append(tseqs, wave[len(futs)].seq)
		}
		return acked, failed, &wavePublishError{err: &publishError{err: transient}, seqs: tseqs}
	}
	return acked, failed, nil
}
