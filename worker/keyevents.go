package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/ctxtime"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/settings"
)

// keyWork carries one key event through the claim and write phases.
type keyWork struct {
	ev       *events.Event
	gen      uint64
	res      settings.Resolved
	tb       *teamBackend // res with what its events need (resolve)
	team     *events.TeamSettings
	value    []byte
	keyData  *events.KeyData
	upd      *events.UpdateData
	entry    *LedgerEntry
	rev      uint64
	deadline time.Time
	// callStart is when this delivery's first provider call began (zero:
	// none yet); the time before it was keyrelay's own (retry budget).
	callStart time.Time
	guard     *backendGuard
	lane      *lane
	// sealed: the value opened as a sealed envelope (verdict.sealed).
	sealed bool
	// prior is the ledger's record of this key's last provider failures.
	prior *RetryRecord
	// act is the event's standing under the writer lease (exclusive mode
	// only); claimless when it writes without a claim.
	act *action
	// copy is the parked copy being handled (its KEYRELAY_PARKED
	// sequence; 0: the lane message itself): Claim.Copy.
	copy uint64
}

// place is where kw's writes go beyond the backend's name (teamBackend.
// place; nil without a resolved backend: not recorded).
func (kw *keyWork) place() *Placement {
	if kw.tb == nil {
		return nil
	}
	return kw.tb.place
}

// claimless reports whether kw writes under the lease without a claim.
func (kw *keyWork) claimless() bool { return kw.act != nil && kw.act.claimless }

// Bounds on waiting in place, holding a slot.
const (
	// keyLockWait: for another event of the same key in this process.
	keyLockWait = 200 * time.Millisecond
	// claimWaitInPlace: for another worker's claim (a write usually takes
	// milliseconds); beyond it the event is handed back until the claim
	// is released or expires.
	claimWaitInPlace = 100 * time.Millisecond
	// backendSlotWait: for a slot of the event's backend.
	backendSlotWait = 100 * time.Millisecond
	// minCallWindow: an event under the writer lease (or a claims
	// request) makes no call when the deadline is closer than this, or
	// than callWindow's share of call_timeout.
	minCallWindow = 50 * time.Millisecond
	// maxCallWindow caps callWindow, so that a lease or request renewed
	// at least this long before its deadline never starves its calls.
	maxCallWindow = time.Second
)

// errOwnDeadline marks a provider call that keyrelay's own deadline (the
// claim, the writer lease or the claims request, not call_timeout) cut
// short or did not let start. It is not the provider's failure: the event
// waits, its retry budget untouched, and the backend's breaker does not
// count it.
var errOwnDeadline = errors.New("keyrelay's own deadline (claim, writer lease or claims request) ran out before the provider call ended")

// callWindow is the least time left before kw's deadline for which a
// provider call is started: a tenth of call_timeout, between
// minCallWindow and maxCallWindow. A call given less would likely be cut
// by the deadline (a wasted call that is only a wait). More would hold
// back calls under a short lease or request whose deadline is renewed
// often but never far ahead (0.65 to 0.9 of its TTL).
func (w *Worker) callWindow() time.Duration {
	return max(minCallWindow, min(w.cfg.CallTimeout/10, maxCallWindow))
}

// busyDelay is how long an event waits, handed back, for a busy key or
// backend: growing with its deliveries (n, 1-based), 250ms to 5s, with
// ±50% jitter.
func busyDelay(n uint64) time.Duration {
	d := 250 * time.Millisecond << min(max(n, 1)-1, 5)
	d = min(d, 5*time.Second)
	return d/2 + time.Duration(rand.Int64N(int64(d)))
}

