package recovery_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/local"
	"github.com/keyrelay/keyrelay/recovery"
)

// TestDriftAndRestoreAtTheRecordedPlacement: keys written while their
// team's options put them in one namespace (a backend keyed by a team
// option, as Vault's namespace or mount) are checked and restored there
// after the team changed its namespace: the ledger records where each was
// written. They used to be looked for in the team's new namespace, all
// reported missing, and a restore wrote them there, leaving the ledger's
// place as it was.
func TestDriftAndRestoreAtTheRecordedPlacement(t *testing.T) {
	p := newPipeline(t)
	const team = "team-n"
	store, setNamespace := namespaced(t, p, team)
	setNamespace(1, "ns-a")
	p.publish(t, p.event(t, events.KeyCreated, team, "key-1", 1, "sk-n-1"), p.event(t, events.KeyCreated, team, "key-2", 1, "sk-n-2"))
	setNamespace(2, "ns-b")
	cfg := recovery.Config{Teams: []string{team}}
	if rep := p.drift(t, cfg); rep.Drifted() != 0 || rep.Errors() != 0 {
		t.Fatalf("drift after the team changed its namespace, nothing edited: %+v", rep.Rows)
	}

	// key-1 lost from where it was written.
	owner := providers.Owner{TeamID: team, KeyID: "key-1"}
	if err := store("ns-a").Delete(p.ctx, providers.DeleteRequest{Name: secretName(team, "key-1"), Owner: owner, Force: true}); err != nil {
		t.Fatal(err)
	}
	rep := p.drift(t, cfg)
	if rep.Drifted() != 1 || rep.Errors() != 0 {
		t.Fatalf("drift: %+v; want key-1 missing only", rep.Rows)
	}
	for _, r := range rep.Rows {
		if (r.Key == "key-2" && r.Status != recovery.StatusOK) || (r.Key == "key-1" && r.Status != recovery.StatusMissing) {
			t.Fatalf("drift row %+v", r)
		}
	}
	res, err := recovery.Restore(p.ctx, p.deps(), recovery.RestoreConfig{Config: cfg})
	if err != nil || res.Written != 1 || res.Failed != 0 {
		t.Fatalf("restore: %+v, %v", res, err)
	}
	sec, err := store("ns-a").Get(p.ctx, secretName(team, "key-1"), "")
	if err != nil || string(sec.Value) != "sk-n-1" {
		t.Fatalf("key-1 not restored where the ledger places it (ns-a): %v", err)
	}
	if _, err := store("ns-b").Get(p.ctx, secretName(team, "key-1"), ""); err == nil {
		t.Fatal("the restore wrote key-1 to the team's new namespace, where the ledger does not place it")
	}
	if rep := p.drift(t, cfg); rep.Drifted() != 0 || rep.Errors() != 0 {
		t.Fatalf("drift after the restore: %+v", rep.Rows)
	}
}

// namespaced replaces the pipeline's second backend (moveTarget; the
// worker knows its name) by one store per "namespace" option, which a team
// may set, before anything opened it. setNamespace publishes team's
// settings choosing that backend and namespace ns, at generation gen, and
// waits until they are applied.
func namespaced(t *testing.T, p *pipeline, team string) (store func(ns string) *local.Provider, setNamespace func(gen uint64, ns string)) {
	t.Helper()
	const backend = moveTarget
	var mu sync.Mutex
	stores := map[string]*local.Provider{}
	store = func(ns string) *local.Provider {
		mu.Lock()
		defer mu.Unlock()
		if stores[ns] == nil {
			s, err := local.New(local.Config{})
			if err != nil {
				t.Fatal(err)
			}
			stores[ns] = s
		}
		return stores[ns]
	}
	p.reg.Register(backend, func(_ context.Context, cfg providers.Config) (providers.Provider, error) {
		return store(cfg.Options["namespace"]), nil
	})
	p.reg.AllowTeamOptions(backend, "namespace")
	setNamespace = func(gen uint64, ns string) {
		t.Helper()
		s := events.TeamSettings{Backend: backend, Options: map[string]string{"namespace": ns}}
		ev := &events.Event{SpecVersion: events.SpecVersion, ID: "s-" + team + "-" + ns, Type: events.TeamSettingsUpdated, Time: time.Now().UTC(),
			TeamID: team, Generation: gen}
		ev.Data, _ = json.Marshal(events.SettingsData{Settings: s})
		p.publish(t, ev)
		for p.teams.Cached(team).Generation != gen {
			if p.ctx.Err() != nil {
				t.Fatal("the team's settings never arrived")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return store, setNamespace
}

// TestCleanupDeletesTheOldCopyWhereItWasWritten: a key rotated after its
// team changed its namespace is written to the new one, and the ledger
// records the copy left in the old one. The cleanup deletes that copy,
// in the old namespace, and leaves the live secret of the same name in
// the new one. It used to take the copy for the live secret (same backend
// and name) and forget it, leaving the old value in the old namespace for
// good; and its delete, had it run, opened the team's current namespace,
// where it would have deleted the live secret.
func TestCleanupDeletesTheOldCopyWhereItWasWritten(t *testing.T) {
	p := newPipeline(t)
	const team = "team-c"
	store, setNamespace := namespaced(t, p, team)
	setNamespace(1, "ns-a")
	p.publish(t, p.event(t, events.KeyCreated, team, "key-1", 1, "sk-c-1"))
	setNamespace(2, "ns-b")
	p.publish(t, p.event(t, events.KeyRotated, team, "key-1", 2, "sk-c-2"))
	name := secretName(team, "key-1")
	if _, err := store("ns-a").Get(p.ctx, name, ""); err != nil {
		t.Fatalf("the first value is not in ns-a before the cleanup: %v", err)
	}
	cr, err := recovery.Cleanup(p.ctx, p.deps(), recovery.CleanupConfig{Team: team, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cleanup: %+v", cr.Rows)
	if _, err := store("ns-a").Get(p.ctx, name, ""); !errors.Is(err, providers.ErrNotFound) {
		t.Fatalf("the copy left in ns-a after the cleanup: %v; want it deleted", err)
	}
	sec, err := store("ns-b").Get(p.ctx, name, "")
	if err != nil || string(sec.Value) != "sk-c-2" {
		t.Fatalf("the live secret in ns-b after the cleanup: %v", err)
	}
	e, _, err := p.ledger.Get(p.ctx, team, "key-1")
	if err != nil || e == nil || len(e.Sources) != 0 {
		t.Fatalf("ledger after the cleanup: %+v, %v; want no copy left to delete", e, err)
	}
}
