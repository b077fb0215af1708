package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/settings"
)

// verdict is what a handler decided for one delivery.
type verdict struct {
	// conf is published before the message is acked or terminated.
	conf *events.Confirmation
	// dead, when set, sends the message to the DLQ and terminates it.
	dead *deadLetterIn
	// retry hands the message back with NakWithDelay.
	retry     bool
	retryHint time.Duration
	err       error
	// commit, when set, records the write in the ledger. It runs
	// concurrently with the confirmation's publication; the message is
	// acked only when both succeeded. A confirmation published before a
	// failed commit is still true (the provider holds the value), and the
	// redelivery finds the write done (same idempotency key) and commits.
	commit func(context.Context) error
}

// process handles one delivery end to end. It never panics and always
// acks, naks or terminates the message.
func (w *Worker) process(ctx context.Context, msg jetstream.Msg, receivedAt time.Time) {
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
	v, typ := w.safeHandle(ctx, msg, md, receivedAt)
	stopBeat()
	outcome := w.finish(ctx, msg, md, v)
	w.m.Events.WithLabelValues(typeLabel(typ), outcome).Inc()
	w.m.EventDuration.WithLabelValues(typeLabel(typ)).Observe(time.Since(start).Seconds())
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
	w.inflight.Store(msg, struct{}{})
	return func() { w.inflight.Delete(msg) }
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
			w.inflight.Range(func(k, _ any) bool {
				_ = k.(jetstream.Msg).InProgress()
				return true
			})
		}
	}
}

func (w *Worker) safeHandle(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, receivedAt time.Time) (v verdict, typ events.Type) {
	defer func() {
		if r := recover(); r != nil {
			// A panic's value could quote data; log only that it happened.
			w.log.Error("handler panic; event will be redelivered", zap.Uint64("stream_seq", md.Sequence.Stream),
				zap.String("stack", string(debug.Stack())))
			v = verdict{retry: true, err: errors.New("handler panic")}
		}
	}()
	return w.handle(ctx, msg, md, receivedAt)
}

// finish publishes the confirmation (and dead letter), then acks, naks or
// terminates. It returns the outcome label for metrics.
func (w *Worker) finish(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, v verdict) string {
	pubCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if !v.retry && v.dead == nil && v.conf == nil {
		_ = msg.Nak()
		return "nak"
	}
	if v.retry && v.dead == nil {
		n := md.NumDelivered
		if n >= uint64(w.cfg.MaxDeliver) && v.err != nil && !errors.Is(v.err, context.Canceled) {
			// Out of deliveries: dead-letter it.
			v = w.failed(msg, md, v.conf, fmt.Sprintf("retries exhausted after %d deliveries: %s", n, sanitize(v.err)))
		} else {
			delay := w.retry.redeliveryDelay(n, v.retryHint)
			if errors.Is(v.err, context.Canceled) {
				delay = 0
			}
			w.m.Retries.WithLabelValues("redelivery").Inc()
			w.log.Info("event handed back for redelivery", zap.Uint64("stream_seq", md.Sequence.Stream),
				zap.Uint64("delivery", n), zap.Duration("delay", delay), zap.String("reason", sanitize(v.err)))
			_ = msg.NakWithDelay(delay)
			return "nak"
		}
	}
	if v.dead != nil {
		if err := publishDeadLetter(pubCtx, w.d.JS, *v.dead); err != nil {
			w.log.Warn("dead letter not stored; event will be redelivered", zap.Error(err))
			_ = msg.NakWithDelay(w.retry.redeliveryDelay(1, 0))
			return "nak"
		}
		w.m.DeadLetters.WithLabelValues(string(v.dead.status)).Inc()
	}
	var commitErr chan error
	if v.commit != nil {
		commitErr = make(chan error, 1)
		go func() { commitErr <- v.commit(pubCtx) }()
	}
	if v.conf != nil {
		v.conf.SpecVersion = events.SpecVersion
		v.conf.Attempts = md.NumDelivered
		v.conf.StreamSeq = md.Sequence.Stream
		v.conf.Time = time.Now().UTC()
		err := publishConfirmation(pubCtx, w.d.JS, v.conf)
		if commitErr != nil {
			if cerr := <-commitErr; cerr != nil {
				// The provider holds the value; the redelivery finds the write
				// done (same idempotency key) and commits. Back off like any
				// retry so a persistent fault does not spin.
				w.m.Retries.WithLabelValues("redelivery").Inc()
				w.log.Warn("ledger commit failed; event will be redelivered", zap.Uint64("delivery", md.NumDelivered), zap.Error(cerr))
				_ = msg.NakWithDelay(w.retry.redeliveryDelay(md.NumDelivered, 0))
				return "nak"
			}
		}
		if err != nil && !errors.Is(err, errAlreadyConfirmed) {
			w.log.Warn("confirmation not published; event will be redelivered", zap.Error(err))
			_ = msg.NakWithDelay(w.retry.redeliveryDelay(1, 0))
			return "nak"
		}
		logf := w.log.Debug
		if v.conf.Status == events.StatusFailed || v.conf.Status == events.StatusRejected {
			logf = w.log.Warn
		}
		logf("event confirmed", zap.String("event_id", v.conf.EventID), zap.String("status", string(v.conf.Status)),
			zap.String("team", v.conf.TeamID), zap.String("key", v.conf.KeyID), zap.Uint64("stream_seq", md.Sequence.Stream),
			zap.String("reason", v.conf.Reason), zap.Bool("already_confirmed", errors.Is(err, errAlreadyConfirmed)))
	}
	if v.dead != nil {
		_ = msg.TermWithReason(v.dead.reason)
		return string(v.dead.status)
	}
	_ = msg.Ack()
	return string(v.conf.Status)
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
	return &events.Confirmation{EventID: ev.ID, EventType: ev.Type, TeamID: ev.TeamID, KeyID: ev.KeyID, Generation: gen}
}