func (w *Worker) handleKey(ctx context.Context, ln *lane, msg jetstream.Msg, md *jetstream.MsgMetadata, ev *events.Event, gen uint64, receivedAt time.Time) (v verdict) {
	conf := confFor(ev, gen)
	kw := &keyWork{ev: ev, gen: gen, lane: ln}
	if pm, ok := msg.(*parkedMsg); ok {
		kw.copy = pm.seq
	}
	defer func() { v.sealed = kw.sealed }()
	switch ev.Type {
	case events.KeyCreated, events.KeyRotated:
		kd, err := ev.KeyData()
		if err != nil {
			return w.rejected(msg, md, conf, sanitize(err), false)
		}
		value, err := w.d.Opener.Open(ctx, kd.Value, events.BindingOf(ev))
		if err != nil {
			if openCanceled(ctx, err) {
				// Shutting down while the KMS answered: the value is not
				// at fault, and nothing is spent (finish hands it back).
				return verdict{retry: true, err: fmt.Errorf("open value: %w", err), conf: conf}
			}
			if providers.IsRetryable(err) {
				// A KMS outage or throttling: the value is fine, try later.
				return verdict{retry: true, err: fmt.Errorf("open value: %w", err), retryHint: providers.RetryAfter(err), conf: conf,
					budget: w.noteFailure(md, ev.ID, nil)}
			}
			// Not opened: nothing proves the value sealed (its ct may be
			// a plaintext key under a sealed algorithm's name), so the
			// DLQ keeps the redacted summary.
			return w.rejected(msg, md, conf, "cannot open value: "+sanitize(err), true)
		}
		// Opened as an authenticated envelope: proven sealed, its DLQ
		// copy may be the original (keepsOriginal).
		kw.sealed = kd.Value.Alg != events.AlgPlaintext
		kw.keyData, kw.value = kd, value
		defer clear(value)
	case events.KeyUpdated:
		upd, err := ev.UpdateData()
		if err != nil {
			return w.rejected(msg, md, conf, sanitize(err), false)
		}
		kw.upd = upd
	}

	unlock, ok := w.locks.lock(ctx, LedgerKey(ev.TeamID, ev.KeyID), keyLockWait)
	if !ok {
		return waitVerdict(conf, busyDelay(md.NumDelivered), errors.New("another event of this key is being written in this process"))
	}
	defer unlock()

	if w.excl != nil {
		// Exclusive: act only under the writer lease.
		a, err := w.begin()
		if err != nil {
			return waitVerdict(conf, busyDelay(md.NumDelivered), err)
		}
		kw.act = &a
		// An action not ended by its commit or its release (a duplicate,
		// a superseded event) ends here; one whose outcome is unknown
		// keeps its intent.
		defer w.endWork(kw, false)
	} else if req := w.claimsReq.Load(); req != nil {
		// Claims mode next to a possible holder: claim only while the
		// claims request is granted, and end the key's work by the
		// request's deadline (claim applies it, as for a holder's).
		d := req.GrantedUntil()
		if d.IsZero() {
			return waitVerdict(conf, busyDelay(md.NumDelivered), errClaimsRequestLapsed)
		}
		kw.act = &action{deadline: d}
	}

	// The team's settings say whether the event writes at all. One its
	// team does not store, or may not write, takes no claim (no ledger
	// write): the ledger is only read, to tell a duplicate or a superseded
	// event from one to skip or reject. When the settings are not known
	// without a round trip, they are looked up while the key is claimed
	// (or only read), as the team's last known settings say.
	st, known := w.teams.CurrentIfKnown(ev.TeamID, receivedAt)
	var lookup *SettingsLookup
	if !known {
		// Asked for now, read after the claim: the two round trips
		// overlap.
		lookup = w.teams.Lookup(ev.TeamID, receivedAt)
		st = w.teams.Cached(ev.TeamID)
	}
	tb := w.resolve(st.Settings)
	res := tb.res
	claimed := writes(res)
	v, done := w.claim(ctx, md, kw, conf, claimed)
	if done {
		// Duplicate, superseded or handed back: the settings are not needed.
		return v
	}
	if !known {
		// CurrentFrom bounds each of its requests itself (infraDoBounded).
		err := w.infraDoBounded(ctx, func(ctx context.Context) (err error) {
			if lookup != nil {
				// The first try uses the lookup asked for on arrival; a
				// retry asks again.
				l := lookup
				lookup = nil
				st, err = w.teams.CurrentFrom(ctx, ev.TeamID, l)
				return err
			}
			st, err = w.teams.Current(ctx, ev.TeamID, receivedAt)
			return err
		})
		if err != nil {
			return w.releaseFor(kw, waitVerdict(conf, 0, err))
		}
		tb = w.resolve(st.Settings)
		res = tb.res
	}
	kw.team, kw.res, kw.tb = st.Settings, res, tb
	if !kw.res.StoreVirtualKeys {
		conf.Provider = kw.res.Backend
		conf.Status, conf.Reason = events.StatusSkipped, "store_virtual_keys is false for this team"
		return w.releaseFor(kw, verdict{conf: conf})
	}
	if !kw.res.CanWrite() {
		conf.Provider = kw.res.Backend
		return w.releaseFor(kw, w.rejected(msg, md, conf, fmt.Sprintf("access_mode %s forbids writes", kw.res.AccessMode), false))
	}
	if !claimed && kw.entry == nil {
		// The team's last known settings did not write; its current ones
		// do (they just changed): claim the key now.
		if v, done := w.claim(ctx, md, kw, conf, true); done {
			return v
		}
	}
	conf.Provider = kw.res.Backend

	kw.guard = w.guard(kw.lane, kw.tb)
	releaseSlot, err := kw.guard.acquire(ctx, backendSlotWait)
	if err != nil {
		return w.releaseFor(kw, waitVerdict(conf, busyDelay(md.NumDelivered), fmt.Errorf("backend %s: %w", kw.res.Backend, err)))
	}
	if kw.act != nil && time.Until(kw.deadline) < w.callWindow() {
		// The writer lease (or, in claims mode, this worker's claims
		// request) ends before a call could: not the event's failure. It
		// waits for the holder (this process again, after a renewal, or
		// the next), or for the request's renewal.
		releaseSlot()
		return w.releaseFor(kw, waitVerdict(conf, busyDelay(md.NumDelivered), errors.New("the writer lease's deadline is too close for a provider call")))
	}
	v = w.apply(ctx, msg, md, kw, conf)
	releaseSlot()
	// ownTime is the part of this delivery that was keyrelay's own work
	// (claims, the ledger, waits for NATS in place) before its first
	// provider call: not provider-failing time.
	ownTime := time.Since(receivedAt)
	if !kw.callStart.IsZero() {
		ownTime = kw.callStart.Sub(receivedAt)
	}
	if receivedAt.IsZero() || ownTime < 0 {
		ownTime = 0
	}
	switch {
	case v.retry && errors.Is(v.err, errOwnDeadline):
		// Cut short (or not started) by keyrelay's own deadline: the
		// claim, the writer lease or the claims request ran out first.
		// Not the provider's failure: the event waits, its budget
		// untouched, for the renewal or the next holder.
		v = waitVerdict(conf, busyDelay(md.NumDelivered), v.err)
	case v.retry && errors.Is(v.err, errBreakerOpen):
		// No call was made: the backend's breaker is open. The event waits
		// (it is not one more failure of its own), unless the failures it
		// did have began longer ago than its budget allows.
		if b := w.failureRecord(md, kw.prior); b != nil && b.spent(ownTime) >= w.cfg.RetryFor {
			v.budget = b
		} else {
			v = waitVerdict(conf, w.breakerWait(kw.guard, md.NumDelivered), v.err)
		}
	case v.retry && errors.Is(v.err, providers.ErrOwnLimit):
		// No call was made: keyrelay's own rate limit (the quota this
		// backend shares with the cluster) held it back. Not a failure of
		// the event: it waits for its turn, its budget untouched.
		v = waitVerdict(conf, max(providers.RetryAfter(v.err), busyDelay(md.NumDelivered)), v.err)
	case v.retry && !errors.Is(v.err, context.Canceled):
		v.budget = w.noteFailureAfter(md, ev.ID, kw.prior, ownTime)
	}
	if v.conf == nil || v.retry || v.wait || v.dead != nil {
		v = w.releaseFor(kw, v)
	}
	return v
}

