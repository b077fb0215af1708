package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/ctxtime"
	"github.com/keyrelay/keyrelay/ownership"
)

// Ownership modes (worker.ownership).
const (
	// OwnershipClaims: every worker writes a key only under a claim in its
	// ledger entry (a compare-and-set before each provider call). Any
	// number of processes consume at once. The default.
	OwnershipClaims = "claims"
	// OwnershipExclusive: one process at a time holds the writer lease
	// (package ownership) and consumes the event lanes; it writes keys
	// without claims, recording each write's intent in a group-committed
	// log first. The others stand by (they serve lookups) and take over
	// when the holder stops or dies. docs/architecture.md, "Writer
	// leases", says what it keeps and what it costs.
	OwnershipExclusive = "exclusive"
)

// Ownership names in the topology.
const (
	// OwnershipBucket holds the writer lease record and the recovery
	// commands' claims requests.
	OwnershipBucket = "KEYRELAY_OWNERSHIP"
	// WriterLeaseKey is the lease's key in OwnershipBucket.
	WriterLeaseKey = "writer"
	// IntentsStream keeps the intents of claimless writes, for the next
	// holder after a crash; IntentsSubject is its subject.
	IntentsStream  = "KEYRELAY_INTENTS"
	IntentsSubject = "keyrelay.intents"
	// IntentsMaxAge is the intents stream's retention. A worker refuses to
	// start exclusive when it is shorter than intentWindow needs.
	IntentsMaxAge = 30 * time.Minute
)

// exclusive is a worker's side of ownership mode "exclusive".
type exclusive struct {
	lease   *ownership.Lease
	intents *ownership.IntentLog
	js      jetstream.JetStream
	log     *zap.Logger
	// window: how far back a new holder reads intents (intentWindow).
	window time.Duration
	// ttl is the writer lease's TTL: no stored intent is honoured for
	// longer than this after it is loaded (prepare).
	ttl time.Duration
	// now is this process's clock (time.Now; tests skew it).
	now func() time.Time
	// clock reads the intents loaded from earlier holders against the
	// server's time (the worker's ledger clock).
	clock *ledgerClock
	// held is the keyrelay_writer_lease_held gauge.
	held prometheus.Gauge
	// clamped is the keyrelay_intents_clamped_total counter.
	clamped prometheus.Counter

	// prepMu serializes prepare.
	prepMu sync.Mutex

	mu sync.Mutex
	// prepared is the epoch whose predecessors' intents are loaded: a
	// claimless action begins only under it.
	prepared uint64
	// generation is the grant generation the ledger cache was purged for.
	generation uint64
	// doubtUntil: a stored intent batch could not be read, so any key may
	// be being written by an event unknown; until then no key is written
	// without a claim.
	doubtUntil time.Time
	// open holds the intents whose actions have not ended cleanly, by
	// ledger key: this process's in flight (until their commit or
	// release) and those that ended without one, and those loaded from
	// the log at an acquisition. claim treats each as the key's claim.
	// One past its bound (Until + deadAfter) no longer matters to the
	// dead-claim rule and is dropped (sweep).
	open map[string]Claim
	// deadAfter is ack_wait + claim_lease: how long after its deadline an
	// intent can still stand for a write (claim's dead-claim rule).
	deadAfter time.Duration
	// intended counts appends, to sweep open now and then.
	intended int
}

// sweep drops the open intents past their bound: this process's own by
// its clock (now), those loaded from earlier holders by the server's time
// too (ledgerClock), as claim reads them. x.mu is held.
func (x *exclusive) sweep(now time.Time) {
	for k, c := range x.open {
		if !x.clock.stands(&c, now, x.deadAfter) {
			delete(x.open, k)
		}
	}
}

// intentWindow is how long an intent matters after its action's deadline:
// its event's redelivery comes within AckWait plus the claim lease (the
// dead-claim rule in claim), and the lease TTL covers the deadline itself.
func (w *Worker) intentWindow(ttl time.Duration) time.Duration {
	return w.cfg.AckWait + w.cfg.ClaimLease + 2*ttl
}

