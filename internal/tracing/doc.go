// Package tracing gives keyrelay its OpenTelemetry traces: a tracer
// provider configured by the standard OTEL_* environment variables, and
// W3C trace context (traceparent, tracestate) carried in NATS message
// headers.
//
// # Configuration
//
// Tracing is off unless OTEL_TRACES_EXPORTER is "otlp"; unset or "none"
// (and OTEL_SDK_DISABLED=true) give a no-op provider that records nothing
// and costs next to nothing. With "otlp", spans are batched and exported
// over OTLP/HTTP (protobuf) to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used as
// it is) or OTEL_EXPORTER_OTLP_ENDPOINT (with /v1/traces appended),
// default https://localhost:4318/v1/traces; the exporter reads the other
// OTEL_EXPORTER_OTLP_* variables (headers, certificates, timeout,
// compression) itself, and the SDK reads OTEL_TRACES_SAMPLER(_ARG)
// (default: parent-based, always on) and OTEL_BSP_*. The service name is
// "keyrelay" unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES say
// otherwise. OTEL_EXPORTER_OTLP_PROTOCOL other than http/protobuf is
// refused: this build has no gRPC exporter.
//
// # Guarantees
//
//   - Shutdown flushes the spans still buffered before it returns (bounded
//     by its context).
//   - Provider.String never contains credentials: the endpoint is shown
//     without user information or query, headers are never shown.
//   - Spans made by keyrelay carry ids (team, key, event, stream sequence),
//     types, statuses and error kinds; never a secret value, a secret's
//     name rendered from an alias, or an error message.
//   - Inject and Extract touch only the traceparent and tracestate
//     headers; a message without them yields a context without a remote
//     parent, and a malformed traceparent is ignored.
package tracing