// breakerWait is how long an event (its nth delivery) that found its
// backend's breaker open waits: about one open period, so that it follows
// the breaker's probe. Once the breaker has not closed for ParkAfter (the
// backend is down, not hiccuping), the event is parked: it waits as a
// failing one would, growing with its deliveries up to retry_max, but at
// least ParkAfter and at least a quarter of the outage so far (up to
// parkMaxDelay), each up to half as much again at random. So the events
// of a backend that is down hold no slot of their lane consumer (every
// team's) while they wait, and the longer it stays down the less often
// they come back to find it so; after it recovers they are written within
// a quarter of the outage (at most parkMaxDelay and a half).
func (w *Worker) breakerWait(g *backendGuard, n uint64) time.Duration {
	p := w.cfg.ParkAfter
	var down time.Duration
	if g != nil {
		down = g.downFor()
	}
	if p <= 0 || down < p {
		return w.cfg.BreakerOpen/2 + time.Duration(rand.Int64N(int64(w.cfg.BreakerOpen)))
	}
	floor := max(p, min(down/4, parkMaxDelay))
	// Spread: the events parked together do not all come back in the
	// same second.
	return max(w.retry.redeliveryDelay(min(max(n, 1), 64), 0), floor+time.Duration(rand.Int64N(int64(floor/2)+1)))
}

// parkMaxDelay bounds the part of a parked event's delay that grows with
// its backend's outage (breakerWait).
const parkMaxDelay = 5 * time.Minute

// writes reports whether settings r let a key event write.
func writes(r settings.Resolved) bool { return r.StoreVirtualKeys && r.CanWrite() }

// releaseFor releases kw's claim (keeping v's failure record in the entry)
// before v ends the delivery. When the release fails, the delivery is
// handed back instead, its budget untouched: a message is acknowledged or
// terminated only once its claim is released or committed, so a claim
// whose message is at or below its consumer's ack floor never stands for
// a write that did not happen (outcomeOf). The redelivery owns the claim
// and ends the event again.
func (w *Worker) releaseFor(kw *keyWork, v verdict) verdict {
	err := w.release(kw, v.budget)
	if err == nil || v.wait {
		return v
	}
	w.log.Warn("claim not released; event handed back", zap.String("event_id", kw.ev.ID), zap.Error(err))
	return waitVerdict(v.conf, 0, fmt.Errorf("release the key's claim: %w", err))
}

