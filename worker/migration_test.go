package worker_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/worker"
)

// TestWorkerRecordsTheCopyLeftByAMove: after a team-settings event moves a
// team to another backend, OnPlaceChange is told once (from, to), and a
// rotation writes the new backend and records the copy left on the old
// one in the ledger (recovery deletes it after the grace period); a
// settings event that does not change the backend calls nothing.
func TestWorkerRecordsTheCopyLeftByAMove(t *testing.T) {
	b := setup(t, setupOptions{backends: []string{"hashicorp_vault"}})
	var mu sync.Mutex
	var moves [][3]string
	w, err := worker.New(b.ctx, worker.Config{Concurrency: 4, AckWait: b.topo.AckWait, MaxDeliver: b.topo.MaxDeliver, CallTimeout: time.Second,
		ClaimLease: 3 * time.Second, RetryInitial: 5 * time.Millisecond, RetryMax: 100 * time.Millisecond, ShutdownGrace: 2 * time.Second},
		worker.Deps{JS: b.js, Settings: b.cfg, Registry: b.reg, Opener: b.kr, Logger: b.log, Metrics: b.metrics,
			OnPlaceChange: func(_ context.Context, team string, from, to worker.TeamPlace) error {
				mu.Lock()
				defer mu.Unlock()
				moves = append(moves, [3]string{team, from.Backend, to.Backend})
				return nil
			}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	b.publish(b.keyEvent(events.KeyCreated, "team-m", "key-1", 1, "sk-m-1"))
	b.confirmations(1, 30*time.Second)
	b.publish(b.settingsEvent("team-m", 1, &events.TeamSettings{Backend: "hashicorp_vault"}))
	b.confirmations(2, 30*time.Second)
	b.publish(b.settingsEvent("team-m", 2, &events.TeamSettings{Backend: "hashicorp_vault", Description: "same backend"}))
	b.publish(b.keyEvent(events.KeyRotated, "team-m", "key-1", 2, "sk-m-2"))
	b.confirmations(4, 30*time.Second)

	mu.Lock()
	got := append([][3]string(nil), moves...)
	mu.Unlock()
	if len(got) != 1 || got[0] != [3]string{"team-m", "local", "hashicorp_vault"} {
		t.Fatalf("OnPlaceChange calls: %v, want one local -> hashicorp_vault", got)
	}
	if v := b.value("hashicorp_vault", "litellm/team-m/key-1"); v != "sk-m-2" {
		t.Fatalf("new backend holds %q", v)
	}
	e, _, err := w.Ledger().Get(b.ctx, "team-m", "key-1")
	if err != nil {
		t.Fatal(err)
	}
	if e.Provider != "hashicorp_vault" || len(e.Sources) != 1 || e.Sources[0].Backend != "local" || e.Sources[0].SecretRef != "litellm/team-m/key-1" {
		t.Fatalf("ledger: provider %q sources %+v", e.Provider, e.Sources)
	}
	if v := b.value("local", "litellm/team-m/key-1"); v != "sk-m-1" {
		t.Fatalf("the old copy should stay until the grace period ends: %q", v)
	}
}
