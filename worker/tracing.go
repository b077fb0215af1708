package worker

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/tracing"
	"github.com/keyrelay/keyrelay/providers"
)

// Spans of the worker (see package tracing). Their attributes are ids,
// enumerations and numbers taken from the stream metadata and the
// confirmation: never a value, a secret name or an error's text.

// startEventSpan opens the span of one delivery, a child of the trace
// context the message carries (from its publisher or the outbox relay).
func (w *Worker) startEventSpan(ctx context.Context, ln *lane, msg jetstream.Msg, md *jetstream.MsgMetadata) (context.Context, trace.Span) {
	ctx = tracing.Extract(ctx, msg.Headers())
	ctx, span := w.tracer.Start(ctx, tracing.SpanEvent, trace.WithSpanKind(trace.SpanKindConsumer))
	if span.IsRecording() {
		span.SetAttributes(tracing.MessagingSystem.String("nats"), tracing.Lane.String(ln.name.String()),
			tracing.Attempts.Int64(int64(md.NumDelivered)), tracing.StreamSeq.Int64(int64(md.Sequence.Stream)))
	}
	return ctx, span
}

// endEventSpan labels the delivery's span with the event (as its
// confirmation names it) and what became of it, and ends it.
func endEventSpan(span trace.Span, typ events.Type, conf *events.Confirmation, outcome string) {
	if span.IsRecording() {
		attrs := make([]attribute.KeyValue, 0, 8)
		attrs = append(attrs, tracing.EventType.String(typeLabel(typ)), tracing.Outcome.String(outcome))
		if conf != nil {
			for _, a := range []struct {
				k attribute.Key
				v string
			}{{tracing.EventID, conf.EventID}, {tracing.TeamID, conf.TeamID}, {tracing.KeyID, conf.KeyID},
				{tracing.Backend, conf.Provider}, {tracing.Status, string(conf.Status)}} {
				if a.v != "" {
					attrs = append(attrs, a.k.String(a.v))
				}
			}
			if conf.Duplicate {
				attrs = append(attrs, tracing.Duplicate.Bool(true))
			}
		}
		span.SetAttributes(attrs...)
		switch outcome {
		case string(events.StatusFailed), string(events.StatusRejected):
			span.SetStatus(codes.Error, outcome)
		case "nak":
			span.SetStatus(codes.Error, "handed back for redelivery")
		}
	}
	span.End()
}

// startCallSpan opens the span of one provider call (one try).
func (w *Worker) startCallSpan(ctx context.Context, kw *keyWork, op string, try int) (context.Context, trace.Span) {
	ctx, span := w.tracer.Start(ctx, tracing.SpanProviderCall, trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		backend := kw.res.Backend
		if kw.guard != nil {
			backend = kw.guard.provider
		}
		span.SetAttributes(tracing.Op.String(op), tracing.Backend.String(backend), tracing.Try.Int(try))
	}
	return ctx, span
}

// endCallSpan records the call's error kind (never its message) and ends
// the span.
func endCallSpan(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		kind := errorKind(err)
		span.SetAttributes(tracing.ErrorKind.String(kind))
		span.SetStatus(codes.Error, kind)
	}
	span.End()
}

// errorKind classifies a provider call's failure for traces.
func errorKind(err error) string {
	switch {
	case errors.Is(err, errBreakerOpen):
		return "breaker_open"
	case errors.Is(err, providers.ErrOwnLimit):
		return "own_limit"
	case errors.Is(err, providers.ErrNotFound):
		return "not_found"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	var pe *providers.Error
	if errors.As(err, &pe) {
		return pe.Kind.String()
	}
	if providers.IsRetryable(err) {
		return "retryable"
	}
	return "permanent"
}