// claim takes the key in the ledger for this event, or decides the event
// is a duplicate or superseded. done is true when v is final.
//
// The first attempt uses the cached entry (or assumes a new key); every
// decision taken from it is safe: generations only grow, so a stale entry
// can only make an event look newer than it is, and the compare-and-set
// then fails and the entry is read afresh.
//
// Waiting for another worker's claim happens in place only briefly; then
// the event is handed back until the claim is released or its lease runs
// out, so a dead worker's claims never hold this worker's slots.
//
// write false decides the same for an event that will not write (its team
// does not store keys, or may not write them) without taking the key:
// the decision is taken on a fresh read instead of a compare-and-set, and
// nothing is written, unless the key still holds this very message's
// claim from an earlier delivery, which is taken over so that it can be
// released.
func (w *Worker) claim(ctx context.Context, md *jetstream.MsgMetadata, kw *keyWork, conf *events.Confirmation, write bool) (v verdict, done bool) {
	lkey := LedgerKey(kw.ev.TeamID, kw.ev.KeyID)
	var e *LedgerEntry
	var rev uint64
	fresh := false
	// trusted: e may decide a claimless write (exclusive mode): read from
	// the bucket's leader, or cached within the lease generation.
	trusted := false
	if c, ok := w.entries.Get(lkey); ok {
		ce := c.entry
		e, rev = &ce, c.rev
		trusted = kw.claimless()
	}
	wait, waited := 10*time.Millisecond, time.Duration(0)
	// early: the intent's append, started with a leader read (exclusive).
	var early *earlyIntent
	// settled: e was read from the bucket's leader (write false), not
	// from the cache or a replica.
	settled := false
	// The message's stored time is the server's, from before now: a
	// claim of another process is read against it too (ledgerClock).
	clock := &w.ledger.clock
	clock.observe(md.Timestamp)
	get := func() (err error) {
		settled, trusted = false, false
		if kw.claimless() {
			// No compare-and-set precedes a claimless write to catch a
			// replica that lags: read the leader's entry.
			err = w.infraDo(ctx, func(ctx context.Context) error {
				e, rev, err = w.ledger.GetFromLeader(ctx, kw.ev.TeamID, kw.ev.KeyID)
				return err
			})
			settled, trusted = err == nil, err == nil
			return err
		}
		return w.infraDo(ctx, func(ctx context.Context) error {
			e, rev, err = w.ledger.Get(ctx, kw.ev.TeamID, kw.ev.KeyID)
			return err
		})
	}
retry:
	for {
		if err := ctx.Err(); err != nil {
			return waitVerdict(conf, 0, err), true
		}
		now := clock.now()
		if e != nil {
			if dup, ok := duplicateOf(e, kw.ev, kw.gen); ok {
				*conf = *dup
				conf.Duplicate = true
				return verdict{conf: conf}, true
			}
			if applied := appliedGeneration(e, kw.ev.Type); kw.gen <= applied {
				conf.Status = events.StatusSuperseded
				conf.Reason = fmt.Sprintf("generation %d is not newer than the applied generation %d", kw.gen, applied)
				return verdict{conf: conf}, true
			}
		}
		// The key's claim, and in exclusive mode the intent standing on it
		// (a claimless write in flight here, or one that did not end
		// cleanly, here or at an earlier holder): each is a claim.
		var entryClaim *Claim
		if e != nil {
			entryClaim = e.Claim
		}
		for _, c := range [...]*Claim{entryClaim, w.openIntent(lkey)} {
			// Whether c stands, and its bound, are read with clock: a
			// deadline another process wrote is not trusted to this
			// process's clock alone.
			live := clock.stands(c, now, 0)
			if c != nil && !live && c.EventID != kw.ev.ID && c.Generation >= kw.gen {
				// Another event of this generation or a newer one held the
				// key and its worker stopped before committing: it may have
				// written its value, and its redelivery (within AckWait of
				// the claim's end) will find out. This one waits for that
				// instead of writing: a copy under another id would write the
				// value again as a second version, and an older generation
				// would put an older value over the newer one, which the
				// redelivery then writes a second time (seen in the Vault
				// end-to-end run: one event, two versions). After the bound
				// it goes ahead: the newer event may never have written.
				//
				// The stream may already know how that event ended; then
				// there is nothing to wait for (a commit or a release that
				// failed while NATS was in trouble leaves such a claim).
				// (Not live: the server's time is known.)
				if toBound, _ := clock.left(c, now, w.cfg.AckWait+w.cfg.ClaimLease); toBound > 0 {
					out, prev, err := w.outcomeOf(ctx, c, kw.ev.TeamID, kw.ev.KeyID)
					switch {
					case out == outcomeWritten && (prev.EventType != events.KeyUpdated || kw.ev.Type == events.KeyUpdated):
						// Its write is in the backend and its redelivery
						// commits it: this event is not newer than it. (A
						// key.updated sets only the description, so it does
						// not supersede an older value event.)
						w.m.DeadClaims.WithLabelValues("written").Inc()
						conf.Status = events.StatusSuperseded
						conf.Reason = fmt.Sprintf("generation %d is not newer than generation %d, written by event %s (confirmed %s; its ledger commit is pending)",
							kw.gen, c.Generation, c.EventID, prev.Status)
						return verdict{conf: conf}, true
					case out == outcomeOver:
						// Finished without a write, or acknowledged or
						// terminated: no delivery of it will come back.
						// Go ahead, as after the bound.
						w.m.DeadClaims.WithLabelValues("over").Inc()
					default:
						if err != nil {
							w.log.Debug("outcome of a dead claim's event not known", zap.String("event_id", c.EventID), zap.Error(err))
						}
						w.m.DeadClaims.WithLabelValues("waited").Inc()
						return waitVerdict(conf, min(toBound, 5*time.Second), fmt.Errorf("generation %d was being written by event %s, whose worker stopped; waiting for its redelivery",
							c.Generation, c.EventID)), true
					}
				}
			}
			if live && !ownClaim(c, kw.ev.ID, failKeyOf(md), kw.copy) {
				if fresh {
					// Only a first delivery waits in place (a live writer
					// usually releases within milliseconds); a redelivered
					// one found the key busy before.
					if waited >= claimWaitInPlace || md.NumDelivered > 1 {
						// Another worker holds the key, perhaps a dead one:
						// come back when its claim is due to end, sooner
						// if it is alive and releases it.
						d := busyDelay(md.NumDelivered)
						if left, known := clock.left(c, now, 0); known {
							d = min(d, left+10*time.Millisecond)
						}
						return waitVerdict(conf, max(d, 10*time.Millisecond), fmt.Errorf("key claimed by worker %s until %s",
							c.Worker, c.Until.Format(time.RFC3339Nano))), true
					}
					_ = ctxtime.Sleep(ctx, wait) // an ended ctx fails the next read
					waited += wait
					wait = min(wait*2, 50*time.Millisecond)
				}
				if err := get(); err != nil {
					return waitVerdict(conf, 0, err), true
				}
				fresh = true
				continue retry
			}
		}
		if !write && (e == nil || e.Claim == nil || !ownClaim(e.Claim, kw.ev.ID, failKeyOf(md), kw.copy)) {
			if !settled {
				// A cached entry, or a replica's, can make the event
				// look newer than it is; without a compare-and-set to
				// catch that, decide on the leader's.
				err := w.infraDo(ctx, func(ctx context.Context) (err error) {
					e, rev, err = w.ledger.GetFromLeader(ctx, kw.ev.TeamID, kw.ev.KeyID)
					return err
				})
				if err != nil {
					return waitVerdict(conf, 0, err), true
				}
				fresh, settled = true, true
				continue
			}
			return verdict{}, false
		}
		next := LedgerEntry{}
		if e != nil {
			next = *e
		}
		if a := kw.act; a != nil && a.claimless {
			// Taken: this process's clock, against which its lease's
			// deadline runs (ledgerClock). The intent stored early keeps
			// its own, earlier, reading: the same intent, not a second
			// append (its lease only reads longer, never shorter).
			c := Claim{EventID: kw.ev.ID, StreamSeq: md.Sequence.Stream, Lane: laneOfStream(md.Stream), Copy: kw.copy, Generation: kw.gen, Worker: w.cfg.ID, Until: a.deadline, Taken: now}
			if early != nil {
				c.Taken = early.claim.Taken
			}
			if !trusted {
				// A cache miss (or an entry cached before this lease
				// generation): decide on the leader's entry, storing the
				// intent meanwhile.
				if early == nil {
					early = w.appendEarly(ctx, lkey, c)
				}
				if err := get(); err != nil {
					return waitVerdict(conf, 0, err), true
				}
				fresh = true
				continue
			}
			// The lease excludes every other writer; the intent, stored
			// before the provider call, is what a claim would record for
			// whoever takes over after a crash.
			next.Claim = nil
			if err := w.intend(ctx, lkey, c, early); err != nil {
				return waitVerdict(conf, 0, fmt.Errorf("store the write's intent: %w", err)), true
			}
			kw.entry, kw.rev = &next, rev
			kw.prior = next.Retry
			kw.deadline = a.deadline
			return verdict{}, false
		}
		until := now.Add(w.cfg.ClaimLease)
		if a := kw.act; a != nil && a.deadline.Before(until) {
			// Exclusive, claiming while a claims request stands: the
			// claim ends with the lease. Claims mode: with this worker's
			// claims request.
			until = a.deadline
		}
		// Taken: the clock until was counted on, so that readers whose
		// clocks differ still give the claim its lease (ledgerClock).
		next.Claim = &Claim{EventID: kw.ev.ID, StreamSeq: md.Sequence.Stream, Lane: laneOfStream(md.Stream), Copy: kw.copy, Generation: kw.gen, Worker: w.cfg.ID, Until: until, Taken: now}
		var nrev uint64
		var err error
		if skipClaimWrite {
			// keyrelay_ceiling builds only (ceiling_unsafe.go).
			if appendIntents {
				err = ceilingIntent(ctx, w, intentOf(lkey, *next.Claim))
			}
			nrev = rev
		} else {
			err = w.infraDoBounded(ctx, func(ctx context.Context) (err error) {
				nrev, err = w.ledger.Put(ctx, kw.ev.TeamID, kw.ev.KeyID, &next, rev)
				return err
			})
		}
		if errors.Is(err, ErrLedgerConflict) {
			w.entries.Remove(lkey)
			if err := get(); err != nil {
				return waitVerdict(conf, 0, err), true
			}
			fresh = true
			continue
		}
		if err != nil {
			w.entries.Remove(lkey)
			return waitVerdict(conf, 0, err), true
		}
		if e != nil && e.Claim != nil && !clock.stands(e.Claim, now, 0) {
			w.m.ClaimExpiries.Inc() // an expired claim taken over
		}
		kw.entry, kw.rev = &next, nrev
		kw.prior = next.Retry
		w.cacheAdd(kw.act, lkey, cachedEntry{entry: next, rev: nrev})
		// Stop writing well before the lease ends, so no other worker can
		// take the key over while this one still writes.
		kw.deadline = until.Add(-w.cfg.ClaimLease / 10)
		if a := kw.act; a != nil && a.deadline.Before(kw.deadline) {
			kw.deadline = a.deadline
		}
		return verdict{}, false
	}
}

