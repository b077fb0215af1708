package recovery

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/worker"
)

// topology starts a nats-server with keyrelay's topology for one test
// (a minute at most).
func topology(t *testing.T) (context.Context, jetstream.JetStream, *nats.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	srv := testenv.StartNATS(t)
	nc, err := nats.Connect(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	if err := worker.EnsureTopology(ctx, js, worker.TopologyConfig{Replicas: 1, DuplicateWindow: time.Minute, AckWait: 5 * time.Second, MaxAckPending: 64}); err != nil {
		t.Fatal(err)
	}
	return ctx, js, nc
}

// TestClaimAtAScannedRevision: a claim taken at the revision a scan read
// needs no read when the key is unchanged, and when a worker changed it
// since, the claim conflicts and the fresh entry is the one checked and
// worked on: what the scan saw is never written back over it.
func TestClaimAtAScannedRevision(t *testing.T) {
	ctx, js, nc := topology(t)
	kv, _ := js.KeyValue(ctx, worker.LedgerBucket)
	ledger := worker.NewLedger(kv, nc)
	cl := &claimer{ledger: ledger, id: "test", lease: 5 * time.Second}
	gen1 := &worker.LedgerEntry{Generation: 1, EventID: "ev-1", Provider: "local", SecretRef: "a/k"}
	rev1, err := ledger.Put(ctx, "team", "k", gen1, 0)
	if err != nil {
		t.Fatal(err)
	}

	var seenGen []uint64
	check := func(e *worker.LedgerEntry) string {
		seenGen = append(seenGen, e.Generation)
		if e.Generation != 1 {
			return "newer"
		}
		return ""
	}
	worked := 0
	w := func(_ context.Context, e *worker.LedgerEntry, _ time.Time) (*worker.LedgerEntry, string, error) {
		worked++
		if e.Claim == nil || e.Claim.Worker != "test" {
			t.Errorf("work ran without the claim: %+v", e.Claim)
		}
		return nil, ActionWritten, nil
	}
	// Unchanged: claimed at the scanned revision, worked, released.
	act, _, err := cl.runAt(ctx, "team", "k", gen1, rev1, check, w)
	if err != nil || act != ActionWritten || worked != 1 {
		t.Fatalf("unchanged key: action %q, err %v, worked %d", act, err, worked)
	}
	e, rev2, _ := ledger.Get(ctx, "team", "k")
	if e.Claim != nil || e.Generation != 1 {
		t.Fatalf("after the release: %+v", e)
	}
	// A worker applies generation 2; the scan's view (generation 1 at rev2)
	// is now stale.
	gen2 := *e
	gen2.Generation, gen2.EventID = 2, "ev-2"
	if _, err := ledger.Put(ctx, "team", "k", &gen2, rev2); err != nil {
		t.Fatal(err)
	}
	seenGen = nil
	act, why, err := cl.runAt(ctx, "team", "k", e, rev2, check, w)
	if err != nil || act != ActionSkipped || why != "newer" || worked != 1 {
		t.Fatalf("changed key: action %q (%s), err %v, worked %d", act, why, err, worked)
	}
	if len(seenGen) != 2 || seenGen[0] != 1 || seenGen[1] != 2 {
		t.Errorf("checked generations %v, want the scan's then the fresh one: [1 2]", seenGen)
	}
	if e, _, _ := ledger.Get(ctx, "team", "k"); e.Generation != 2 || e.Claim != nil {
		t.Errorf("the ledger after: %+v, want generation 2 unclaimed", e)
	}
}
