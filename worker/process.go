package worker

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/gopool"
)

// sidework runs the work an event starts beside its handler (the ledger
// commit, concurrent with the confirmation) on reused goroutines: a fresh
// goroutine grew its stack on the way down to the ledger write for every
// event.
var sidework = gopool.New(0)

// verdict is what a handler decided for one delivery.
type verdict struct {
	// conf is published before the message is acked or terminated.
	conf *events.Confirmation
	// dead, when set, sends the message to the DLQ and terminates it.
	dead *deadLetterIn
	// retry hands the message back with NakWithDelay after a provider
	// failure: it spends the event's retry budget (worker.retry_for).
	retry bool
	// wait hands the message back after retryHint without spending the
	// budget: the failure was not the event's (NATS or the ledger
	// unavailable, the key claimed by another worker, the backend's slots
	// busy).
	wait      bool
	retryHint time.Duration
	err       error
	// budget is the event's provider-failure record (retry only).
	budget *RetryRecord
	// sealed: this delivery opened the event's value as a sealed envelope
	// (not plaintext), so a DLQ copy of it may keep its original bytes.
	sealed bool
	// park: a hand-back of ParkAfter or longer is parked (key events;
	// set by process).
	park bool
	// commit, when set, records the write in the ledger. It runs
	// concurrently with the confirmation's publication; the message is
	// acked only when both succeeded. A confirmation published before a
	// failed commit is still true (the provider holds the value), and the
	// redelivery finds the write done (same idempotency key) and commits.
	commit func(context.Context) error
}

// waitVerdict hands an event back after d without spending its budget.
func waitVerdict(conf *events.Confirmation, d time.Duration, err error) verdict {
	return verdict{wait: true, retryHint: d, err: err, conf: conf}
}

// process handles one delivery end to end. It never panics and always
// acks, naks or terminates the message.
func (w *Worker) process(ctx context.Context, ln *lane, msg jetstream.Msg, receivedAt time.Time) {
	start := time.Now()
	w.m.InFlight.Inc()
	defer w.m.InFlight.Dec()
	defer w.handled.Add(1)

	md, err := msg.Metadata()
	if err != nil {
		w.log.Error("message without JetStream metadata; terminating", zap.Error(err))
		_ = msg.Term()
		return
	}
	stopBeat := w.heartbeat(msg)
	ctx, span := w.startEventSpan(ctx, ln, msg, md)
	v, typ := w.safeHandle(ctx, ln, msg, md, receivedAt)
	// Team settings events are applied in stream order per team: they
	// wait in their consumer, never parked (their waits are short: NATS
	// trouble).
	v.park = typ.IsKey()
	// The heartbeat covers finish too: its commit, confirmation and dead
	// letter each wait out NATS trouble for up to infra_wait, longer than
	// ack_wait, and the server must not deliver the event again
	// meanwhile. A beat racing the ack is refused by the client
	// (ErrMsgAlreadyAckd) or ignored by the server.
	outcome := w.finish(ctx, msg, md, v)
	stopBeat()
	endEventSpan(span, typ, v.conf, outcome)
	w.m.eventHandled(typeLabel(typ), outcome, time.Since(start))
}

func typeLabel(t events.Type) string {
	if t.Known() {
		return string(t)
	}
	return "invalid"
}

// heartbeat registers msg with the worker's heartbeat loop, which tells
// the server every AckWait/3 that it is still being worked on, until the
// returned function is called.
func (w *Worker) heartbeat(msg jetstream.Msg) func() {
	w.inflightMu.Lock()
	w.inflight[msg] = struct{}{}
	w.inflightMu.Unlock()
	return func() {
		w.inflightMu.Lock()
		delete(w.inflight, msg)
		w.inflightMu.Unlock()
	}
}

// heartbeats runs until ctx ends: one ticker for every in-flight message.
func (w *Worker) heartbeats(ctx context.Context) {
	t := time.NewTicker(w.cfg.AckWait / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// Sent outside the lock: InProgress writes to the connection.
			w.inflightMu.Lock()
			msgs := make([]jetstream.Msg, 0, len(w.inflight))
			for m := range w.inflight {
				msgs = append(msgs, m)
			}
			w.inflightMu.Unlock()
			for _, m := range msgs {
				_ = m.InProgress()
			}
		}
	}
}