// ownClaim reports whether c was taken for this very stream message (a
// redelivery after a crash continues its own claim), and the same copy
// of it (copy: 0 for the message itself, else its parked copy's
// sequence). A copy of the same event published again is another
// message, and a parked copy of a message that is also being redelivered
// (a crash between its park and its ack) another copy: it waits for the
// claim, so two copies never write at once (the second finds the first
// applied). Claims written before StreamSeq existed match by event id.
func ownClaim(c *Claim, eventID string, msg failKey, copy uint64) bool {
	return c.EventID == eventID && (c.StreamSeq == 0 || c.StreamSeq == msg.seq && c.Lane == msg.lane && c.Copy == copy)
}

// appliedGeneration is the generation an event of type t must exceed to be
// applied. A key's state has two parts, each taking the newest generation
// that set it: its value (set by key.created, key.rotated and key.deleted)
// and its description (alias and metadata, set by every key event with
// what it carries). A value event is applied when it is newer than the
// value, and then sets the description only if it is newer than that too;
// a key.updated is applied when it is newer than the description, which is
// at least as new as the value.
func appliedGeneration(e *LedgerEntry, t events.Type) uint64 {
	if t == events.KeyUpdated {
		return max(e.Generation, e.MetaGeneration)
	}
	return e.Generation
}

// duplicateOf reports whether ev is the event the ledger already applied,
// and rebuilds its confirmation.
func duplicateOf(e *LedgerEntry, ev *events.Event, gen uint64) (*events.Confirmation, bool) {
	c := confFor(ev, gen)
	switch {
	case e.EventID == ev.ID && e.Generation == gen:
		c.Status, c.Provider, c.SecretRef, c.ProviderVersion = e.Status, e.Provider, e.SecretRef, e.ProviderVersion
	case e.MetaEventID == ev.ID && e.MetaGeneration == gen:
		c.Status, c.Provider, c.SecretRef, c.ProviderVersion = events.StatusStored, e.Provider, e.SecretRef, e.ProviderVersion
	default:
		return nil, false
	}
	return c, true
}

// release drops this event's claim so the next event for the key need not
// wait for the lease to run out. It retries while NATS is unavailable
// (infraDo); a claim someone else has taken over since (the entry
// changed) is no longer this event's to release.
//
// failure, when set, is the event's provider-failure record: it is kept in
// the entry so the next delivery, on any worker, continues the budget.
//
// A claimless action (exclusive mode) has no claim to drop: only a failure
// record is written, and the intent is dropped once nothing of the action
// can still land. A failure record that cannot be written leaves the
// intent standing, as a claim that cannot be released stands.
func (w *Worker) release(kw *keyWork, failure *RetryRecord) error {
	claimless := kw.claimless()
	if kw.entry == nil || (claimless && failure == nil) || (!claimless && kw.rev == 0) {
		if claimless {
			kw.entry = nil
			w.endWork(kw, true)
		}
		return nil
	}
	next := *kw.entry
	next.Claim = nil
	if failure != nil {
		next.Retry = failure
	}
	lkey := LedgerKey(kw.ev.TeamID, kw.ev.KeyID)
	// Not the handler's context: a handler interrupted at shutdown still
	// releases what it holds, for a bounded time.
	ctx, cancel := context.WithTimeout(context.Background(), releaseWait)
	defer cancel()
	var nrev uint64
	written := &next
	err := w.infraDoBounded(ctx, func(ctx context.Context) (err error) {
		if h := releaseHook.Load(); h != nil {
			if err := (*h)(); err != nil {
				return err
			}
		}
		// Over a keyring rewrap that re-sealed the entry meanwhile
		// (PutOver): the claim is released all the same.
		written, nrev, err = w.ledger.PutOver(ctx, kw.ev.TeamID, kw.ev.KeyID, kw.entry, &next, kw.rev)
		return err
	})
	if err != nil {
		w.entries.Remove(lkey)
		if !errors.Is(err, ErrLedgerConflict) {
			return err
		}
		// Taken over, or (claimless) changed meanwhile by a commit of a
		// lost reply: nothing left to release.
	} else {
		w.cacheAdd(kw.act, lkey, cachedEntry{entry: *written, rev: nrev})
	}
	kw.entry = nil
	if claimless {
		w.endWork(kw, true)
	}
	return nil
}

// releaseWait bounds a release, retries included.
const releaseWait = 10 * time.Second

// releaseHook, when set (tests), runs before each release attempt and
// fails it with its error.
var releaseHook atomic.Pointer[func() error]

// commitHook, when set (tests), runs before each ledger commit attempt of
// the event it is given and fails it with its error.
var commitHook atomic.Pointer[func(eventID string) error]

