package ownership

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/internal/ctxtime"
)

// record is the lease's value in the bucket.
type record struct {
	// Holder names the holding process; empty when the lease was released.
	Holder string `json:"holder"`
	// Nonce identifies one acquisition by Holder, so that it can recognise
	// its own write after a lost reply.
	Nonce uint64 `json:"nonce,omitempty"`
	// TTLMs is the holder's TTL: contenders wait at least this long (capped
	// by MaxRecordTTL) after the record last changed.
	TTLMs int64 `json:"ttl_ms"`
}

// parseRecord reads a record; ok is false when b is not one (contenders
// then treat the lease as held by someone unknown). Unknown members are
// ignored, so that a later version can add some.
func parseRecord(b []byte) (r record, ok bool) {
	if len(b) == 0 || len(b) > MaxRecordBytes || json.Unmarshal(b, &r) != nil {
		return record{}, false
	}
	if r.TTLMs <= 0 || (r.Holder != "" && !validHolder(r.Holder)) {
		return record{}, false
	}
	return r, true
}

func (r record) ttl() time.Duration {
	return time.Duration(min(r.TTLMs, MaxRecordTTL.Milliseconds())) * time.Millisecond
}

// Lease is one process's side of a writer lease. Run keeps it; Held says
// whether, and until when, the process may act.
type Lease struct {
	kv  jetstream.KeyValue
	cfg Config
	log *zap.Logger

	mu       sync.Mutex
	holding  bool      // our last write of the record stands, as far as we know
	deadline time.Time // acting is allowed before it (monotonic reading)
	epoch    uint64    // revision of the write that acquired the lease
	rev      uint64    // revision of our last write
	// revSent: the send time of the write at rev (a lower bound: the
	// first unconfirmed renewal's for an adopted one). readRequests takes
	// the requests as they stood then.
	revSent  time.Time
	nonce    uint64
	changed  chan struct{}
	lastHeld bool
	lastEp   uint64

	// Claimless acting (request.go): off while any claims request is live.
	claimless  bool
	generation uint64
	inflight   int       // actions begun without claims and not yet done
	drainBy    time.Time // claimless actions begun before the switch end by then

	// Run's goroutine only.
	unconfirmed time.Time   // send time of the first renewal since the last confirmed one
	renewed     bool        // the last renewal or acquisition was stored: NATS answers
	pending     acquisition // an acquisition whose outcome is unknown
	seen        observation
	reqSeen     map[string]observation                       // claims requests, by requester
	acked       map[string]uint64                            // what the stored acknowledgement names
	onHold      func(from, deadline time.Time, epoch uint64) // tests
	onRelease   func(at time.Time, epoch uint64)             // tests
}

// Grant is what a holder may do without claims.
type Grant struct {
	// Deadline: the action must have ended by then.
	Deadline time.Time
	// Epoch: see Held.
	Epoch uint64
	// Generation changes whenever claimless acting starts again: after an
	// acquisition, after the deadline lapsed, and after claims requests
	// ended. State built from what others wrote (a ledger cache) is stale
	// in a later generation: others may have written meanwhile.
	Generation uint64
}

// Begin starts an action without claims: ok only while the lease is held
// and no claims request is live. done must be called when the action has
// ended; the holder acknowledges a claims request only when every action
// begun before it is done (or its deadline has passed).
func (l *Lease) Begin() (g Grant, done func(), ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.holding || !l.claimless || !time.Now().Before(l.deadline) {
		return Grant{}, nil, false
	}
	l.inflight++
	var once sync.Once
	return Grant{Deadline: l.deadline, Epoch: l.epoch, Generation: l.generation}, func() {
		once.Do(func() {
			l.mu.Lock()
			l.inflight--
			l.mu.Unlock()
		})
	}, true
}

// acquisition is an attempt to take the lease whose reply was lost: its
// write may have been stored.
type acquisition struct {
	nonce uint64
	sent  time.Time // the first attempt's send time
}

// observation is what a contender saw last: the record's revision (0 when
// absent), since when, and how long it must stay so before a takeover.
type observation struct {
	valid   bool
	present bool
	rev     uint64
	at      time.Time
	wait    time.Duration
}

// New returns a lease on cfg.Key in kv. It holds nothing until Run runs.
func New(kv jetstream.KeyValue, cfg Config) (*Lease, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Lease{kv: kv, cfg: cfg, log: cfg.Logger.With(zap.String("lease", cfg.Key), zap.String("holder", cfg.Holder)),
		changed: make(chan struct{})}, nil
}

