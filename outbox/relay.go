package outbox

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/internal/ctxtime"
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
	markJob  markJob // the job being marked
	// unmarked holds rows published (or failed) whose marking failed:
	// marked first thing on the next session, never published again.
	unmarked markJob
	// cursor: while batches come back full, read after this (txid, seq).
	cursorOK   bool
	cursorTxid string
	cursorSeq  int64
	// traceCols says the table has the rows' trace-context columns
	// (migration 2), read once per session.
	traceCols bool
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
// Each row published opens a span ("keyrelay.outbox.relay") that ends with
// its PubAck, and carries it in the message's traceparent header, so the
// worker's span continues that trace. Its parent is the inserting
// transaction's trace context when the row stored a valid one (columns
// traceparent and tracestate, migration 2; Enqueue fills them); otherwise
// it is a root, and a row published again after a failure gets a new
// trace.
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
	return ctxtime.Sleep(ctx, d) == nil
}