func (w *Worker) safeHandle(ctx context.Context, ln *lane, msg jetstream.Msg, md *jetstream.MsgMetadata, receivedAt time.Time) (v verdict, typ events.Type) {
	defer func() {
		if r := recover(); r != nil {
			// A panic's value could quote data; log only that it happened.
			w.log.Error("handler panic; event will be redelivered", zap.Uint64("stream_seq", md.Sequence.Stream),
				zap.String("stack", string(debug.Stack())))
			v = verdict{retry: true, err: errors.New("handler panic")}
		}
	}()
	return w.handle(ctx, ln, msg, md, receivedAt)
}

// finish publishes the confirmation (and dead letter), then acks, naks or
// terminates. It returns the outcome label for metrics.
func (w *Worker) finish(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, v verdict) string {
	// Not ended by a shutdown: an outcome reached is recorded. Bounded
	// without a deadline of its own: each NATS step retries for at most
	// infra_wait, each attempt for at most infraAttemptTimeout.
	pubCtx := context.WithoutCancel(ctx)
	// Whether this delivery proved the value sealed (keepsOriginal), kept
	// across the verdicts finish builds below.
	sealed := v.sealed
	if !v.retry && !v.wait && v.dead == nil && v.conf == nil {
		_ = msg.Nak()
		return "nak"
	}
	n := md.NumDelivered
	if v.retry && v.dead == nil && !errors.Is(v.err, context.Canceled) {
		if v.budget == nil {
			v.budget = w.noteFailure(md, "", nil)
		}
		if f := v.budget.Failures; f >= w.cfg.MaxDeliver {
			// The safety net against failure loops that outrun the time
			// budget. It counts failed deliveries, not deliveries: waits
			// (NATS, claims, busy backends) never count, however many
			// there were before (they always end, and the consumer itself
			// never stops redelivering).
			v = w.failed(msg, md, v.conf, fmt.Sprintf("failed %d deliveries without an outcome (worker.max_deliver): %s", f, sanitize(v.err)))
		}
	}
	if v.wait && v.dead == nil {
		delay := v.retryHint
		if delay <= 0 {
			delay = w.retry.redeliveryDelay(n, 0)
		}
		if errors.Is(v.err, context.Canceled) {
			delay = 0
		}
		w.creditWait(md, v.err, delay)
		w.m.Retries.WithLabelValues("wait").Inc()
		w.log.Debug("event handed back without spending its retry budget", zap.Uint64("stream_seq", md.Sequence.Stream),
			zap.Uint64("delivery", n), zap.Duration("delay", delay), zap.String("reason", sanitize(v.err)))
		w.handBack(pubCtx, msg, md, delay, v.park, sealed)
		return "wait"
	}
	if v.retry && v.dead == nil {
		if errors.Is(v.err, context.Canceled) {
			// Shutting down: hand it straight back, nothing was spent.
			_ = msg.NakWithDelay(0)
			return "nak"
		}
		b := v.budget
		if spent := b.spent(0); spent >= w.cfg.RetryFor {
			v = w.failed(msg, md, v.conf, fmt.Sprintf("provider failing for %s over %d failed deliveries (worker.retry_for %s): %s",
				spent.Round(time.Second), b.Failures, w.cfg.RetryFor, sanitize(v.err)))
		} else {
			delay := w.retry.redeliveryDelay(uint64(b.Failures), v.retryHint)
			w.resumeAfter(md, b, delay)
			w.m.Retries.WithLabelValues("redelivery").Inc()
			w.log.Info("event handed back for redelivery", zap.Uint64("stream_seq", md.Sequence.Stream),
				zap.Uint64("delivery", n), zap.Int("provider_failures", b.Failures), zap.Duration("delay", delay),
				zap.String("reason", sanitize(v.err)))
			w.handBack(pubCtx, msg, md, delay, v.park, sealed)
			return "nak"
		}
	}
	if v.dead != nil {
		if !v.dead.redacted && !keepsOriginal(msg, sealed) {
			v.dead.data, v.dead.redacted = redactedCopy(msg, v.dead.reason), true
		}
		err := w.infraDo(pubCtx, func(ctx context.Context) error { return publishDeadLetter(ctx, w.d.JS, *v.dead) })
		if err != nil {
			w.log.Warn("dead letter not stored; event will be redelivered", zap.Error(err))
			_ = msg.NakWithDelay(w.retry.redeliveryDelay(1, 0))
			return "nak"
		}
		w.m.DeadLetters.WithLabelValues(string(v.dead.status)).Inc()
	}
	var commitErr chan error
	if v.commit != nil {
		commitErr = make(chan error, 1)
		sidework.Go(func() { commitErr <- w.infraDoBounded(pubCtx, v.commit) })
	}
	if v.conf != nil {
		v.conf.SpecVersion = events.SpecVersion
		v.conf.Attempts = md.NumDelivered
		v.conf.StreamSeq = md.Sequence.Stream
		v.conf.Lane = laneOfStream(md.Stream)
		v.conf.Time = time.Now().UTC()
		err := w.infraDoBounded(pubCtx, func(ctx context.Context) error { return w.confirm(ctx, v.conf) })
		if commitErr != nil {
			if cerr := <-commitErr; cerr != nil {
				// The provider holds the value; the redelivery finds the write
				// done (same idempotency key) and commits. Not the event's
				// failure: its budget is untouched.
				w.m.Retries.WithLabelValues("wait").Inc()
				w.log.Warn("ledger commit failed; event will be redelivered", zap.Uint64("delivery", md.NumDelivered), zap.Error(cerr))
				_ = msg.NakWithDelay(w.retry.redeliveryDelay(min(md.NumDelivered, 8), 0))
				return "wait"
			}
		}
		if err != nil && !errors.Is(err, errAlreadyConfirmed) {
			w.log.Warn("confirmation not published; event will be redelivered", zap.Error(err))
			_ = msg.NakWithDelay(w.retry.redeliveryDelay(min(md.NumDelivered, 8), 0))
			return "wait"
		}
		logf := w.log.Debug
		if v.conf.Status == events.StatusFailed || v.conf.Status == events.StatusRejected {
			logf = w.log.Warn
		}
		logf("event confirmed", zap.String("event_id", v.conf.EventID), zap.String("status", string(v.conf.Status)),
			zap.String("team", v.conf.TeamID), zap.String("key", v.conf.KeyID), zap.Uint64("stream_seq", md.Sequence.Stream),
			zap.String("reason", v.conf.Reason), zap.Bool("already_confirmed", errors.Is(err, errAlreadyConfirmed)))
	}
	w.failures.Remove(failKeyOf(md))
	if v.dead != nil {
		_ = msg.TermWithReason(v.dead.reason)
		return string(v.dead.status)
	}
	_ = msg.Ack()
	return string(v.conf.Status)
}

