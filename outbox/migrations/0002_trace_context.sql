-- keyrelay transactional outbox, version 2: the inserting transaction's
-- trace context.
--
-- A gateway that traces may store the W3C trace context of the transaction
-- that inserts the row; the relay's span for the row then continues that
-- trace, and so do the worker's spans and the event's confirmation:
--
--   INSERT INTO keyrelay.keyrelay_outbox (payload, traceparent, tracestate)
--   VALUES ($1::jsonb, $2, $3);
--
-- Both columns are optional (outbox.Enqueue fills them from its context's
-- span). The relay treats them as untrusted: a traceparent that is not a
-- valid W3C trace context, or either value longer than 512 characters, is
-- ignored and the row is published under a new trace, never refused.
-- Nullable columns without a default: adding them rewrites nothing.

ALTER TABLE {{schema}}.keyrelay_outbox
    ADD COLUMN traceparent text,
    ADD COLUMN tracestate  text;
