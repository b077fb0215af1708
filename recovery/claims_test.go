package recovery

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/ownership"
	"github.com/keyrelay/keyrelay/worker"
)

// TestClaimsWaitForTheLeaseHolder: a recovery command claims keys only
// once the writer lease's holder (a worker running exclusive) has stopped
// writing without claims: the command waits while the holder's claimless
// action is under way, the holder begins none while the command works, and
// resumes (a new generation) once the command's gate is closed.
func TestClaimsWaitForTheLeaseHolder(t *testing.T) {
	ctx, js, nc := topology(t)
	okv, _ := js.KeyValue(ctx, worker.OwnershipBucket)
	lease, err := ownership.New(okv, ownership.Config{Key: worker.WriterLeaseKey, Holder: "holder-1", TTL: 400 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	lctx, stopLease := context.WithCancel(ctx)
	defer stopLease()
	go func() { _ = lease.Run(lctx) }()
	var g0 ownership.Grant
	var done func()
	for ok := false; !ok; {
		if g0, done, ok = lease.Begin(); !ok {
			time.Sleep(5 * time.Millisecond)
		}
	}

	lkv, _ := js.KeyValue(ctx, worker.LedgerBucket)
	ledger := worker.NewLedger(lkv, nc)
	if _, err := ledger.Put(ctx, "team", "k", &worker.LedgerEntry{Generation: 1, EventID: "ev-1"}, 0); err != nil {
		t.Fatal(err)
	}
	gate := newClaimsGate(okv, "migrate-host.example-1-abc", nil)
	cl := &claimer{ledger: ledger, id: "test", lease: 5 * time.Second, gate: gate}
	var worked, holderActed atomic.Int32
	ran := make(chan error, 1)
	go func() {
		_, _, err := cl.run(ctx, "team", "k", func(*worker.LedgerEntry) string { return "" },
			func(_ context.Context, _ *worker.LedgerEntry, deadline time.Time) (*worker.LedgerEntry, string, error) {
				worked.Add(1)
				if time.Until(deadline) <= 0 {
					t.Errorf("work given a deadline in the past")
				}
				// While the command works, the holder begins nothing
				// without claims.
				for range 20 {
					if _, d, ok := lease.Begin(); ok {
						d()
						holderActed.Add(1)
					}
					time.Sleep(10 * time.Millisecond)
				}
				return nil, ActionWritten, nil
			})
		ran <- err
	}()
	time.Sleep(300 * time.Millisecond)
	if worked.Load() != 0 {
		t.Fatal("the command worked while the holder's claimless action was under way")
	}
	done() // the holder's action ends; it acknowledges the request
	select {
	case err := <-ran:
		if err != nil || worked.Load() != 1 {
			t.Fatalf("run: %v, worked %d", err, worked.Load())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the command was never granted")
	}
	if n := holderActed.Load(); n != 0 {
		t.Fatalf("the holder began %d claimless actions while the command worked", n)
	}
	gate.close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		g, d, ok := lease.Begin()
		if ok {
			d()
			if g.Generation == g0.Generation {
				t.Fatalf("claimless acting resumed in the same generation %d: the holder's cache would be trusted", g.Generation)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the holder never resumed claimless acting after the command ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
