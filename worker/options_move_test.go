package worker_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/recovery"
	"github.com/keyrelay/keyrelay/worker"
)

// placeWorker runs, until the test ends, a worker that tells onPlace of
// every change of a team's place (Deps.OnPlaceChange), as `keyrelay serve`
// does with keyrelay.migration.on_settings_change.
func placeWorker(b *bundle, onPlace func(ctx context.Context, team string, from, to worker.TeamPlace) error) *worker.Worker {
	b.t.Helper()
	w, err := worker.New(b.ctx, worker.Config{Concurrency: 4, AckWait: b.topo.AckWait, MaxDeliver: b.topo.MaxDeliver, CallTimeout: time.Second,
		ClaimLease: 3 * time.Second, RetryInitial: 5 * time.Millisecond, RetryMax: 100 * time.Millisecond, ShutdownGrace: 2 * time.Second},
		worker.Deps{JS: b.js, Settings: b.cfg, Registry: b.reg, Opener: b.kr, Logger: b.log, Metrics: b.metrics, OnPlaceChange: onPlace})
	if err != nil {
		b.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	b.t.Cleanup(func() { cancel(); <-done })
	return w
}

// TestOptionsChangeOnTheSameBackendCleansUpTheOldCopies: a team on a
// backend keyed by a team option (as Vault's namespace or mount) changes
// only that option. Its keys' copies under the old option must go after
// the grace period, as after a move to another backend: the rewritten
// key's old copy (recorded in its ledger entry by the worker) and the
// copy of a key never rewritten, which the sweeper moves to the new
// option first. The change used to request nothing (the backend's name
// had not changed), so the sweeper never visited the team and the old
// values stayed in the old namespace until a manual cleanup.
//
// The settings event's first request is followed by an error (as if the
// process had died right after it): its redelivery asks again, which
// must leave the recorded request as it is (no second one, no reset).
func TestOptionsChangeOnTheSameBackendCleansUpTheOldCopies(t *testing.T) {
	b := setup(t, setupOptions{})
	ns := withNamespaces(b)
	rkv, err := b.js.KeyValue(b.ctx, worker.RecoveryBucket)
	if err != nil {
		t.Fatal(err)
	}
	lkv, err := b.js.KeyValue(b.ctx, worker.LedgerBucket)
	if err != nil {
		t.Fatal(err)
	}
	m := recovery.Migrations{KV: rkv, JS: b.js}
	const team = "team-o"
	var mu sync.Mutex
	var toNSB []uint64 // the record's revision after each request for ns-b
	w := placeWorker(b, func(ctx context.Context, team string, from, to worker.TeamPlace) error {
		if err := m.RequestPlace(ctx, team, to); err != nil {
			return err
		}
		if to.Placement == nil || to.Placement.TeamOptions["namespace"] != "ns-b" {
			return nil
		}
		_, rev, err := m.Get(ctx, team)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		toNSB = append(toNSB, rev)
		if len(toNSB) == 1 {
			return errors.New("the process stopped after its request")
		}
		return nil
	})
	sw := recovery.NewSweeper(recovery.Deps{Ledger: worker.NewLedger(lkv, b.nc), Settings: b.cfg, Registry: b.reg,
		Opener: b.kr, TeamSettings: func(team string) *events.TeamSettings { return w.Teams().Cached(team).Settings }},
		m, recovery.SweeperConfig{Grace: 300 * time.Millisecond, ClaimLease: time.Second})
	// sweepOut sweeps until the team's migration record is gone.
	sweepOut := func(what string) {
		t.Helper()
		waitWithin(t, 30*time.Second, what, func() bool {
			if err := sw.Sweep(b.ctx); err != nil {
				t.Logf("sweep: %v", err)
			}
			r, _, err := m.Get(b.ctx, team)
			return err == nil && r == nil
		})
	}

	n := 0
	// The team moves to the namespaced backend (a move of its own, which
	// the sweeper finishes), and writes two keys in ns-a.
	b.steps(&n, b.settingsEvent(team, 1, nsSettings("ns-a")), b.keyEvent(events.KeyCreated, team, "key-1", 1, "sk-1"),
		b.keyEvent(events.KeyCreated, team, "key-2", 1, "sk-2"))
	sweepOut("the move to the namespaced backend finished")
	ref1, ref2 := "litellm/"+team+"/key-1", "litellm/"+team+"/key-2"
	if !ns.has(b.ctx, "ns-a", ref1) || !ns.has(b.ctx, "ns-a", ref2) {
		t.Fatal("the keys were not written to ns-a")
	}

	// Only the namespace changes; key-1 is rewritten, key-2 is not.
	b.steps(&n, b.settingsEvent(team, 2, nsSettings("ns-b")))
	r, rev, err := m.Get(b.ctx, team)
	if err != nil || r == nil {
		t.Fatalf("no move requested after the team changed its namespace on the same backend (record %+v, %v)", r, err)
	}
	mu.Lock()
	revs := append([]uint64(nil), toNSB...)
	mu.Unlock()
	if len(revs) != 2 || revs[0] != revs[1] || rev != revs[0] || r.State != recovery.MigrationRequested {
		t.Fatalf("record after the redelivered request: %+v at revision %d, revisions after each request %v; want one request, left as it was",
			r, rev, revs)
	}
	if r.To != nsBackend || r.Placement == nil || r.Placement.TeamOptions["namespace"] != "ns-b" {
		t.Fatalf("request %+v (placement %+v); want %s with namespace ns-b", r, r.Placement, nsBackend)
	}
	b.steps(&n, b.keyEvent(events.KeyRotated, team, "key-1", 2, "sk-1b"))
	sweepOut("the move to ns-b and the cleanup of ns-a finished")

	for key, want := range map[string]string{"key-1": "sk-1b", "key-2": "sk-2"} {
		ref := "litellm/" + team + "/" + key
		if ns.has(b.ctx, "ns-a", ref) {
			t.Errorf("%s: the old copy is still in ns-a after the sweeper finished", key)
		}
		sec, err := ns.store("ns-b").Get(b.ctx, ref, "")
		if err != nil || string(sec.Value) != want {
			t.Errorf("%s: not in ns-b at its newest value after the sweeper finished: %v", key, err)
		}
		le, _, err := b.ledgerGet(team, key)
		if err != nil || le.Placement == nil || le.Placement.TeamOptions["namespace"] != "ns-b" || len(le.Sources) != 0 {
			t.Errorf("%s: ledger %+v, %v; want it placed in ns-b with no copy left to delete", key, le, err)
		}
	}
}
