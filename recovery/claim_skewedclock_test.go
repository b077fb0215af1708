package recovery

import (
	"context"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/worker"
)

// TestScannedClaimStandsWhateverTheLocalClock: restore claims each key
// starting from the entry its scan read (runAt), with no read of its own.
// A worker's live claim in that entry, its deadline from the worker's
// clock, is read against the server's time (the stored times the scan
// saw) as well as this process's clock, ten minutes ahead here: the work
// starts once the claim has ended, not at once beside the worker, and
// without waiting a whole lease for a server time it already knows.
func TestScannedClaimStandsWhateverTheLocalClock(t *testing.T) {
	const claimFor, lease = 1500 * time.Millisecond, 5 * time.Second
	ctx, js, nc := topology(t)
	kv, _ := js.KeyValue(ctx, worker.LedgerBucket)
	until := time.Now().Add(claimFor)
	entry := &worker.LedgerEntry{Generation: 1, EventID: "ev-1", Provider: "local", SecretRef: "a/k",
		Claim: &worker.Claim{EventID: "ev-2", Generation: 2, Worker: "writing-elsewhere", Until: until}}
	if _, err := worker.NewLedger(kv, nc).Put(ctx, "team", "k", entry, 0); err != nil {
		t.Fatal(err)
	}

	// The command's own ledger: it knows the server's time only from its
	// scan.
	ledger := worker.NewLedger(kv, nc)
	var seen *worker.LedgerEntry
	var seenRev uint64
	if err := ledger.All(ctx, func(_ string, e *worker.LedgerEntry, rev uint64) error {
		seen, seenRev = e, rev
		return nil
	}); err != nil || seen == nil {
		t.Fatalf("scan: %+v, %v", seen, err)
	}
	cl := &claimer{ledger: ledger, id: "restore-ahead", lease: lease, now: func() time.Time { return time.Now().Add(10 * time.Minute) }}
	var started time.Time
	act, why, err := cl.runAt(ctx, "team", "k", seen, seenRev, func(*worker.LedgerEntry) string { return "" },
		func(context.Context, *worker.LedgerEntry, time.Time) (*worker.LedgerEntry, string, error) {
			started = time.Now()
			return nil, ActionWritten, nil
		})
	if err != nil || act != ActionWritten {
		t.Fatalf("action %q (%s), err %v", act, why, err)
	}
	if started.Before(until) {
		t.Errorf("the work started %v before the worker's claim ended", until.Sub(started).Round(time.Millisecond))
	}
	if late := started.Sub(until); late > lease/2 {
		t.Errorf("the work started %v after the claim ended: the scan's stored times were not taken as the server's", late.Round(time.Millisecond))
	}
}