// rejected builds the verdict for an event that can never succeed as sent.
func (w *Worker) rejected(msg jetstream.Msg, md *jetstream.MsgMetadata, conf *events.Confirmation, reason string, redact bool) verdict {
	return w.dead(msg, md, conf, events.StatusRejected, reason, redact)
}

// failed builds the verdict for an event whose write failed for good.
func (w *Worker) failed(msg jetstream.Msg, md *jetstream.MsgMetadata, conf *events.Confirmation, reason string) verdict {
	return w.dead(msg, md, conf, events.StatusFailed, reason, false)
}

func (w *Worker) dead(msg jetstream.Msg, md *jetstream.MsgMetadata, conf *events.Confirmation, status events.Status, reason string, redact bool) verdict {
	if conf == nil {
		conf = &events.Confirmation{}
	}
	conf.Status, conf.Reason = status, reason
	data := msg.Data()
	if redact {
		data = redactValue(data)
	}
	return verdict{conf: conf, dead: &deadLetterIn{subject: msg.Subject(), streamSeq: md.Sequence.Stream,
		eventID: conf.EventID, team: conf.TeamID, key: conf.KeyID, status: status, reason: reason,
		attempts: md.NumDelivered, data: data, redacted: redact}}
}

// redactValue removes data.value from an event that carried a plaintext
// value, so the DLQ never stores it.
func redactValue(b []byte) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(b, &m) != nil {
		return []byte(`{"redacted":"undecodable event with a plaintext value"}`)
	}
	var d map[string]json.RawMessage
	if json.Unmarshal(m["data"], &d) == nil {
		d["value"] = json.RawMessage(`{"alg":"redacted"}`)
		m["data"], _ = json.Marshal(d)
	}
	out, _ := json.Marshal(m)
	return out
}