// call runs one provider operation (op names it in traces) with
// in-process retries, bounded by the claim deadline. Each try is a span.
//
// A try's limit is the earlier of call_timeout and kw's deadline (the
// claim, the writer lease or the claims request: keyrelay's own). A try
// that deadline did not let start, or ended when it left the try less
// than half its call_timeout, fails with errOwnDeadline (a wait, not the
// provider's failure). One that call_timeout ended, or that had at least
// half of it, is the provider's: a backend that cannot answer in that
// long is failing (so that under the writer lease, whose window is 0.65
// lease_ttl, 9.75 s by default, below call_timeout's 15 s, a backend that
// hangs still spends the budget and opens its breaker). A retry within
// the delivery starts only with at least half its call_timeout ahead:
// cut short by the deadline, it would turn the provider failure already
// seen into a wait.
func (w *Worker) call(ctx context.Context, kw *keyWork, op string, fn func(context.Context) error) error {
	if kw.callStart.IsZero() {
		kw.callStart = time.Now()
	}
	try := 0
	var last error
	err := w.retry.do(ctx, kw.deadline, func(ctx context.Context) (err error) {
		try++
		d := time.Until(kw.deadline)
		// short: our deadline, not call_timeout, would end a slow try.
		short := d < w.cfg.CallTimeout/2
		if short && last != nil {
			return lastTry{last}
		}
		ctx, span := w.startCallSpan(ctx, kw, op, try)
		defer func() {
			endCallSpan(span, err)
			last = err
		}()
		if d <= 0 {
			return ownDeadline(kw)
		}
		cctx, cancel := context.WithTimeout(ctx, min(d, w.cfg.CallTimeout))
		defer cancel()
		if kw.lane != nil && kw.lane.name == events.LaneBulk {
			// A bulk job takes only the quota the gateway's events leave.
			cctx = providers.WithPriority(cctx, providers.PriorityBulk)
		}
		// Judged inside the breaker, so that it does not count a call our
		// own deadline ended (IsExcluded).
		run := func() error {
			err := fn(cctx)
			if err != nil && short && ctx.Err() == nil && errors.Is(cctx.Err(), context.DeadlineExceeded) {
				return ownDeadline(kw)
			}
			return err
		}
		if kw.guard == nil {
			return run()
		}
		return kw.guard.call(run)
	}, func(err error, wait time.Duration) {
		w.m.Retries.WithLabelValues("in_process").Inc()
		w.log.Debug("provider call failed; retrying", zap.String("event_id", kw.ev.ID), zap.Duration("wait", wait), zap.String("reason", sanitize(err)))
	})
	if lt, ok := err.(lastTry); ok {
		return lt.err
	}
	return err
}

// ownDeadline is the error of a try kw's own deadline ended. Retryable,
// so that every caller hands the event back; handleKey makes it a wait.
func ownDeadline(kw *keyWork) error {
	return providers.NewError(kw.res.Backend, "call", "", providers.Retryable, errOwnDeadline)
}

// lastTry carries the previous try's error out of retryPolicy.do without
// another try. It does not unwrap: do sees an error it does not retry.
type lastTry struct{ err error }

func (e lastTry) Error() string { return e.err.Error() }

// apply performs the write for a claimed key and commits the ledger, in
// the function of the event's type. Each starts from the claimed entry
// without its claim and failure record, a previous version past its grace
// dropped.
func (w *Worker) apply(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, kw *keyWork, conf *events.Confirmation) verdict {
	p, err := w.openProvider(ctx, kw.tb)
	if err != nil {
		return w.providerFailed(msg, md, conf, err)
	}
	next := *kw.entry
	next.Claim, next.Retry = nil, nil
	next.UpdatedAt = time.Now().UTC()
	if !next.Previous.InGrace(next.UpdatedAt) {
		next.Previous = nil
	}
	switch kw.ev.Type {
	case events.KeyCreated, events.KeyRotated:
		return w.applyWrite(ctx, msg, md, kw, conf, p, next)
	case events.KeyUpdated:
		return w.applyUpdate(ctx, msg, md, kw, conf, p, next)
	case events.KeyDeleted:
		return w.applyDelete(ctx, msg, md, kw, conf, p, next)
	}
	conf.Provider = kw.res.Backend
	return w.commitVerdict(kw, next, conf)
}

// applyWrite writes the value of a key.created or key.rotated event,
// removes the secret's old name when alias naming moved it, and schedules
// the retirement of the version it replaces.
func (w *Worker) applyWrite(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, kw *keyWork, conf *events.Confirmation, p providers.Provider, next LedgerEntry) verdict {
	ev, e := kw.ev, kw.entry
	owner := providers.Owner{TeamID: ev.TeamID, KeyID: ev.KeyID}
	alias, metadata := ev.KeyAlias, kw.keyData.Metadata
	if e.MetaGeneration >= kw.gen {
		// A key.updated at least as new already set the description
		// (alias and metadata): keep it.
		alias, metadata = e.Alias, e.Metadata
	}
	name, err := kw.res.SecretName(ev.TeamID, ev.KeyID, alias)
	if err != nil {
		return w.rejected(msg, md, conf, "secret name: "+sanitize(err), false)
	}
	// here: the secret the ledger records is on this backend with the
	// team options this write uses (a team that changed its Vault
	// namespace or mount writes elsewhere, as one that changed backend).
	here := e.Provider == kw.res.Backend && samePlace(e.Placement, kw.place())
	// The version the ledger last wrote to this very secret (same
	// place, same name, not deleted since): a check-and-set hint.
	expected, replaces := "", ""
	if here && e.SecretRef == name && e.Status != events.StatusDeleted {
		expected, replaces = e.ProviderVersion, e.EventID
	}
	var res providers.PutResult
	err = w.call(ctx, kw, "put", func(ctx context.Context) error {
		var err error
		res, err = p.Put(ctx, providers.PutRequest{Name: name, Value: kw.value, IdempotencyKey: ev.ID, Owner: owner,
			Description: kw.res.Description, Tags: SecretTags(kw.res.Tags, metadata, alias), Adopt: w.cfg.AdoptUnowned,
			ExpectedVersion: expected, Replaces: replaces})
		return err
	})
	if v, bad := w.writeFailed(msg, md, conf, err); bad {
		return v
	}
	status := events.StatusStored
	if ev.Type == events.KeyRotated {
		status = events.StatusRotated
	}
	moved := e.Provider != "" && !here && e.Status != events.StatusDeleted
	if !moved && e.SecretRef != "" && e.SecretRef != name && e.Status != events.StatusDeleted {
		// The name moved (alias naming and a newer alias): remove the old one.
		w.deleteOld(ctx, kw, p, e.SecretRef, owner)
	}
	next.Generation, next.EventID, next.EventType, next.Status = kw.gen, ev.ID, ev.Type, status
	next.StreamSeq, next.Provider, next.SecretRef, next.ProviderVersion = md.Sequence.Stream, kw.res.Backend, name, res.Version
	next.Placement = kw.place()
	if moved {
		// The team moved to another backend (or other team options on
		// it): the copy left where it was is deleted after the
		// migration's grace period.
		next.AddSourceAt(e.Provider, e.SecretRef, e.Placement, next.UpdatedAt)
	}
	next.dropCurrentSource()
	next.Sealed, next.SealedGen = kw.keyData.Value, ev.Generation
	next.Alias, next.Metadata = alias, metadata
	var retire *Retirement
	next.Previous, retire = w.retirement(kw, e, name, res.Version, res.Stamp, next.UpdatedAt)
	if kw.gen > e.MetaGeneration {
		// This event set the description too.
		next.MetaGeneration, next.MetaEventID = kw.gen, ev.ID
	}
	conf.Status, conf.SecretRef, conf.ProviderVersion = status, name, res.Version
	conf.Provider = kw.res.Backend
	v := w.commitVerdict(kw, next, conf)
	if retire != nil {
		// Scheduled before the ledger commit: a redelivery after a failed
		// commit schedules it again under the same message id.
		commit := v.commit
		v.commit = func(ctx context.Context) error {
			if err := w.scheduleRetirement(ctx, retire); err != nil {
				return err
			}
			return commit(ctx)
		}
	}
	return v
}

