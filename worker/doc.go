// Package worker consumes keyrelay's events stream through one durable pull
// consumer shared by every process, and turns each event into a provider
// write, a ledger entry and exactly one confirmation.
//
// Files by concept: topology.go (streams, buckets, the consumer), worker.go
// (Config, Run: consuming, concurrency, shutdown), process.go (one delivery:
// decode, verdict, ack/nak/term, DLQ), keyevents.go (key events: claim,
// write, commit), teams.go (team settings and settings-before-keys),
// ledger.go, confirm.go, dlq.go, retry.go, metrics.go, jspub.go.
//
// # Guarantees
//
//   - An older generation never overwrites a newer value: the ledger records
//     the highest applied generation per key and is only changed by
//     compare-and-set; two workers never write the same key at once (a
//     claim with a lease shorter than AckWait, and an in-process lock).
//   - A redelivered or republished event never creates a second provider
//     version: providers receive the event id as an idempotency key.
//   - Every event gets exactly one confirmation: the confirmations stream
//     keeps one message per event subject and refuses a second.
//   - A key event is written with its team's settings as of the team's last
//     settings message before it, whichever worker handled that message.
//   - A malformed or refused event is confirmed rejected with a reason and
//     kept in the DLQ; it never blocks the stream. Values never reach logs,
//     errors, metrics, confirmations or the DLQ.
//   - An unfinished write is never acknowledged: shutdown naks it.
package worker