// handle decides what to do with one delivery.
func (w *Worker) handle(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, receivedAt time.Time) (verdict, events.Type) {
	ev, err := events.Decode(msg.Data())
	if err != nil {
		return w.rejected(msg, md, lenientConf(msg), sanitize(err), false), ""
	}
	if ev.Subject() != msg.Subject() {
		return w.rejected(msg, md, confFor(ev, ev.Generation),
			fmt.Sprintf("subject %q does not match the event's team, key and type (want %q)", msg.Subject(), ev.Subject()), false), ev.Type
	}
	gen := ev.Generation
	if gen == 0 {
		gen = md.Sequence.Stream
	}
	if ev.Type.IsSettings() {
		return w.handleSettings(ctx, msg, md, ev, gen), ev.Type
	}
	return w.handleKey(ctx, msg, md, ev, gen, receivedAt), ev.Type
}

// lenientConf extracts what it can from an invalid event, so its rejection
// is confirmed under its id when the id itself is valid.
func lenientConf(msg jetstream.Msg) *events.Confirmation {
	var loose struct {
		ID     string `json:"id"`
		Type   string `json:"type"`
		TeamID string `json:"team_id"`
		KeyID  string `json:"key_id"`
	}
	_ = json.Unmarshal(msg.Data(), &loose)
	c := &events.Confirmation{}
	if events.ValidateID("id", loose.ID) == nil && events.ValidateID("team_id", loose.TeamID) == nil {
		c.EventID, c.TeamID = loose.ID, loose.TeamID
		if events.ValidateID("key_id", loose.KeyID) == nil {
			c.KeyID = loose.KeyID
		}
		if events.Type(loose.Type).Known() {
			c.EventType = events.Type(loose.Type)
		}
	}
	return c
}

func (w *Worker) handleSettings(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, ev *events.Event, gen uint64) verdict {
	conf := confFor(ev, gen)
	st, res, err := w.teams.ApplyThrough(ctx, ev.TeamID, ev, md.Sequence.Stream)
	if err != nil {
		return verdict{retry: true, err: err, conf: conf}
	}
	switch res {
	case Applied, AlreadyApplied:
		conf.Status = events.StatusStored
		if ev.Type == events.TeamSettingsDeleted {
			conf.Status = events.StatusDeleted
		}
	default:
		conf.Status = events.StatusSuperseded
		conf.Reason = fmt.Sprintf("team settings generation %d already applied", st.Generation)
	}
	return verdict{conf: conf}
}

// keyWork carries one key event through the claim and write phases.
type keyWork struct {
	ev       *events.Event
	gen      uint64
	res      settings.Resolved
	team     *events.TeamSettings
	value    []byte
	keyData  *events.KeyData
	upd      *events.UpdateData
	entry    *LedgerEntry
	rev      uint64
	deadline time.Time
}

func (w *Worker) handleKey(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, ev *events.Event, gen uint64, receivedAt time.Time) verdict {
	conf := confFor(ev, gen)
	kw := &keyWork{ev: ev, gen: gen}
	switch ev.Type {
	case events.KeyCreated, events.KeyRotated:
		kd, err := ev.KeyData()
		if err != nil {
			return w.rejected(msg, md, conf, sanitize(err), false)
		}
		value, err := w.d.Opener.Open(ctx, kd.Value, events.BindingOf(ev))
		if err != nil {
			return w.rejected(msg, md, conf, "cannot open value: "+sanitize(err), errors.Is(err, events.ErrPlaintextRefused))
		}
		kw.keyData, kw.value = kd, value
		defer clear(value)
	case events.KeyUpdated:
		upd, err := ev.UpdateData()
		if err != nil {
			return w.rejected(msg, md, conf, sanitize(err), false)
		}
		kw.upd = upd
	}

	// The team's settings and the ledger claim are independent: look the
	// settings up while claiming, to save a round trip of latency.
	type teamResult struct {
		st  TeamState
		err error
	}
	tc := make(chan teamResult, 1)
	go func() {
		st, err := w.teams.Current(ctx, ev.TeamID, receivedAt)
		tc <- teamResult{st, err}
	}()

	unlock := w.locks.lock(LedgerKey(ev.TeamID, ev.KeyID))
	defer unlock()

	v, done := w.claim(ctx, kw, conf)
	tr := <-tc
	if done {
		return v
	}
	if tr.err != nil {
		w.release(kw)
		return verdict{retry: true, err: tr.err, conf: conf}
	}
	kw.team = tr.st.Settings
	kw.res = w.d.Settings.Resolve(tr.st.Settings)
	conf.Provider = kw.res.Backend
	if !kw.res.StoreVirtualKeys {
		w.release(kw)
		conf.Status, conf.Reason = events.StatusSkipped, "store_virtual_keys is false for this team"
		return verdict{conf: conf}
	}
	if !kw.res.CanWrite() {
		w.release(kw)
		return w.rejected(msg, md, conf, fmt.Sprintf("access_mode %s forbids writes", kw.res.AccessMode), false)
	}

	v = w.apply(ctx, msg, md, kw, conf)
	if v.conf == nil || v.retry || v.dead != nil {
		w.release(kw)
	}
	return v
}

