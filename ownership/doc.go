// Package ownership gives one process at a time the right to act on a
// resource: a writer lease, held as one record in a JetStream key-value
// bucket and renewed by compare-and-set.
//
// The worker runs on it in ownership mode "exclusive" (worker.ownership,
// docs/architecture.md, "Writer leases"): the process that holds the lease
// needs no per-event claim in the ledger, because no other process writes
// keys while the lease stands; it stores each write's intent in the
// IntentLog instead, and the recovery commands reach it through claims
// requests.
//
// # Guarantees
//
//   - At most one holder acts at a time. A holder acts only before its
//     deadline: the send time of its last successful renewal plus nine
//     tenths of its TTL, read from the monotonic clock. Another process
//     takes the lease over only after it has seen the record unchanged (the
//     same revision) for a whole TTL by its own monotonic clock, and then
//     only by compare-and-set at that revision. The renewal that wrote that
//     revision was sent before the record could be seen, so the old
//     holder's deadline has passed by the time anyone else can act. The
//     assumption is that clocks advance at the same rate (not that they
//     agree); the tenth of the TTL left over covers drift and an action
//     that ends slightly after its context's deadline. A contender counts
//     the time the record stood still up to when its last read was sent,
//     not answered, so a slow answer cannot stretch it. Holders must bound
//     every action by the deadline (context.WithDeadline).
//   - No wall-clock time is trusted, in the record or elsewhere. The TTL a
//     record states can lengthen a contender's wait (up to MaxRecordTTL),
//     never shorten it below the contender's own TTL.
//   - A record that cannot be read (garbage, too large, a holder name that
//     is not printable) counts as held by someone unknown: it is waited out
//     for a TTL like any other and then replaced. A record that is missing
//     (never written, deleted or purged by hand) is waited out too, so a
//     holder that is still acting is never overlapped because its record
//     was removed under it. A holder that stops cleanly (Run's context
//     ends) writes a released record, which the next contender takes at
//     once. (A claims request, below, takes a missing record as no
//     holder, so that recovery on a deployment without leases does not
//     wait: deleting the record by hand while a holder acts is outside
//     what this package guards against.)
//   - Trouble with NATS never extends a lease: a holder whose renewals fail
//     stops acting at its deadline and keeps trying; when a renewal
//     succeeds again at the same revision, nobody else acted meanwhile and
//     it goes on under the same epoch.
//   - A renewal whose reply was lost may still have been stored. A holder
//     that then finds its own record (its holder name and nonce) at a newer
//     revision adopts it, with a deadline counted from the first renewal
//     sent since its last confirmed one: a lower bound on the stored one's
//     send time.
//   - The epoch changes whenever the lease changes hands.
//
// # Claims requests
//
// Processes that write keys by claiming them (the recovery commands)
// cannot be seen by a holder that writes without claims. A Request asks
// the holder to claim too. The holder begins no claimless action
// (Lease.Begin) while a request stands, and acknowledges the request only
// when the claimless actions under way have ended or passed their
// deadline. Request.Granted returns once the current holder has
// acknowledged this life of the request, or no live holder exists; a holder
// reads the requests after acquiring and before its first claimless
// action. Both reads are current on a replicated bucket: the requester
// reads the lease record from the stream's leader (RequestConfig.Conn),
// or checks that the replica it read holds its own last write, and the
// holder checks the same of its read of the requests. A request renewed by nobody for its TTL is forgotten; its
// requester's own deadline has passed by then. Grant.Generation changes
// whenever claimless acting resumes (after an acquisition, a lapse, or the
// end of the requests): state a holder built from what others write (a
// cache of the ledger) is stale in a later generation.
//
// # Intents
//
// A claim also records that an event may be writing its key, which a
// process taking over after a crash needs. A claimless writer appends the
// same fields to an IntentLog before each provider call. Every intent
// appended while up to four batches are in flight shares one stored message
// (group commit), and Append returns only once the intent is stored.
// ReadIntents gives a new holder its predecessors' intents, and counts the
// batches it cannot read, so that its caller can hold every key in doubt
// for as long as a lost intent could matter.
package ownership
