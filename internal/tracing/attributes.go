package tracing

import "go.opentelemetry.io/otel/attribute"

// Span names.
const (
	// SpanPublish: a publisher (client.Publisher, `keyrelay publish`)
	// storing one event in JetStream, up to its PubAck.
	SpanPublish = "keyrelay.publish"
	// SpanOutboxRelay: the outbox relay publishing one row, up to its
	// PubAck (or failure).
	SpanOutboxRelay = "keyrelay.outbox.relay"
	// SpanEvent: a worker handling one delivery, to its ack, nak or term.
	SpanEvent = "keyrelay.event"
	// SpanProviderCall: one provider call (one try) inside SpanEvent.
	SpanProviderCall = "keyrelay.provider.call"
)

// Attribute keys of keyrelay's spans. Values are ids, enumerations and
// numbers only.
const (
	TeamID    = attribute.Key("keyrelay.team_id")
	KeyID     = attribute.Key("keyrelay.key_id")
	EventID   = attribute.Key("keyrelay.event_id")
	EventType = attribute.Key("keyrelay.event_type")
	// Backend is the key_management_system the event was written to.
	Backend = attribute.Key("keyrelay.backend")
	// Lane is "interactive" or "bulk".
	Lane = attribute.Key("keyrelay.lane")
	// Status is the confirmation's status (stored, rotated, ... failed).
	Status = attribute.Key("keyrelay.status")
	// Outcome is what the worker did with the delivery: a status, "nak"
	// (retry later) or "wait" (handed back without spending its budget).
	Outcome = attribute.Key("keyrelay.outcome")
	// Attempts is the delivery count of the message (JetStream's).
	Attempts = attribute.Key("keyrelay.attempts")
	// StreamSeq is the event's stream sequence.
	StreamSeq = attribute.Key("keyrelay.stream_seq")
	// Duplicate marks an event confirmed again from the ledger.
	Duplicate = attribute.Key("keyrelay.duplicate")
	// Op is the provider operation: put, delete, update_tags.
	Op = attribute.Key("keyrelay.provider.op")
	// Try is the 1-based try of a provider call within one delivery.
	Try = attribute.Key("keyrelay.provider.try")
	// ErrorKind classifies a failure without its message: retryable,
	// throttled, permanent, not_found, timeout, canceled, breaker_open,
	// own_limit.
	ErrorKind = attribute.Key("keyrelay.error.kind")
	// OutboxSeq is the outbox row's seq.
	OutboxSeq = attribute.Key("keyrelay.outbox.seq")
	// MessagingSystem is "nats" (OpenTelemetry semantic conventions).
	MessagingSystem = attribute.Key("messaging.system")
)