// claim takes the key in the ledger for this event, or decides the event
// is a duplicate or superseded. done is true when v is final.
//
// The first attempt uses the cached entry (or assumes a new key); every
// decision taken from it is safe: generations only grow, so a stale entry
// can only make an event look newer than it is, and the compare-and-set
// then fails and the entry is read afresh.
func (w *Worker) claim(ctx context.Context, kw *keyWork, conf *events.Confirmation) (v verdict, done bool) {
	lkey := LedgerKey(kw.ev.TeamID, kw.ev.KeyID)
	var e *LedgerEntry
	var rev uint64
	fresh := false
	if c, ok := w.entries.Get(lkey); ok {
		ce := c.entry
		e, rev = &ce, c.rev
	}
	wait := 10 * time.Millisecond
	for {
		if err := ctx.Err(); err != nil {
			return verdict{retry: true, err: err, conf: conf}, true
		}
		now := time.Now()
		if e != nil {
			if dup, ok := duplicateOf(e, kw.ev, kw.gen); ok {
				*conf = *dup
				conf.Duplicate = true
				return verdict{conf: conf}, true
			}
			if kw.gen <= e.Generation || (kw.ev.Type == events.KeyUpdated && kw.gen <= e.MetaGeneration) {
				conf.Status = events.StatusSuperseded
				conf.Reason = fmt.Sprintf("generation %d is not newer than the applied generation %d", kw.gen, max(e.Generation, e.MetaGeneration))
				return verdict{conf: conf}, true
			}
			if e.Claim.Active(now) && e.Claim.EventID != kw.ev.ID {
				if fresh {
					// Another worker is writing this key: wait for it.
					t := time.NewTimer(wait)
					select {
					case <-ctx.Done():
						t.Stop()
					case <-t.C:
					}
					wait = min(wait*2, 500*time.Millisecond)
				}
				var err error
				if e, rev, err = w.ledger.Get(ctx, kw.ev.TeamID, kw.ev.KeyID); err != nil {
					return verdict{retry: true, err: err, conf: conf}, true
				}
				fresh = true
				continue
			}
		}
		next := LedgerEntry{}
		if e != nil {
			next = *e
		}
		until := now.Add(w.cfg.ClaimLease)
		next.Claim = &Claim{EventID: kw.ev.ID, Generation: kw.gen, Worker: w.cfg.ID, Until: until}
		nrev, err := w.ledger.Put(ctx, kw.ev.TeamID, kw.ev.KeyID, &next, rev)
		if errors.Is(err, ErrLedgerConflict) {
			w.entries.Remove(lkey)
			if e, rev, err = w.ledger.Get(ctx, kw.ev.TeamID, kw.ev.KeyID); err != nil {
				return verdict{retry: true, err: err, conf: conf}, true
			}
			fresh = true
			continue
		}
		if err != nil {
			w.entries.Remove(lkey)
			return verdict{retry: true, err: err, conf: conf}, true
		}
		kw.entry, kw.rev = &next, nrev
		w.entries.Add(lkey, cachedEntry{entry: next, rev: nrev})
		// Stop writing well before the lease ends, so no other worker can
		// take the key over while this one still writes.
		kw.deadline = until.Add(-w.cfg.ClaimLease / 10)
		return verdict{}, false
	}
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
// wait for the lease to run out.
func (w *Worker) release(kw *keyWork) {
	if kw.entry == nil || kw.rev == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	next := *kw.entry
	next.Claim = nil
	lkey := LedgerKey(kw.ev.TeamID, kw.ev.KeyID)
	nrev, err := w.ledger.Put(ctx, kw.ev.TeamID, kw.ev.KeyID, &next, kw.rev)
	if err != nil {
		w.entries.Remove(lkey)
		w.log.Debug("claim not released; it will expire", zap.Error(err))
		return
	}
	w.entries.Add(lkey, cachedEntry{entry: next, rev: nrev})
}

// call runs one provider operation with in-process retries, bounded by the
// claim deadline.
func (w *Worker) call(ctx context.Context, kw *keyWork, fn func(context.Context) error) error {
	return w.retry.do(ctx, kw.deadline, func(ctx context.Context) error {
		d := time.Until(kw.deadline)
		if d <= 0 {
			return providers.NewError(kw.res.Backend, "call", "", providers.Retryable, errors.New("claim lease ran out"))
		}
		cctx, cancel := context.WithTimeout(ctx, min(d, w.cfg.CallTimeout))
		defer cancel()
		return fn(cctx)
	}, func(err error, wait time.Duration) {
		w.m.Retries.WithLabelValues("in_process").Inc()
		w.log.Debug("provider call failed; retrying", zap.String("event_id", kw.ev.ID), zap.Duration("wait", wait), zap.String("reason", sanitize(err)))
	})
}

// apply performs the write for a claimed key and commits the ledger.
func (w *Worker) apply(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, kw *keyWork, conf *events.Confirmation) verdict {
	ev, e := kw.ev, kw.entry
	p, err := w.provider(ctx, kw.res)
	if err != nil {
		return w.providerFailed(msg, md, conf, err)
	}
	owner := providers.Owner{TeamID: ev.TeamID, KeyID: ev.KeyID}
	next := *e
	next.Claim = nil
	next.UpdatedAt = time.Now().UTC()

	alias, metadata := ev.KeyAlias, map[string]string(nil)
	switch ev.Type {
	case events.KeyCreated, events.KeyRotated:
		metadata = kw.keyData.Metadata
		if e.MetaGeneration > kw.gen {
			// A newer key.updated already set alias and metadata.
			alias, metadata = e.Alias, e.Metadata
		}
		name, err := kw.res.SecretName(ev.TeamID, ev.KeyID, alias)
		if err != nil {
			return w.rejected(msg, md, conf, "secret name: "+sanitize(err), false)
		}
		var res providers.PutResult
		err = w.call(ctx, kw, func(ctx context.Context) error {
			var err error
			res, err = p.Put(ctx, providers.PutRequest{Name: name, Value: kw.value, IdempotencyKey: ev.ID, Owner: owner,
				Description: kw.res.Description, Tags: secretTags(kw.res.Tags, metadata, alias), Adopt: w.cfg.AdoptUnowned})
			return err
		})
		if v, bad := w.writeFailed(msg, md, conf, err); bad {
			return v
		}
		status := events.StatusStored
		if ev.Type == events.KeyRotated {
			status = events.StatusRotated
		}
		if e.SecretRef != "" && e.SecretRef != name && e.Status != events.StatusDeleted {
			// The name moved (alias naming and a newer alias): remove the old one.
			w.deleteOld(ctx, kw, p, e.SecretRef, owner)
		}
		next.Generation, next.EventID, next.EventType, next.Status = kw.gen, ev.ID, ev.Type, status
		next.StreamSeq, next.Provider, next.SecretRef, next.ProviderVersion = md.Sequence.Stream, kw.res.Backend, name, res.Version
		next.Sealed, next.SealedGen = kw.keyData.Value, ev.Generation
		next.Alias, next.Metadata = alias, metadata
		conf.Status, conf.SecretRef, conf.ProviderVersion = status, name, res.Version

	case events.KeyUpdated:
		metadata = kw.upd.Metadata
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
			if name != e.SecretRef {
				// Alias naming: move the secret to its new name.
				value, err := w.d.Opener.Open(ctx, e.Sealed, events.Binding{TeamID: ev.TeamID, KeyID: ev.KeyID, Generation: e.SealedGen})
				if err != nil {
					return w.failed(msg, md, conf, "cannot open the stored sealed value to move it: "+sanitize(err))
				}
				var res providers.PutResult
				err = w.call(ctx, kw, func(ctx context.Context) error {
					var err error
					res, err = p.Put(ctx, providers.PutRequest{Name: name, Value: value, IdempotencyKey: ev.ID, Owner: owner,
						Description: kw.res.Description, Tags: secretTags(kw.res.Tags, metadata, alias), Adopt: w.cfg.AdoptUnowned})
					return err
				})
				clear(value)
				if v, bad := w.writeFailed(msg, md, conf, err); bad {
					return v
				}
				w.deleteOld(ctx, kw, p, e.SecretRef, owner)
				next.SecretRef, next.ProviderVersion = name, res.Version
			} else if tu, ok := p.(providers.TagUpdater); ok {
				err := w.call(ctx, kw, func(ctx context.Context) error {
					return tu.UpdateTags(ctx, providers.TagRequest{Name: name, Owner: owner, Description: kw.res.Description,
						Tags: secretTags(kw.res.Tags, metadata, alias), Adopt: w.cfg.AdoptUnowned})
				})
				if v, bad := w.writeFailed(msg, md, conf, err); bad {
					return v
				}
			}
			conf.SecretRef, conf.ProviderVersion = next.SecretRef, next.ProviderVersion
		}

	case events.KeyDeleted:
		name := e.SecretRef
		if name == "" {
			if name, err = kw.res.SecretName(ev.TeamID, ev.KeyID, ev.KeyAlias); err != nil {
				return w.rejected(msg, md, conf, "secret name: "+sanitize(err), false)
			}
		}
		backend := kw.res.Backend
		if e.Provider != "" && e.Provider != backend && e.Status != events.StatusDeleted {
			// The team moved to another backend since the secret was
			// written: delete it where it is.
			backend = e.Provider
			old, err := w.provider(ctx, w.d.Settings.ResolveBackend(kw.team, backend))
			if err != nil {
				return w.providerFailed(msg, md, conf, err)
			}
			p = old
		}
		err := w.call(ctx, kw, func(ctx context.Context) error {
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
		next.Sealed, next.SealedGen = nil, 0
		conf.Status, conf.SecretRef, conf.Provider = events.StatusDeleted, name, backend
		return w.commitVerdict(kw, next, conf)
	}
	conf.Provider = kw.res.Backend
	return w.commitVerdict(kw, next, conf)
}

// commitVerdict confirms the write and commits next to the ledger.
func (w *Worker) commitVerdict(kw *keyWork, next LedgerEntry, conf *events.Confirmation) verdict {
	ev := kw.ev

	lkey, rev := LedgerKey(ev.TeamID, ev.KeyID), kw.rev
	kw.entry = nil // the commit replaces the claim: nothing to release
	return verdict{conf: conf, commit: func(ctx context.Context) error {
		nrev, err := w.ledger.Put(ctx, ev.TeamID, ev.KeyID, &next, rev)
		if err != nil {
			// The write is done and idempotent: a redelivery repeats it as
			// a duplicate and commits then.
			w.entries.Remove(lkey)
			return fmt.Errorf("ledger commit: %w", err)
		}
		w.entries.Add(lkey, cachedEntry{entry: next, rev: nrev})
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
	err := w.call(ctx, kw, func(ctx context.Context) error {
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

// secretTags merges team tags, event metadata and the alias.
func secretTags(team, metadata map[string]string, alias string) map[string]string {
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