// failureRecord returns the event's provider-failure record without
// adding to it (nil when it has none).
func (w *Worker) failureRecord(md *jetstream.MsgMetadata, prior *RetryRecord) *RetryRecord {
	fk := failKeyOf(md)
	mem, ok := w.failures.Get(fk)
	switch {
	case prior.of(fk) && (!ok || prior.Failures > mem.Failures):
		r := *prior
		return &r
	case ok:
		return &mem
	}
	return nil
}

// noteFailure records one more provider failure of the event at md and
// returns its record. prior is the record the ledger held for the key, if
// any; it continues the count when it is this event's (this process's
// record wins a tie: it may carry waits the ledger's copy lacks).
func (w *Worker) noteFailure(md *jetstream.MsgMetadata, eventID string, prior *RetryRecord) *RetryRecord {
	return w.noteFailureAfter(md, eventID, prior, 0)
}

// noteFailureAfter is noteFailure for a delivery that spent own on
// keyrelay's own work before its provider call (claims, the ledger, NATS
// waits in place): that time does not count against retry_for.
func (w *Worker) noteFailureAfter(md *jetstream.MsgMetadata, eventID string, prior *RetryRecord, own time.Duration) *RetryRecord {
	fk := failKeyOf(md)
	var r RetryRecord
	switch mem, ok := w.failures.Get(fk); {
	case prior.of(fk) && (!ok || prior.Failures > mem.Failures):
		r = *prior
		r.resume = time.Time{}
		r.FirstFailure = r.FirstFailure.Add(max(own, 0))
	case ok:
		r = mem
		r.FirstFailure = r.FirstFailure.Add(max(own, 0))
	default:
		r = RetryRecord{EventID: eventID, StreamSeq: fk.seq, Lane: fk.lane, FirstFailure: time.Now().UTC()}
	}
	r.Failures++
	// Until finish hands the event back (resumeAfter), the clock runs
	// from now: a delivery that ends in a wait after all (its claim not
	// released) is credited from its failure on.
	r.resume = time.Now()
	w.failures.Add(fk, r)
	return &r
}

