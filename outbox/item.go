package outbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/tracing"
)

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
	// traceparent and tracestate are the inserting transaction's trace
	// context, as the row stored it (untrusted; empty when absent).
	traceparent, tracestate string
}

// startSpan opens the row's span, a child of the trace context the row
// stored when it holds a valid one and a root otherwise, and carries it in
// its message.
func (r *Relay) startSpan(it *item) {
	parent := remoteParent(context.Background(), it.traceparent, it.tracestate)
	_, it.span = r.tracer.Start(parent, tracing.SpanOutboxRelay, trace.WithSpanKind(trace.SpanKindProducer))
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
