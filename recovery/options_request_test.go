package recovery_test

import (
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/recovery"
	"github.com/keyrelay/keyrelay/worker"
)

// TestRequestForOtherOptionsOnTheSameBackend: a move requested for a
// team's place (its backend and the team options on it) is left as it is
// when the same place is asked for again (a redelivered settings event:
// neither a second request nor a reset of one the sweeper has moved), and
// replaced by a new request when other options on the same backend are
// asked for (a newer settings event that changed only the team's Vault
// namespace or mount wins). Such a request used to be dropped because a
// move to that backend was recorded, so the keys' copies under the old
// options were never cleaned up.
func TestRequestForOtherOptionsOnTheSameBackend(t *testing.T) {
	p := newPipeline(t)
	m := recovery.Migrations{KV: p.js2, JS: p.js}
	const team = "team-r"
	at := func(ns string) worker.TeamPlace {
		return worker.TeamPlace{Backend: moveTarget, Placement: &worker.Placement{TeamOptions: map[string]string{"namespace": ns}}}
	}
	get := func() (*recovery.MigrationRecord, uint64) {
		t.Helper()
		r, rev, err := m.Get(p.ctx, team)
		if err != nil || r == nil {
			t.Fatalf("record: %+v, %v", r, err)
		}
		return r, rev
	}
	if err := m.RequestPlace(p.ctx, team, at("ns-a")); err != nil {
		t.Fatal(err)
	}
	// The sweeper moved the keys to ns-a; their old copies wait for the grace period.
	moved, _ := get()
	moved.State, moved.MovedAt, moved.DeleteAfter = recovery.MigrationMoved, time.Now().UTC(), time.Now().Add(time.Hour).UTC()
	if err := m.Record(p.ctx, moved); err != nil {
		t.Fatal(err)
	}
	_, rev := get()
	for name, again := range map[string]func() error{
		"the same place":           func() error { return m.RequestPlace(p.ctx, team, at("ns-a")) },
		"the backend, by its name": func() error { return m.Request(p.ctx, team, moveTarget) },
	} {
		if err := again(); err != nil {
			t.Fatal(err)
		}
		if r, now := get(); now != rev || r.State != recovery.MigrationMoved {
			t.Fatalf("asked again for %s: record %+v at revision %d, was %d; want it left as it was", name, r, now, rev)
		}
	}

	if err := m.RequestPlace(p.ctx, team, at("ns-b")); err != nil {
		t.Fatal(err)
	}
	r, rev := get()
	if r.State != recovery.MigrationRequested || r.To != moveTarget || r.Placement == nil || r.Placement.TeamOptions["namespace"] != "ns-b" {
		t.Fatalf("after a request for other options on %s: %+v (placement %+v); want a new request for ns-b", moveTarget, r, r.Placement)
	}
	if err := m.RequestPlace(p.ctx, team, at("ns-b")); err != nil {
		t.Fatal(err)
	}
	if _, now := get(); now != rev {
		t.Fatalf("the ns-b request asked again was written again (revision %d, was %d)", now, rev)
	}
}