// spent is the provider-failing time of the record's event: the time
// since its budget began (FirstFailure, which infrastructure waits moved
// later), less own, time of the delivery under way that was keyrelay's.
//
// A record this process began is read by its own clock, which wrote
// FirstFailure. One read from the ledger (r.clock set) was begun by
// whichever worker failed first, from its clock: a worker whose clock
// runs ahead of that one's would find the budget spent early and
// dead-letter an event that still has time, failing it for a clock, not
// for its provider. So such a record's time is the lesser of this
// process's clock's and the server's (ledgerClock: the latest stored time
// read, moved on by the monotonic clock; no round trip): the budget is
// spent only once both say so. A worker far behind still retries longer,
// by its own clock, as before. Without any server time known (never in
// practice: a key event's delivery observes its stored time before its
// record is read) nothing counts as spent; max_deliver still bounds the
// failures.
func (r *RetryRecord) spent(own time.Duration) time.Duration {
	own = max(own, 0)
	if r.clock == nil {
		return time.Since(r.FirstFailure) - own
	}
	since := r.clock.now().Sub(r.FirstFailure)
	srv, ok := r.clock.server()
	if !ok {
		return 0
	}
	return min(since, srv.Sub(r.FirstFailure)) - own
}

// resumeAfter notes that the event at md, whose failure record is b, is
// handed back for delay after a provider failure: that delay is
// provider-failing time, and the budget's clock runs from its end only
// while the event is not waiting for keyrelay's infrastructure
// (creditWait).
func (w *Worker) resumeAfter(md *jetstream.MsgMetadata, b *RetryRecord, delay time.Duration) {
	fk := failKeyOf(md)
	if !b.of(fk) {
		return
	}
	r := *b
	r.resume = time.Now().Add(delay)
	w.failures.Add(fk, r)
}

// creditWait keeps a wait for keyrelay's own infrastructure out of the
// retry budget of the event at md ("NATS trouble never spends it"): the
// time from the point its budget's clock ran from (resumeAfter, or the
// previous wait's end) to the end of this wait's delay moves its
// FirstFailure later. Waits that are the backend's own trouble (its
// breaker open, its slots held by slow calls) are not credited: an event
// behind a failing backend still runs out of budget.
//
// Only a record this process holds is credited (the ledger's copy is
// written at the next failure): after a restart, or on another worker,
// the waits until the event's next provider failure count.
func (w *Worker) creditWait(md *jetstream.MsgMetadata, err error, delay time.Duration) {
	if errors.Is(err, errBreakerOpen) || errors.Is(err, errBackendBusy) {
		return
	}
	fk := failKeyOf(md)
	r, ok := w.failures.Get(fk)
	if !ok || r.resume.IsZero() {
		return
	}
	end := time.Now().Add(delay)
	if d := end.Sub(r.resume); d > 0 {
		r.FirstFailure = r.FirstFailure.Add(d)
		r.resume = end
		w.failures.Add(fk, r)
	}
}

// failKey names one stream message: its lane and sequence.
type failKey struct {
	lane events.Lane
	seq  uint64
}

func failKeyOf(md *jetstream.MsgMetadata) failKey {
	return failKey{lane: laneOfStream(md.Stream), seq: md.Sequence.Stream}
}

// laneOfStream tells the lane of a stream name.
func laneOfStream(stream string) events.Lane {
	if stream == BulkStream {
		return events.LaneBulk
	}
	return events.LaneInteractive
}

// of reports whether r is the record of the message fk.
func (r *RetryRecord) of(fk failKey) bool {
	return r != nil && r.StreamSeq == fk.seq && r.Lane == fk.lane
}

// sanitize renders an error for logs, DLQ entries and confirmations. Errors
// built by keyrelay and its providers never contain values; this also
// bounds the length.
func sanitize(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if len(s) > 512 {
		s = s[:512] + "..."
	}
	return s
}

func confFor(ev *events.Event, gen uint64) *events.Confirmation {
	return &events.Confirmation{EventID: ev.ID, EventType: ev.Type, TeamID: ev.TeamID, KeyID: ev.KeyID, Generation: gen, JobID: ev.JobID}
}

// rejected builds the verdict for a validated event that can never
// succeed as sent. redact forces the DLQ copy to be the redacted summary
// (dead decides it anyway for anything not proven sealed).
func (w *Worker) rejected(msg jetstream.Msg, md *jetstream.MsgMetadata, conf *events.Confirmation, reason string, redact bool) verdict {
	return w.dead(msg, md, conf, events.StatusRejected, reason, redact)
}

