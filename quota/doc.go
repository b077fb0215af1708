// Package quota shares a backend's request quota between every keyrelay
// process calling the same account, project or vault (AWS Secrets Manager:
// 50 writes/s per account and region; Google Secret Manager: 600 writes/min
// per project; Azure Key Vault: 300 writes per 10 s per vault), so that N
// `keyrelay serve` processes together stay under it instead of sending N
// times it. A Manager implements providers.Quotas; providers call Wait
// before each call counted against a quota.
//
// # Members and records
//
// A process is a member of each quota it has called Wait for. Members
// coordinate through one JetStream KV bucket (KEYRELAY_QUOTAS; see
// EnsureBucket): each member writes, every Heartbeat (500 ms), one record
// per quota under <quota token>.<member token>, holding
//
//   - limit: perSecond × Margin (0.95), the rate the members share; the
//     members use the smallest limit any live member announces;
//   - demand: the rate it wants: the limit while its callers have to wait,
//     else its measured rate over the last 2 s × Headroom (1.2), at least
//     MinDemand (1/s);
//   - seen: the bucket sequence up to which it has applied what it
//     watched (its acknowledgement, below).
//
// Quota names and member ids are arbitrary strings, mapped injectively to
// key tokens: strings of letters, digits, '_', '-' and '/' are kept as
// they are, any other becomes "=" and its base64url form.
//
// The bucket's MaxAge is the TTL (3 s) and it keeps limit markers, so the
// server itself removes the record of a member that stopped writing (a
// killed process) TTL after its last heartbeat and tells every watcher.
// Close deletes the member's records at once.
//
// Every member watches the whole bucket. Because a watch delivers the
// bucket's writes in sequence order, every member goes through the same
// sequence of views, each a prefix of the bucket's history.
//
// # Shares
//
// From a view, every member computes the same max-min fair allocation of
// the limit between the members in it, by demand: a member wanting less
// than an equal share of what is left gets what it wants, the rest is
// split evenly among the others, and when every demand is met what is left
// is spread evenly. A member not in the view (it has not yet seen its own
// first record come back) gets nothing.
//
// A member's share, the rate its local token bucket runs at, follows its
// allocation with one rule: lower at once, raise only when acknowledged.
// Each change of its allocation is a step (the view's sequence, the
// allocation, the other members of that view). A step is granted once
// every other member of that view is gone or has published seen >= the
// step's sequence, i.e. has applied that view and so has already lowered
// its own share for it; it settles Horizon (250 ms) later. The share is the
// smallest allocation among the steps from the newest settled one on.
// Members whose allocation changed because another member joined, left or
// changed its demand write their record early (within 50 ms), so a raise
// waits for one round trip through NATS plus the Horizon, not for
// heartbeats.
//
// Joining is the two-phase case of this rule: a new member announces
// itself (first record) with nothing; the others lower their shares when
// they see it and acknowledge; it uses its share once all of them have.
// When a member leaves (Close) or dies (TTL), the others raise once they
// have acknowledged each other's view without it.
//
// Locally, the share drives a token bucket with a burst of one second's
// worth rounded down (at least one token), which starts empty. An
// interactive Wait reserves a token at most Horizon ahead (a bulk one
// never reserves: see Priorities); beyond that it sleeps and tries
// again, so that tokens promised at a former, higher share are all due
// within the Horizon of the lowering, before anyone else's raise settles.
//
// # Guarantees
//
// While every live member can read and write the bucket:
//
//   - The shares of all members never sum to more than the limit
//     (perSecond × Margin), at any time, whatever the delays between
//     members, including while members join, leave, die or change their
//     demand. The argument: let K be the smallest view any live member is
//     at; each member's newest settled step is at or before K (every other
//     member acknowledged it), so each member's share is at most its
//     allocation in view K, and the allocations of one view sum to the
//     limit. It assumes only that the members' clocks run at the same rate
//     (for the Horizon), not that they agree, nor any bound on delays.
//     Tokens reserved at a former share are due within the Horizon, before
//     any raise that depends on the lowering settles.
//   - Bursts: each member's burst is at most its share × 1 s, so the
//     members' bursts sum to at most the limit (as long as each share is at
//     least one token per second, i.e. no more members than the limit per
//     second; below that each member still needs a burst of one). The
//     members' calls together therefore conform to a token bucket of the
//     limit with a burst of the limit, within the provider's bucket of
//     perSecond with a burst of one second's worth.
//   - With demand, the members together get the limit: a dead member's
//     share returns to the others TTL after its last heartbeat plus a round
//     trip and the Horizon (measured: about 3.2 s with the defaults); a
//     closed one's at once (about 0.3 s).
//   - A member whose demand is met gets it; the others split the rest.
//     With the Headroom (1.2) and the rounding of demands (to a 128th of
//     the limit) a light member is allocated up to 1.2 × its rate plus
//     1/128 of the limit, which the others do not get.
//
// # NATS slow or down
//
// Wait never talks to NATS: it only reads the member's local state, so it
// never fails or blocks because of NATS. A member that has not seen one of
// its heartbeats come back through its watch for StaleAfter (1.5 s), or
// whose watch stopped delivering for that long, is stale: its share
// becomes the conservative share, limit / (other members last seen + 2)
// (room for itself and one member that may have joined unseen), and never
// more than the share it held, if it held one. A quota first used while
// stale gets the conservative share at once. The watch is re-created while
// stale. When a heartbeat comes back again, the member holds its
// conservative share until the others acknowledge its current view, then
// follows its allocation.
//
// StaleAfter plus one Heartbeat is less than the TTL, so a member cut off
// from NATS has fallen back before the others drop its record. What is not
// guaranteed: once they have dropped it (TTL), the others share the whole
// limit while the cut-off member still takes its conservative share, so
// during a partition that outlives the TTL the members together may take
// up to the limit plus limit / (n + 1) per cut-off member (n: members it
// last saw). When NATS is down for everyone, every member is stale and
// their conservative shares sum to at most the limit (n members at
// limit / (n + 1)), one unseen newcomer included.
//
// Waiting. A member that joins waits for the others' acknowledgements: one
// round trip through NATS and the Horizon (about 0.3 s), before its first
// token (which, the bucket starting empty, comes 1/share later). A member
// that is partitioned but not yet dropped blocks the raises that need its
// acknowledgement until the TTL drops it. If NATS is slow when a member
// joins, its first Wait waits at most until it goes stale (StaleAfter and
// a heartbeat) and then uses the conservative share.
//
// # Deadlines
//
// Wait mirrors providers.WaitTokens: when the token (or, while the member
// has no share yet, its estimated arrival) would not leave the call a
// quarter of the time to ctx's deadline (providers.TokenInTime), it takes
// none and returns at once the wait needed with an
// error wrapping providers.ErrThrottled, so a provider can fail with a
// Throttled error whose RetryAfter is that wait. A context ended while
// waiting returns its error and gives the reserved token back. Bulk calls
// compute their wait as described under Priorities.
//
// # Priorities
//
// Within a member, calls are served by the providers.Priority on their ctx:
// the worker marks its bulk lane's calls providers.PriorityBulk; every
// other call is interactive. The bulk lane must never delay the
// interactive one:
//
//   - An interactive call takes any token of the bucket, or reserves one
//     at most Horizon ahead, as above.
//   - A bulk call takes a token only when no interactive call of this
//     member is blocked on the same quota (sleeping, or holding a
//     reservation not yet due), only one available now (it never reserves
//     ahead), and never one of the bucket's last reserve tokens.
//   - The reserve is a tenth of the burst rounded down, at least one token
//     and at most the burst minus one: 1 token for shares from 2/s to
//     19.9/s, 2 from 20/s, 4 for AWS's 47.5/s held by one member; none
//     below 2/s (burst 1: a reserve would leave bulk calls nothing).
//   - Bulk calls queue in arrival order. The first sleeps on a timer until
//     the bucket holds 1 + reserve tokens, or, while interactive calls are
//     blocked, until one of them ends (a signal, with a heartbeat as
//     backstop); the others sleep until they are first. Nothing polls:
//     about three passes per bulk token (queue, become first, take).
//
// So an interactive call never waits behind a bulk call: while a bulk job
// saturates the quota, the bucket stays at the reserve, and an interactive
// call arriving finds a token at once as long as no more than reserve of
// them come within the time the bucket takes to refill it (reserve /
// share); beyond that it waits for the refill behind interactive calls
// only: at most one token interval (1/share) for the first of them.
// The reserve is a level the bucket is kept at, not a cut in the rate:
// bulk calls get every token the interactive ones leave. What it costs a
// job is reserve/share before its first token (0.1 s at most from a share
// of 10/s up, one token interval below) and a tenth of the burst after an
// idle spell. A tenth is a judgment call: the gateway's calls on one
// quota come one by one at a few per second, next to shares of tens per
// second, so one to a few tokens cover them, while the job keeps nine
// tenths of the burst.
//
// Bulk calls that wait count as waiting in the demand (see Members and
// records): a member whose job waits announces the whole limit, so the job
// gets the member's full share of the cluster when the gateway is idle.
// Priorities cross members too. A member's record also announces the part
// of its demand only its bulk calls want (Bulk: the demand worked out from
// the bulk calls' own counts, less that of its interactive calls), and the
// allocation serves the interactive parts first, max-min fairly over the
// whole limit, then the bulk parts from what is left, then spreads the
// rest evenly. So a bulk job on one member and the gateway's calls on
// another do not split the quota: the job gets what the gateway's calls
// leave (at least its member's minimum interactive demand). Until its
// first demand window is measured, a quota is wanted whole by the priority
// of the call that joined it. A record without Bulk (an earlier version) is
// all interactive.
//
// Deadlines: a bulk call's wait is the time, at the current share, until
// the bucket holds the reserve plus a token for each interactive call
// sleeping without a reservation, each bulk call queued ahead and itself
// (reservations already made are counted by the bucket). When that wait
// would not leave the call a quarter of the time to ctx's deadline, Wait
// returns it at once with
// providers.ErrThrottled, taking nothing and leaving the queue, so the
// caller retries later. The estimate is made again whenever the call
// wakes (its turn, the bucket's level, a share change); interactive calls
// coming later can still push its token past the deadline, and it then
// returns ctx's error at the deadline.
//
// # Configuration
//
// Every process sharing a bucket must use the same Heartbeat, TTL and
// StaleAfter; EnsureBucket sets the bucket's TTL to the last Config it was
// given. The Margin absorbs what the model leaves out: providers counting
// calls by their arrival, clocks, and calls that are retried.
package quota