// Held reports whether this process holds the lease now, the deadline its
// actions must end by (bound them with context.WithDeadline), and the
// epoch: the revision of the write that acquired the lease. The epoch is
// the same for as long as this process keeps the lease, renewals
// included, and differs after any change of hands.
func (l *Lease) Held() (deadline time.Time, epoch uint64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.holding || !time.Now().Before(l.deadline) {
		return time.Time{}, 0, false
	}
	return l.deadline, l.epoch, true
}

// Changes returns a channel that is closed at the next change of Held's
// answer (taken, lost, expired, or a new epoch).
func (l *Lease) Changes() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

// Run takes the lease when it is free or abandoned, renews it while held,
// and returns when ctx ends. It then releases the lease if held: cancel
// ctx only after everything acting under the lease has stopped. The
// release lets the next contender take the lease at once instead of after
// a TTL.
func (l *Lease) Run(ctx context.Context) error {
	defer l.release()
	for {
		var next time.Duration
		if l.isHolding() {
			next = l.renew(ctx)
		} else {
			next = l.contend(ctx)
		}
		if l.isHolding() && l.renewed {
			next = min(next, l.serveRequests(ctx))
		}
		l.publish()
		if d := l.untilDeadline(); d > 0 && d < next {
			next = d // announce the expiry on time
		}
		if err := ctxtime.Sleep(ctx, max(next, 0)); err != nil {
			return nil
		}
	}
}

// act is how long after a renewal's send time the holder may act.
func (l *Lease) act() time.Duration { return l.cfg.TTL - l.cfg.TTL/10 }

// retry is the delay before trying again after NATS trouble.
func (l *Lease) retry() time.Duration {
	return min(max(l.cfg.RenewEvery/4, 10*time.Millisecond), time.Second)
}

func (l *Lease) isHolding() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.holding
}

func (l *Lease) untilDeadline() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.holding {
		return 0
	}
	return time.Until(l.deadline)
}

// publish closes the changes channel when Held's answer changed.
func (l *Lease) publish() {
	l.mu.Lock()
	defer l.mu.Unlock()
	held := l.holding && time.Now().Before(l.deadline)
	ep := l.epoch
	if !held {
		ep = 0
	}
	if held != l.lastHeld || ep != l.lastEp {
		l.lastHeld, l.lastEp = held, ep
		close(l.changed)
		l.changed = make(chan struct{})
	}
}

func (l *Lease) encode(holder string, nonce uint64) []byte {
	b, _ := json.Marshal(record{Holder: holder, Nonce: nonce, TTLMs: l.cfg.TTL.Milliseconds()})
	return b
}

// hold records a stored write of ours, sent at sent, at revision rev.
func (l *Lease) hold(sent time.Time, rev, epoch, nonce uint64) {
	l.mu.Lock()
	first := !l.holding || l.epoch != epoch
	if first || !time.Now().Before(l.deadline) {
		// Others may have acted meanwhile (a claims requester that saw
		// the record stand still): no claimless action until the requests
		// have been read again.
		l.claimless = false
	}
	l.holding, l.rev, l.revSent, l.epoch, l.nonce = true, rev, sent, epoch, nonce
	if d := sent.Add(l.act()); d.After(l.deadline) || first {
		l.deadline = d
	}
	deadline := l.deadline
	hook := l.onHold
	l.mu.Unlock()
	l.unconfirmed = time.Time{}
	l.pending = acquisition{}
	l.seen = observation{}
	l.renewed = true
	l.publish()
	if first {
		l.log.Info("lease acquired", zap.Uint64("epoch", epoch))
	}
	if hook != nil {
		hook(time.Now(), deadline, epoch)
	}
}

// lose ends the holding at once. Actions already under way still end by
// the deadline they were given.
func (l *Lease) lose(why string) {
	l.mu.Lock()
	was := l.holding
	l.holding, l.deadline, l.nonce, l.claimless = false, time.Time{}, 0, false
	l.mu.Unlock()
	l.acked = nil
	l.unconfirmed = time.Time{}
	l.publish()
	switch {
	case was && why == "released":
		l.log.Info("lease released")
	case was:
		l.log.Warn("lease lost", zap.String("reason", why))
	}
}