// failed builds the verdict for an event whose write failed for good.
func (w *Worker) failed(msg jetstream.Msg, md *jetstream.MsgMetadata, conf *events.Confirmation, reason string) verdict {
	return w.dead(msg, md, conf, events.StatusFailed, reason, false)
}

// dead builds the verdict that dead-letters the message. finish keeps
// the original bytes in the DLQ only when they can be resent safely
// (keepsOriginal): the event carries no value, or its value opened as a
// sealed envelope in this delivery. Everything else is stored as the
// redacted summary, whatever the reason it is dead-lettered for.
func (w *Worker) dead(msg jetstream.Msg, md *jetstream.MsgMetadata, conf *events.Confirmation, status events.Status, reason string, redact bool) verdict {
	if conf == nil {
		conf = &events.Confirmation{}
	}
	conf.Status, conf.Reason = status, reason
	d := &deadLetterIn{subject: msg.Subject(), streamSeq: md.Sequence.Stream,
		eventID: conf.EventID, team: conf.TeamID, key: conf.KeyID, status: status, reason: reason,
		attempts: md.NumDelivered, data: msg.Data()}
	if redact {
		d.data, d.redacted = redactedCopy(msg, reason), true
	}
	return verdict{conf: conf, dead: d}
}

// invalid builds the verdict for a message that failed validation. Nothing
// read from it is trusted: its rejection is filed under the subject's team
// and key (when they are valid ids) and its stream sequence, never under
// the event id it claims, and its DLQ copy is a redacted summary.
func (w *Worker) invalid(msg jetstream.Msg, md *jetstream.MsgMetadata, claimed string, reason string) verdict {
	team, key := subjectIDs(msg.Subject())
	conf := &events.Confirmation{TeamID: team, KeyID: key, Status: events.StatusRejected, Reason: reason}
	if events.ValidateID("id", claimed) == nil {
		conf.ClaimedEventID = claimed
	}
	return verdict{conf: conf, dead: &deadLetterIn{subject: msg.Subject(), streamSeq: md.Sequence.Stream,
		team: team, key: key, claimedID: conf.ClaimedEventID, status: events.StatusRejected, reason: reason,
		attempts: md.NumDelivered, data: redactedCopy(msg, reason), redacted: true}}
}

// subjectIDs returns the team and key tokens of an events-stream subject
// when they are valid ids ("" otherwise).
func subjectIDs(subject string) (team, key string) {
	var rest string
	switch {
	case strings.HasPrefix(subject, events.EventsPrefix+"."):
		rest = subject[len(events.EventsPrefix)+1:]
	case strings.HasPrefix(subject, events.BulkPrefix+"."):
		rest = subject[len(events.BulkPrefix)+1:]
	case strings.HasPrefix(subject, events.SettingsPrefix+"."):
		rest = subject[len(events.SettingsPrefix)+1:]
	default:
		return "", ""
	}
	toks := strings.SplitN(rest, ".", 3)
	if events.ValidateID("team_id", toks[0]) == nil {
		team = toks[0]
	}
	if team != "" && len(toks) > 1 && !strings.HasPrefix(subject, events.SettingsPrefix+".") && events.ValidateID("key_id", toks[1]) == nil {
		key = toks[1]
	}
	return team, key
}

// handle decides what to do with one delivery.
func (w *Worker) handle(ctx context.Context, ln *lane, msg jetstream.Msg, md *jetstream.MsgMetadata, receivedAt time.Time) (verdict, events.Type) {
	ev, err := events.Decode(msg.Data())
	if err != nil {
		return w.invalid(msg, md, claimedID(msg.Data()), sanitize(err)), ""
	}
	if want := ev.SubjectIn(ln.name); want != msg.Subject() {
		// The document is valid but was published where it does not
		// belong: it may be another team's id, so it is not trusted either.
		return w.invalid(msg, md, ev.ID, fmt.Sprintf("subject does not match the event's team, key and type (want %q)", want)), ev.Type
	}
	if err := ev.ValidateLane(ln.name); err != nil {
		return w.invalid(msg, md, ev.ID, sanitize(err)), ev.Type
	}
	gen := ev.Generation
	if gen == 0 {
		gen = md.Sequence.Stream
	}
	if ev.Type.IsSettings() {
		return w.handleSettings(ctx, msg, md, ev, gen), ev.Type
	}
	return w.handleKey(ctx, ln, msg, md, ev, gen, receivedAt), ev.Type
}