// newExclusive sets up exclusive mode: the lease on OwnershipBucket and
// the intent log on IntentsStream (EnsureTopology creates both).
func newExclusive(ctx context.Context, w *Worker) (*exclusive, error) {
	kv, err := w.d.JS.KeyValue(ctx, OwnershipBucket)
	if err != nil {
		return nil, fmt.Errorf("worker: bucket %s: %w", OwnershipBucket, err)
	}
	s, err := w.d.JS.Stream(ctx, IntentsStream)
	if err != nil {
		return nil, fmt.Errorf("worker: stream %s: %w", IntentsStream, err)
	}
	ttl := w.cfg.LeaseTTL
	window := w.intentWindow(ttl)
	if age := s.CachedInfo().Config.MaxAge; age > 0 && age < window {
		return nil, fmt.Errorf("worker: stream %s keeps intents for %s; exclusive ownership needs at least %s (ack_wait + claim_lease + 2 lease TTLs)",
			IntentsStream, age, window)
	}
	lease, err := ownership.New(kv, ownership.Config{Key: WriterLeaseKey, Holder: w.cfg.ID, TTL: ttl, Logger: w.log})
	if err != nil {
		return nil, fmt.Errorf("worker: writer lease: %w", err)
	}
	nc := w.d.JS.Conn()
	intents := ownership.NewIntentLog(w.d.JS, IntentsSubject, ownership.WithPublisher(func(ctx context.Context, subject string, data []byte) error {
		_, err := jsPublish(ctx, nc, &nats.Msg{Subject: subject, Data: data})
		return err
	}))
	return &exclusive{lease: lease, intents: intents, js: w.d.JS, log: w.log,
		window: window, ttl: ttl, now: time.Now, clock: &w.ledger.clock, open: map[string]Claim{}, held: w.m.WriterLease, clamped: w.m.IntentsClamped, deadAfter: w.cfg.AckWait + w.cfg.ClaimLease}, nil
}