// applyUpdate sets the description (alias and metadata) of a key.updated
// event: the secret's tags, or, when alias naming gives it a new name or
// the team moved to another backend, the stored value written again under
// the new name or backend.
func (w *Worker) applyUpdate(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, kw *keyWork, conf *events.Confirmation, p providers.Provider, next LedgerEntry) verdict {
	ev, e := kw.ev, kw.entry
	owner := providers.Owner{TeamID: ev.TeamID, KeyID: ev.KeyID}
	alias, metadata := ev.KeyAlias, kw.upd.Metadata
	if metadata == nil {
		metadata = e.Metadata
	}
	next.MetaGeneration, next.MetaEventID, next.Alias, next.Metadata = kw.gen, ev.ID, alias, metadata
	conf.Status = events.StatusStored
	if e.Sealed != nil && e.Status != events.StatusDeleted && e.SecretRef != "" {
		name, err := kw.res.SecretName(ev.TeamID, ev.KeyID, alias)
		if err != nil {
			return w.rejected(msg, md, conf, "secret name: "+sanitize(err), false)
		}
		// moved: the team's backend (or its team options on it)
		// changed since the value was written; the update writes it to
		// the new place.
		moved := e.Provider != "" && (e.Provider != kw.res.Backend || !samePlace(e.Placement, kw.place()))
		if name != e.SecretRef || moved {
			// Alias naming: move the secret to its new name.
			value, err := w.d.Opener.Open(ctx, e.Sealed, events.Binding{TeamID: ev.TeamID, KeyID: ev.KeyID, Generation: e.SealedGen})
			if err != nil {
				if providers.IsRetryable(err) || openCanceled(ctx, err) {
					return verdict{retry: true, err: fmt.Errorf("open stored value: %w", err), retryHint: providers.RetryAfter(err), conf: conf}
				}
				return w.failed(msg, md, conf, "cannot open the stored sealed value to move it: "+sanitize(err))
			}
			var res providers.PutResult
			err = w.call(ctx, kw, "put", func(ctx context.Context) error {
				var err error
				res, err = p.Put(ctx, providers.PutRequest{Name: name, Value: value, IdempotencyKey: ev.ID, Owner: owner,
					Description: kw.res.Description, Tags: SecretTags(kw.res.Tags, metadata, alias), Adopt: w.cfg.AdoptUnowned})
				return err
			})
			clear(value)
			if v, bad := w.writeFailed(msg, md, conf, err); bad {
				return v
			}
			next.Provider, next.SecretRef, next.ProviderVersion, next.Placement = kw.res.Backend, name, res.Version, kw.place()
			if moved {
				next.AddSourceAt(e.Provider, e.SecretRef, e.Placement, next.UpdatedAt)
			} else {
				w.deleteOld(ctx, kw, p, e.SecretRef, owner)
			}
			next.dropCurrentSource()
			next.Previous = nil // it was under the old name, now deleted
		} else if tu, ok := p.(providers.TagUpdater); ok {
			err := w.call(ctx, kw, "update_tags", func(ctx context.Context) error {
				return tu.UpdateTags(ctx, providers.TagRequest{Name: name, Owner: owner, Description: kw.res.Description,
					Tags: SecretTags(kw.res.Tags, metadata, alias), Adopt: w.cfg.AdoptUnowned})
			})
			if v, bad := w.writeFailed(msg, md, conf, err); bad {
				return v
			}
		}
		conf.SecretRef, conf.ProviderVersion = next.SecretRef, next.ProviderVersion
	}
	conf.Provider = kw.res.Backend
	return w.commitVerdict(kw, next, conf)
}

