package outbox

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/keyrelay/keyrelay/internal/tracing"
)

// maxTraceHeader bounds each stored trace-context value the relay reads.
// The W3C recommendation is to propagate at least 512 characters of
// tracestate; a version-00 traceparent is 55.
const maxTraceHeader = 512

// traceContextOf returns the W3C traceparent and tracestate of ctx's span
// context; both are empty when it has none.
func traceContextOf(ctx context.Context) (traceparent, tracestate string) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return "", ""
	}
	c := propagation.MapCarrier{}
	tracing.Propagator.Inject(ctx, c)
	return c["traceparent"], c["tracestate"]
}

// remoteParent returns a context whose remote span context is the one a
// row's stored trace context names, or ctx itself when the row has none
// or it is not valid: the columns are written by the gateway and read as
// untrusted input, which can only choose a span's parent, never fail or
// hold back the row. An oversized tracestate is dropped; an oversized
// traceparent is not parsed at all.
func remoteParent(ctx context.Context, traceparent, tracestate string) context.Context {
	if traceparent == "" || len(traceparent) > maxTraceHeader {
		return ctx
	}
	if len(tracestate) > maxTraceHeader {
		tracestate = ""
	}
	c := propagation.MapCarrier{"traceparent": traceparent}
	if tracestate != "" {
		c["tracestate"] = tracestate
	}
	out := tracing.Propagator.Extract(ctx, c)
	if !trace.SpanContextFromContext(out).IsValid() {
		return ctx
	}
	return out
}
