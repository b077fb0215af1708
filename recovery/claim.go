package recovery

import (
	"context"
	"errors"
	"time"

	"github.com/keyrelay/keyrelay/internal/ctxtime"
	"github.com/keyrelay/keyrelay/settings"
	"github.com/keyrelay/keyrelay/worker"
)

// claimer takes keys' ledger claims the way a worker does, so live workers
// wait while recovery writes a key and recovery never writes over a
// generation a worker applied meanwhile.
type claimer struct {
	ledger *worker.Ledger
	// id names the holder in the claim (shown to workers that wait).
	id string
	// lease bounds how long one key is held.
	lease time.Duration
	// gate, when set, holds the command's claims request: claims are
	// taken only while it is granted, and work ends by its deadline.
	gate *claimsGate
	// now is this process's clock, against which (and the server's time:
	// worker.Ledger.ClaimLeft) another process's claim is judged. Nil:
	// time.Now.
	now func() time.Time
}

// clock is this process's time (now).
func (c *claimer) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

// stands reports whether cl, a claim read from the ledger, still stands.
// Its deadline was written from another process's clock, often another
// machine's than the operator's running the command: it ends only once
// both this process's clock and the server's time have passed it
// (worker.Ledger.ClaimStands), so a command whose clock runs ahead does
// not take a worker's live claim for expired and write beside it.
func (c *claimer) stands(cl *worker.Claim) bool {
	return c.ledger.ClaimStands(cl, c.clock())
}

// work is what runs under a key's claim: it gets the fresh entry and the
// deadline its provider calls must end by, and returns the entry to commit
// on release (nil: release unchanged), the action done and its error.
type work func(ctx context.Context, e *worker.LedgerEntry, deadline time.Time) (next *worker.LedgerEntry, action string, err error)

// errReleaseLost: the claim could not be released (the lease ran out and a
// worker took the key); the worker decides the key now.
var errReleaseLost = errors.New("release the claim (the work was done)")

// whyClaimed starts the reason of a key skipped because someone else held
// its claim through three leases.
const whyClaimed = "claimed by "

// run claims team/key, checks the fresh entry with check (a non-empty
// reason skips the key), runs w and releases the claim, committing what w
// returns. A claim held by someone else is waited out, up to three leases.
func (c *claimer) run(ctx context.Context, team, key string, check func(*worker.LedgerEntry) string, w work) (action, why string, err error) {
	return c.runAt(ctx, team, key, nil, 0, check, w)
}

// runAt is run starting from entry seen, read at revision seenRev (by a
// scan), so that the first claim needs no read: if the key changed since,
// the claim conflicts and runAt reads it afresh, as run does.
func (c *claimer) runAt(ctx context.Context, team, key string, seen *worker.LedgerEntry, seenRev uint64, check func(*worker.LedgerEntry) string, w work) (action, why string, err error) {
	for attempt := 0; ; attempt++ {
		e, rev := seen, seenRev
		if seen == nil || seenRev == 0 || attempt > 0 {
			if e, rev, err = c.ledger.Get(ctx, team, key); err != nil {
				return "", "read the ledger", err
			}
		}
		if e == nil {
			return ActionSkipped, "the ledger entry is gone", nil
		}
		if why := check(e); why != "" {
			return ActionSkipped, why, nil
		}
		if now := c.clock(); c.ledger.ClaimStands(e.Claim, now) {
			if attempt >= 3 {
				return ActionSkipped, whyClaimed + e.Claim.Worker, nil
			}
			// Until its end by both clocks (stands); a lease when the
			// server's time is not known yet.
			wait := c.lease
			if left, known := c.ledger.ClaimLeft(e.Claim, now); known {
				wait = min(left+10*time.Millisecond, c.lease)
			}
			if err := ctxtime.Sleep(ctx, wait); err != nil {
				return "", "claim", err
			}
			continue
		}
		granted, err := c.gate.wait(ctx)
		if err != nil {
			return "", "wait for the writer lease holder to claim too", err
		}
		claimed := *e
		// Taken is the clock reading Until comes from: readers count the
		// lease (Until − Taken) from the entry's stored time, so a machine
		// whose clock runs behind the servers' does not write a claim that
		// ends early for the workers.
		taken := time.Now()
		// Readers end a claim MaxClaimLease after it was stored at the
		// latest: a longer lease would be cut short under the work.
		lease := min(c.lease, settings.MaxClaimLease)
		until := taken.Add(lease)
		deadline := until.Add(-lease / 10)
		if !granted.IsZero() && granted.Before(deadline) {
			// The work ends with the claims request, unless renewed by then.
			deadline = granted
		}
		claimed.Claim = &worker.Claim{EventID: "recovery:" + e.EventID, Generation: e.Generation, Worker: c.id, Until: until, Taken: taken}
		nrev, err := c.ledger.Put(ctx, team, key, &claimed, rev)
		if errors.Is(err, worker.ErrLedgerConflict) {
			continue
		}
		if err != nil {
			return "", "claim", err
		}
		next, act, werr := w(ctx, &claimed, deadline)
		if next == nil {
			next = &claimed
		}
		released := *next
		released.Claim = nil
		if _, err := c.ledger.Put(context.WithoutCancel(ctx), team, key, &released, nrev); err != nil && werr == nil {
			return "", errReleaseLost.Error(), err
		}
		if werr != nil {
			return "", act, werr
		}
		return act, "", nil
	}
}
