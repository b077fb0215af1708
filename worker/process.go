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