// ready waits until this process holds the lease and its predecessors'
// intents are loaded. A lane pulls events only then.
func (x *exclusive) ready(ctx context.Context) error {
	for {
		changes := x.lease.Changes()
		if _, epoch, ok := x.lease.Held(); ok {
			if err := x.prepare(ctx, epoch); err == nil {
				// Set on every return, not only at a new epoch: a lease
				// that lapsed and was renewed under the same epoch is held
				// again too.
				x.held.Set(1)
				return nil
			} else if ctx.Err() == nil {
				x.log.Warn("intents of the previous holders not read; retrying", zap.Error(err))
				if err := ctxtime.Sleep(ctx, 250*time.Millisecond); err != nil {
					return err
				}
				continue
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changes:
		}
	}
}

// prepare loads, once per epoch, the intents stored within the window:
// those of the holders before this epoch (and this process's earlier
// ones) whose events may have written without committing.
func (x *exclusive) prepare(ctx context.Context, epoch uint64) error {
	x.prepMu.Lock()
	defer x.prepMu.Unlock()
	x.mu.Lock()
	done := x.prepared == epoch
	x.mu.Unlock()
	if done {
		return nil
	}
	// The window is counted back from the server's time, not this
	// process's: from the stored time of the intents stream's last
	// message. A clock far ahead would start the read after every intent
	// of the previous holder, and one far behind would read back without
	// bound. ReadIntents bounds each of its steps, not the whole read (a
	// long window of intents may take a while to read); a read without
	// progress fails within 30 s, and ready tries again.
	last, err := x.lastIntentTime(ctx)
	if err != nil {
		return err
	}
	x.clock.observe(last)
	var ins []ownership.Intent
	bad := 0
	if !last.IsZero() {
		if ins, bad, err = ownership.ReadIntents(ctx, x.js, IntentsStream, IntentsSubject, last.Add(-x.window)); err != nil {
			return err
		}
	}
	now := x.now()
	// Cut from the later of the two clocks: a clock behind the server's
	// must not cut the deadline of a genuine intent.
	from := now
	if last.After(now) {
		from = last
	}
	if n := ownership.ClampIntentLeases(ins, x.ttl); n > 0 {
		// No holder takes an intent more than one lease before its
		// deadline (Until − Taken, which claim counts from the batch's
		// stored time): forged or corrupt, as below.
		x.log.Warn("stored intents give their write longer than one writer lease TTL; cut to one TTL",
			zap.Int("intents", n), zap.Duration("lease_ttl", x.ttl))
	}
	if n := ownership.ClampIntents(ins, from.Add(x.ttl)); n > 0 {
		// No holder writes a deadline further than one lease ahead: these
		// are forged or corrupt. Each still keeps its key for one lease.
		x.clamped.Add(float64(n))
		x.log.Warn("stored intents end further ahead than one writer lease TTL; their deadline is cut to one TTL from now",
			zap.Int("intents", n), zap.Duration("lease_ttl", x.ttl))
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.sweep(now)
	loaded := 0
	for _, in := range ins {
		// Read: its Until is an earlier holder's clock's, and claim reads
		// it against the server's time too, and its time (Until − Taken)
		// from the server's time its batch was stored (ledgerClock).
		c := Claim{EventID: in.EventID, StreamSeq: in.StreamSeq, Lane: events.Lane(in.Lane), Generation: in.Generation,
			Worker: "intent", Until: in.Until, Taken: in.Taken, read: true, stored: in.Stored}
		if !last.Before(c.serverEnd().Add(x.deadAfter)) {
			// Past the dead-claim rule's bound by the server's time, which
			// is not ahead of the true time: no clock skew drops a live one.
			continue
		}
		if old, ok := x.open[in.Key]; ok && old.Generation > c.Generation {
			continue
		}
		x.open[in.Key] = c
		loaded++
	}
	if bad > 0 {
		x.doubtUntil = now.Add(x.window)
		x.log.Error("stored intent batches could not be read: every key waits as if an unknown event were writing it",
			zap.Int("bad_batches", bad), zap.Time("until", x.doubtUntil))
	}
	x.prepared = epoch
	x.log.Info("writer lease acquired; intents of earlier holders loaded", zap.Uint64("epoch", epoch), zap.Int("intents", loaded))
	return nil
}

// lastIntentTime returns the stored time of the intents stream's last
// message (zero when it holds none): the server's time, by the stream's
// leader, which answers the stream's info.
func (x *exclusive) lastIntentTime(ctx context.Context) (time.Time, error) {
	s, err := x.js.Stream(ctx, IntentsStream)
	if err != nil {
		return time.Time{}, fmt.Errorf("stream %s: %w", IntentsStream, err)
	}
	if st := s.CachedInfo().State; st.Msgs > 0 {
		return st.LastTime, nil
	}
	return time.Time{}, nil
}

// errNotHolder: this process does not hold the writer lease (or has not
// loaded its predecessors' intents yet); the event waits for the holder.
var errNotHolder = errors.New("this worker does not hold the writer lease")

// action is one key action's standing under the lease.
type action struct {
	grant ownership.Grant
	done  func()
	// claimless: the action writes without a claim (under grant);
	// otherwise it claims the key as in claims mode, by deadline.
	claimless bool
	deadline  time.Time
}

// begin decides how this process may act on a key now: without a claim
// (the lease is held and no claims request stands), with a claim (a
// claims request stands: the recovery commands claim keys, so the holder
// does too), or not at all.
func (w *Worker) begin() (action, error) {
	x := w.excl
	if g, done, ok := x.lease.Begin(); ok {
		x.mu.Lock()
		prepared, doubt := x.prepared, x.doubtUntil
		if g.Epoch == prepared && !time.Now().Before(doubt) && x.generation != g.Generation {
			// Claimless acting starts a new generation: others may have
			// written keys meanwhile, and a claimless decision trusts what
			// the ledger cache says.
			w.entries.Purge()
			x.generation = g.Generation
		}
		x.mu.Unlock()
		switch {
		case g.Epoch != prepared:
			done()
			return action{}, errNotHolder
		case time.Now().Before(doubt):
			done()
			return action{}, fmt.Errorf("an unreadable intent batch leaves every key in doubt until %s", doubt.Format(time.RFC3339))
		}
		return action{grant: g, done: done, claimless: true, deadline: g.Deadline}, nil
	}
	x.mu.Lock()
	prepared := x.prepared
	x.mu.Unlock()
	if deadline, epoch, ok := x.lease.Held(); ok && epoch == prepared {
		return action{deadline: deadline}, nil
	}
	return action{}, errNotHolder
}

// cacheAdd puts an entry read or written under a into the ledger cache:
// always in claims mode; in exclusive mode only while the generation a
// claimless action a began in is still the current one (under the same
// lock as begin's purge, so an entry of an earlier generation never survives a
// purge). A claim's compare-and-set catches a stale entry, but claimless
// decisions trust the cache; anything else is dropped from it.
func (w *Worker) cacheAdd(a *action, key string, ce cachedEntry) {
	x := w.excl
	if x == nil {
		w.entries.Add(key, ce)
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if a != nil && a.claimless && x.generation == a.grant.Generation {
		w.entries.Add(key, ce)
		return
	}
	w.entries.Remove(key)
}

// openIntent returns the intent standing on key (an action of this
// process in flight, or one that did not end cleanly).
func (w *Worker) openIntent(key string) *Claim {
	if w.excl == nil {
		return nil
	}
	x := w.excl
	x.mu.Lock()
	defer x.mu.Unlock()
	if c, ok := x.open[key]; ok {
		return &c
	}
	return nil
}

// intend stores kw's intent before its claimless write and records it as
// open. early, when not nil, is the same intent's append started before
// the entry was read (appendEarly): intend waits for it instead of
// appending again.
func (w *Worker) intend(ctx context.Context, key string, c Claim, early *earlyIntent) error {
	x := w.excl
	x.mu.Lock()
	x.open[key] = c
	if x.intended++; x.intended%4096 == 0 {
		x.sweep(time.Now())
	}
	x.mu.Unlock()
	if early != nil && early.claim == c {
		select {
		case err := <-early.done:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// Not bounded by c.Until here (a timer per event costs): the append
	// bounds its own stores, and handleKey makes no call once the
	// deadline is too close.
	return x.intents.Append(ctx, intentOf(key, c))
}

func intentOf(key string, c Claim) ownership.Intent {
	return ownership.Intent{Key: key, EventID: c.EventID, StreamSeq: c.StreamSeq, Lane: string(c.Lane),
		Generation: c.Generation, Until: c.Until, Taken: c.Taken}
}

// earlyIntent is an intent's append running while the key's entry is
// read from the leader (a cache miss): the intent does not depend on the
// entry, and the two round trips overlap instead of adding up.
type earlyIntent struct {
	claim Claim
	done  chan error // receives the append's result once
}

// appendEarly starts storing c's intent for key without recording it as
// open. If the read then shows the event will not write (a duplicate, a
// superseded generation, a busy key), the stored intent is one of an
// event that wrote nothing: a later holder that loads it finds how the
// event ended in the confirmations stream, or waits out the dead-claim
// bound as for any intent whose event it cannot place; it never lets an
// older value through.
func (w *Worker) appendEarly(ctx context.Context, key string, c Claim) *earlyIntent {
	e := &earlyIntent{claim: c, done: make(chan error, 1)}
	sidework.Go(func() { e.done <- w.excl.intents.Append(ctx, intentOf(key, c)) })
	return e
}

// endAction ends action a on key (ledger key) by event id at generation
// gen. clean: its outcome is committed, or it wrote nothing; the key's
// intent is dropped. Otherwise the intent stays, as a dead claim stays in
// an entry, for the dead-claim rule in claim.
func (w *Worker) endAction(a *action, key, id string, gen uint64, clean bool) {
	if a == nil {
		return
	}
	if a.claimless && clean {
		x := w.excl
		x.mu.Lock()
		if c, ok := x.open[key]; ok && c.EventID == id && c.Generation == gen {
			delete(x.open, key)
		}
		x.mu.Unlock()
	}
	if a.done != nil {
		a.done()
	}
}

// endWork ends kw's action, if it still has one.
func (w *Worker) endWork(kw *keyWork, clean bool) {
	a := kw.act
	kw.act = nil
	w.endAction(a, LedgerKey(kw.ev.TeamID, kw.ev.KeyID), kw.ev.ID, kw.gen, clean)
}

// HoldsLease reports whether this worker runs exclusive, holds the writer
// lease and has loaded its predecessors' intents: it is the one consuming.
func (w *Worker) HoldsLease() bool {
	if w.excl == nil {
		return false
	}
	_, epoch, ok := w.excl.lease.Held()
	if !ok {
		return false
	}
	w.excl.mu.Lock()
	defer w.excl.mu.Unlock()
	return w.excl.prepared == epoch
}

// IntentStats returns how many intents this worker stored and in how many
// stored messages (exclusive mode; zeros otherwise).
func (w *Worker) IntentStats() (intents, messages uint64) {
	if w.excl == nil {
		return 0, 0
	}
	return w.excl.intents.Stats()
}

// holdClaimsRequest keeps, in claims mode, a claims request for as long
// as this worker runs, granted before it consumes: a process writing
// exclusive (a deployment part way through a change of worker.ownership)
// then claims keys too instead of writing without claims next to this
// one. With no lease holder, as in a claims-only deployment, it is granted
// at once. The returned stop withdraws it; call it once the worker's work
// has ended. A topology without the ownership bucket (created by an older
// keyrelay) cannot have a holder: nothing is registered.
func (w *Worker) holdClaimsRequest(ctx context.Context) (stop func(), err error) {
	kv, err := w.d.JS.KeyValue(ctx, OwnershipBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		w.log.Info("no ownership bucket: no claims request (no worker can run exclusive on this topology)")
		return func() {}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("worker: bucket %s: %w", OwnershipBucket, err)
	}
	req, err := ownership.NewRequest(kv, ownership.RequestConfig{Key: WriterLeaseKey, Requester: ownership.RequesterName(w.cfg.ID), TTL: claimsRequestTTL(w.cfg), Logger: w.log,
		Conn: w.d.JS.Conn()})
	if err != nil {
		return nil, fmt.Errorf("worker: claims request: %w", err)
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done, regranted := make(chan struct{}), make(chan struct{})
	go func() { defer close(done); _ = req.Run(rctx) }()
	stop = func() { cancel(); <-done; <-regranted }
	for {
		_, err := req.Granted(ctx)
		if err == nil {
			w.claimsReq.Store(req)
			go func() { defer close(regranted); w.keepGranted(rctx, req) }()
			return stop, nil
		}
		if ctx.Err() != nil {
			close(regranted)
			stop()
			return nil, ctx.Err()
		}
		w.log.Warn("claims request not granted yet; retrying", zap.Error(err))
		if err := ctxtime.Sleep(ctx, 250*time.Millisecond); err != nil {
			close(regranted)
			stop()
			return nil, err
		}
	}
}

// leaseWriteWindow is the least time a write under a writer lease of TTL
// ttl has while the renewals succeed: the lease's deadline is 0.9 TTL
// after the last renewal, and a renewal is sent every TTL/4.
func leaseWriteWindow(ttl time.Duration) time.Duration { return ttl * 65 / 100 }

// claimsRequestTTL is the TTL of a claims-mode worker's claims request:
// the longer of lease_ttl and claim_lease (within what a record may ask),
// so that while its renewals succeed the request's deadline (0.65 to 0.9
// of it ahead) ends a key's work no earlier than the claim's own bound
// would by much, and a provider call may take up to call_timeout.
func claimsRequestTTL(c Config) time.Duration {
	return min(max(c.LeaseTTL, c.ClaimLease, ownership.MinTTL), ownership.MaxRecordTTL)
}

// errClaimsRequestLapsed: a claims-mode worker's claims request is not
// granted for its current life; the event waits, nothing spent.
var errClaimsRequestLapsed = errors.New("this worker's claims request lapsed: the writer lease holder may be writing without claims until it acknowledges the request again")

// keepGranted asks for req's grant again whenever it lapses, until ctx
// ends. In between, key events wait (handleKey checks GrantedUntil):
// a request whose renewals failed for most of a TTL may have been
// forgotten by a holder, which then writes keys without claims, so no
// key is claimed until that holder, or the next, acknowledges it again.
func (w *Worker) keepGranted(ctx context.Context, req *ownership.Request) {
	const poll = 100 * time.Millisecond
	for {
		if d := req.GrantedUntil(); !d.IsZero() {
			if ctxtime.Sleep(ctx, min(time.Until(d), poll)) != nil {
				return
			}
			continue
		}
		w.log.Warn("claims request lapsed; keys wait until the writer lease holder acknowledges it again")
		for {
			_, err := req.Granted(ctx)
			if err == nil {
				w.log.Info("claims request granted again; keys are claimed again")
				break
			}
			if ctx.Err() != nil {
				return
			}
			if ctxtime.Sleep(ctx, 250*time.Millisecond) != nil {
				return
			}
		}
	}
}