// applyDelete deletes the secret of a key.deleted event where it was
// written: on the backend and with the team options the ledger recorded,
// when the team moved to another backend or changed them since. Deleting
// where the team's options point now would find nothing there and confirm
// "deleted" for a secret still stored.
func (w *Worker) applyDelete(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, kw *keyWork, conf *events.Confirmation, p providers.Provider, next LedgerEntry) verdict {
	ev, e := kw.ev, kw.entry
	owner := providers.Owner{TeamID: ev.TeamID, KeyID: ev.KeyID}
	name := e.SecretRef
	if name == "" {
		var err error
		if name, err = kw.res.SecretName(ev.TeamID, ev.KeyID, ev.KeyAlias); err != nil {
			return w.rejected(msg, md, conf, "secret name: "+sanitize(err), false)
		}
	}
	backend, place := kw.res.Backend, kw.place()
	if e.Provider != "" && e.Status != events.StatusDeleted && (e.Provider != backend || !samePlace(e.Placement, place)) {
		// The team moved to another backend, or changed its options on
		// it, since the secret was written: delete it where it is.
		oldTB := w.resolvePlaced(kw.team, e.Provider, e.Placement)
		old, err := w.openProvider(ctx, oldTB)
		if err != nil {
			return w.providerFailed(msg, md, conf, err)
		}
		p, kw.guard = old, w.guard(kw.lane, oldTB)
		backend, place = e.Provider, e.Placement
	}
	err := w.call(ctx, kw, "delete", func(ctx context.Context) error {
		err := p.Delete(ctx, providers.DeleteRequest{Name: name, Owner: owner, Adopt: w.cfg.AdoptUnowned})
		if errors.Is(err, providers.ErrNotFound) {
			return nil
		}
		return err
	})
	if v, bad := w.writeFailed(msg, md, conf, err); bad {
		return v
	}
	next.Generation, next.EventID, next.EventType, next.Status = kw.gen, ev.ID, ev.Type, events.StatusDeleted
	next.StreamSeq, next.Provider, next.SecretRef, next.ProviderVersion = md.Sequence.Stream, backend, name, ""
	next.Placement = place
	next.Sealed, next.SealedGen, next.Previous = nil, 0, nil
	next.dropCurrentSource()
	if kw.gen > e.MetaGeneration {
		// A deletion sets the description too (what it carries).
		next.MetaGeneration, next.MetaEventID, next.Alias, next.Metadata = kw.gen, ev.ID, ev.KeyAlias, nil
	}
	conf.Status, conf.SecretRef, conf.Provider = events.StatusDeleted, name, backend
	return w.commitVerdict(kw, next, conf)
}

// commitVerdict confirms the write and commits next to the ledger.
func (w *Worker) commitVerdict(kw *keyWork, next LedgerEntry, conf *events.Confirmation) verdict {
	ev := kw.ev

	lkey, rev, base := LedgerKey(ev.TeamID, ev.KeyID), kw.rev, kw.entry
	kw.entry = nil // the commit replaces the claim: nothing to release
	// The commit, not the handler, ends an action under the lease: until
	// it lands, the intent stands for the key.
	a, gen := kw.act, kw.gen
	kw.act = nil
	return verdict{conf: conf, commit: func(ctx context.Context) (err error) {
		defer func() { w.endAction(a, lkey, ev.ID, gen, err == nil) }()
		if skipCommitWrite {
			// keyrelay_ceiling builds only (ceiling_unsafe.go).
			w.entries.Add(lkey, cachedEntry{entry: next, rev: rev})
			return nil
		}
		if h := commitHook.Load(); h != nil {
			if err := (*h)(ev.ID); err != nil {
				return err
			}
		}
		// Over a keyring rewrap that re-sealed the entry meanwhile
		// (PutOver), not handed back for it.
		written, nrev, err := w.ledger.PutOver(ctx, ev.TeamID, ev.KeyID, base, &next, rev)
		if errors.Is(err, ErrLedgerConflict) {
			// An earlier attempt of this commit may have landed with its
			// reply lost: the redelivery sees it as a duplicate.
			w.entries.Remove(lkey)
			return fmt.Errorf("ledger commit: %w", err)
		}
		if err != nil {
			// The write is done and idempotent: a redelivery repeats it as
			// a duplicate and commits then.
			w.entries.Remove(lkey)
			return fmt.Errorf("ledger commit: %w", err)
		}
		w.cacheAdd(a, lkey, cachedEntry{entry: *written, rev: nrev})
		return nil
	}}
}

// providerFailed handles a provider that could not be opened: retried
// when the cause is transient (a backend not reachable yet), dead-lettered
// when it is configuration.
func (w *Worker) providerFailed(msg jetstream.Msg, md *jetstream.MsgMetadata, conf *events.Confirmation, err error) verdict {
	if providers.IsRetryable(err) {
		return verdict{retry: true, err: fmt.Errorf("provider: %w", err), retryHint: providers.RetryAfter(err), conf: conf}
	}
	return w.failed(msg, md, conf, "provider: "+sanitize(err))
}

// openCanceled reports whether opening a value failed because ctx (the
// worker's, at shutdown) was cancelled: the KMS wrappers say so with a
// retryable error holding context.Canceled, which IsRetryable does not
// count as retryable. Such an event is handed back, never rejected.
func openCanceled(ctx context.Context, err error) bool {
	return ctx.Err() != nil && errors.Is(err, context.Canceled)
}

// writeFailed turns a provider error into a verdict: retry for retryable
// errors, DLQ for permanent ones.
func (w *Worker) writeFailed(msg jetstream.Msg, md *jetstream.MsgMetadata, conf *events.Confirmation, err error) (verdict, bool) {
	if err == nil {
		return verdict{}, false
	}
	if providers.IsRetryable(err) || errors.Is(err, context.Canceled) {
		return verdict{retry: true, err: err, retryHint: providers.RetryAfter(err), conf: conf}, true
	}
	return w.failed(msg, md, conf, sanitize(err)), true
}

func (w *Worker) deleteOld(ctx context.Context, kw *keyWork, p providers.Provider, name string, owner providers.Owner) {
	err := w.call(ctx, kw, "delete", func(ctx context.Context) error {
		err := p.Delete(ctx, providers.DeleteRequest{Name: name, Owner: owner, Adopt: w.cfg.AdoptUnowned})
		if errors.Is(err, providers.ErrNotFound) {
			return nil
		}
		return err
	})
	if err != nil {
		w.log.Warn("old secret name not removed after a rename", zap.String("secret_ref", name), zap.String("reason", sanitize(err)))
	}
}

// SecretTags merges team tags, event metadata and the alias into the
// non-ownership tags a secret is written with.
func SecretTags(team, metadata map[string]string, alias string) map[string]string {
	t := make(map[string]string, len(team)+len(metadata)+1)
	for k, v := range team {
		t[k] = v
	}
	for k, v := range metadata {
		t[k] = v
	}
	if alias != "" {
		t["keyrelay-alias"] = alias
	}
	return t
}
