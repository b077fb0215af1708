package worker_test

import (
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
)

// TestWorkerRecordsTheCopyLeftByAMove: after a team-settings event moves a
// team to another backend, OnPlaceChange is told once (from, to), and a
// rotation writes the new backend and records the copy left on the old
// one in the ledger (recovery deletes it after the grace period); a
// settings event that does not change the backend calls nothing.
func TestWorkerRecordsTheCopyLeftByAMove(t *testing.T) {
	b := setup(t, setupOptions{backends: []string{"hashicorp_vault"}})
	w, moves := moveWorker(b, nil)

	b.publish(b.keyEvent(events.KeyCreated, "team-m", "key-1", 1, "sk-m-1"))
	b.confirmations(1, 30*time.Second)
	b.publish(b.settingsEvent("team-m", 1, &events.TeamSettings{Backend: "hashicorp_vault"}))
	b.confirmations(2, 30*time.Second)
	b.publish(b.settingsEvent("team-m", 2, &events.TeamSettings{Backend: "hashicorp_vault", Description: "same backend"}))
	b.publish(b.keyEvent(events.KeyRotated, "team-m", "key-1", 2, "sk-m-2"))
	b.confirmations(4, 30*time.Second)

	got := moves()
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