func (l *Lease) renew(ctx context.Context) time.Duration {
	l.mu.Lock()
	rev, epoch, nonce := l.rev, l.epoch, l.nonce
	l.mu.Unlock()
	sent := time.Now()
	if l.unconfirmed.IsZero() {
		l.unconfirmed = sent
	}
	l.renewed = false
	actx, cancel := context.WithTimeout(ctx, l.cfg.RenewEvery)
	nrev, err := l.kv.Update(actx, l.cfg.Key, l.encode(l.cfg.Holder, nonce), rev)
	cancel()
	switch {
	case err == nil:
		l.hold(sent, nrev, epoch, nonce)
		return l.cfg.RenewEvery - time.Since(sent)
	case ctx.Err() != nil:
		return 0
	case !isConflict(err):
		return l.retry() // NATS trouble: the deadline stands, and passes
	}
	// The record changed: a renewal of ours whose reply was lost, or
	// someone else's write.
	gctx, cancel := context.WithTimeout(ctx, l.cfg.RenewEvery)
	e, gerr := l.kv.Get(gctx, l.cfg.Key)
	cancel()
	switch {
	case gerr == nil && e.Revision() <= rev:
		// The compare-and-set at rev was refused, so the record is no
		// longer at rev: this read came from a replica that lags (gets are
		// answered by any replica) and says nothing, least of all that our
		// old record still stands. Read again; the deadline passes
		// meanwhile.
		return l.retry()
	case gerr == nil:
		if r, ok := parseRecord(e.Value()); ok && r.Holder == l.cfg.Holder && r.Nonce == nonce {
			l.hold(l.unconfirmed, e.Revision(), epoch, nonce)
			return 0
		}
		l.lose("the record was rewritten by another process")
	case errors.Is(gerr, jetstream.ErrKeyNotFound):
		l.lose("the record was deleted")
	default:
		return l.retry()
	}
	return 0
}

func (l *Lease) contend(ctx context.Context) time.Duration {
	gctx, cancel := context.WithTimeout(ctx, l.cfg.RenewEvery)
	asked := time.Now()
	e, err := l.kv.Get(gctx, l.cfg.Key)
	cancel()
	now := time.Now()
	var (
		present, readable bool
		rev               uint64
		r                 record
	)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return l.retry()
	default:
		present, rev = true, e.Revision()
		r, readable = parseRecord(e.Value())
	}
	if readable && r.Holder == l.cfg.Holder && l.pending.nonce != 0 && r.Nonce == l.pending.nonce {
		// Our acquisition was stored though its reply was lost.
		l.hold(l.pending.sent, rev, rev, r.Nonce)
		return 0
	}
	wait := l.cfg.TTL
	if readable {
		wait = max(wait, r.ttl())
	}
	if !l.seen.valid || l.seen.present != present || l.seen.rev != rev {
		l.seen = observation{valid: true, present: present, rev: rev, at: now, wait: wait}
		l.pending = acquisition{}
	}
	l.seen.wait = max(l.seen.wait, wait)
	released := readable && r.Holder == ""
	if !released {
		// Counted to when this read was sent, not answered: a slow answer
		// must not stretch the time the record stood still.
		if left := l.seen.wait - asked.Sub(l.seen.at); left > 0 {
			return min(left, l.cfg.RenewEvery)
		}
	}
	return l.take(ctx, present, rev)
}

// take writes this process into the record by compare-and-set at rev.
func (l *Lease) take(ctx context.Context, present bool, rev uint64) time.Duration {
	if l.pending.nonce == 0 {
		l.pending = acquisition{nonce: newNonce(), sent: time.Now()}
	}
	nonce := l.pending.nonce
	sent := time.Now()
	actx, cancel := context.WithTimeout(ctx, l.cfg.RenewEvery)
	var nrev uint64
	var err error
	if present {
		nrev, err = l.kv.Update(actx, l.cfg.Key, l.encode(l.cfg.Holder, nonce), rev)
	} else {
		nrev, err = l.kv.Create(actx, l.cfg.Key, l.encode(l.cfg.Holder, nonce))
	}
	cancel()
	switch {
	case err == nil:
		l.hold(sent, nrev, nrev, nonce)
		return l.cfg.RenewEvery - time.Since(sent)
	case ctx.Err() != nil:
		return 0
	case isConflict(err):
		// Read again. pending stays: an earlier attempt of ours may be the
		// write this one conflicted with, and contend recognises it.
		l.seen = observation{}
		return 0
	default:
		return l.retry() // pending stays: the write may have been stored
	}
}

// release writes a released record if this process holds the lease.
func (l *Lease) release() {
	l.mu.Lock()
	holding, rev, epoch := l.holding, l.rev, l.epoch
	l.mu.Unlock()
	if !holding {
		return
	}
	if l.onRelease != nil {
		l.onRelease(time.Now(), epoch)
	}
	l.lose("released")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := l.kv.Update(ctx, l.cfg.Key, l.encode("", 0), rev); err != nil {
		// The record stands: contenders wait out its TTL.
		l.log.Warn("lease release not stored; the next holder waits out the ttl", zap.Error(err))
	}
}

func isConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) || isWrongLastSequence(err)
}

// isWrongLastSequence matches the server's compare-and-set refusal, under
// either code: replicated streams answer 10164 where one replica answers
// 10071. (nats.go maps both to ErrKeyExists or ErrKeyRevisionMismatch on
// the KV calls the lease makes; this catches an error that is not.)
func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

func newNonce() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:]) | 1
}
