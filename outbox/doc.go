// Package outbox is keyrelay's transactional outbox on PostgreSQL: a
// gateway inserts an event row in the same transaction that changes a
// key, and the relay (`keyrelay outbox relay`) publishes committed rows to
// the JetStream stream KEYRELAY_EVENTS.
//
// # Table
//
// Migrate (`keyrelay outbox migrate`) creates <schema>.keyrelay_outbox
// (default schema "keyrelay") from the SQL files embedded under
// migrations/, recorded in <schema>.keyrelay_schema_migrations. A gateway
// in any language inserts only the payload, the event envelope as JSON:
//
//	INSERT INTO keyrelay.keyrelay_outbox (payload) VALUES ($1::jsonb)
//
// optionally with the transaction's W3C trace context in the columns
// traceparent and tracestate (migration 2), which the relay's span for the
// row continues.
//
// Go gateways call Enqueue with their pgx transaction.
//
// # Guarantees
//
//   - An event is published if and only if its transaction commits: rows of
//     rolled-back transactions never become visible, and a committed row
//     stays pending until JetStream acknowledged it (PubAck).
//   - No committed row is skipped. The relay reads only rows whose txid is
//     below the xmin of its snapshot, so it never reads past a transaction
//     that is still running, and it tracks state per row (pending, sent,
//     failed), not a high-water mark.
//   - Each row is published with Nats-Msg-Id = its event id. A relay that
//     dies between PubAck and marking the row sent leaves it pending; the
//     next owner publishes it again and the stream drops the duplicate,
//     provided that happens within the stream's duplicate window
//     (streams.duplicate_window, default 10m). After the window the copy is
//     stored again with the same id and generation, and workers confirm it
//     as a duplicate. A relay that lives but cannot mark rows after their
//     PubAck (PostgreSQL down or stuck) remembers them and marks them on
//     its next session instead of publishing them again.
//   - Per key, messages enter the stream in (txid, seq) order, with at most
//     one message per key awaiting its PubAck, so a retry never overtakes
//     an earlier row of its key. An empty generation is set to the row's
//     seq (values sealed before insert need a generation: NextGeneration).
//   - A row that can never be published (invalid per events.Decode, too
//     large, sealed without generation) is marked failed with a reason
//     that never contains a secret value, and does not hold back later
//     rows, including later rows of its key: their higher generation
//     keeps workers correct, and the failure is counted and listed by
//     `keyrelay outbox status`.
//   - Any number of relays may run: rows hash (by team and key) into
//     Partitions partitions, each owned by one relay through a session
//     advisory lock; relays share them evenly and take over a dead relay's
//     partitions within a rebalance interval. A slow relay delays only its
//     own partitions.
//   - NATS unavailable: rows wait (nothing is handed to a disconnected
//     client, whose reconnect buffer would send it whenever it reconnects),
//     the relay retries with exponential backoff and reports not ready; after Config.StandbyAfter without a
//     NATS connection it hands its partitions to the other relays. PostgreSQL unavailable: the relay drops
//     its session (and partitions), reconnects with backoff and reports not
//     ready meanwhile.
//
// # Costs
//
// The xmin horizon is cluster-wide: any long write transaction in the
// PostgreSQL cluster holds back every row committed after it began. Keep
// gateway transactions short and watch keyrelay_outbox_oldest_pending_age_seconds.
// Each relay holds two connections; the session one needs session
// semantics (advisory locks, LISTEN), so connect directly or through a
// session-mode pooler, not a transaction-mode one.
//
// See docs/outbox.md for the design and its reasons.
package outbox
