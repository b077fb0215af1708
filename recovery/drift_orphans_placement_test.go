package recovery_test

import (
	"testing"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/recovery"
)

// TestDriftListsOrphansInEveryRecordedPlacement: a team that changed its
// namespace keeps secrets in the old one (keys written there, an old copy
// a rotation left there). Drift lists the old namespace too: a secret the
// ledger does not know there is an orphan, while the keys written there and
// the recorded old copy are not. A name is known only in the place the
// ledger records it: key-1's name in the new namespace, where the ledger
// does not place it, is an orphan. Drift used to list only the team's
// current namespace, and took any name a ledger entry used on the backend
// as checked, whatever its namespace, so it reported none of these.
func TestDriftListsOrphansInEveryRecordedPlacement(t *testing.T) {
	p := newPipeline(t)
	const team = "team-o"
	store, setNamespace := namespaced(t, p, team)
	setNamespace(1, "ns-a")
	p.publish(t, p.event(t, events.KeyCreated, team, "key-1", 1, "sk-o-1"), p.event(t, events.KeyCreated, team, "key-2", 1, "sk-o-2"))
	setNamespace(2, "ns-b")
	// key-2 rotated after the change: written to ns-b, its first value
	// left in ns-a as a recorded old copy (the cleanup's to delete).
	p.publish(t, p.event(t, events.KeyRotated, team, "key-2", 2, "sk-o-2b"), p.event(t, events.KeyCreated, team, "key-3", 1, "sk-o-3"))
	if e, _, err := p.ledger.Get(p.ctx, team, "key-2"); err != nil || e == nil || len(e.Sources) != 1 {
		t.Fatalf("key-2's ledger entry: %+v, %v; want its copy in ns-a recorded", e, err)
	}
	cfg := recovery.Config{Teams: []string{team}}
	if rep := p.drift(t, cfg); rep.Drifted() != 0 || rep.Errors() != 0 {
		t.Fatalf("drift before anything was planted: %+v", rep.Rows)
	}

	plant := func(ns, name, key string) {
		t.Helper()
		if _, err := store(ns).Put(p.ctx, providers.PutRequest{Name: name, Value: []byte("planted"), IdempotencyKey: "plant-" + ns + name,
			Owner: providers.Owner{TeamID: team, KeyID: key}, Adopt: true}); err != nil {
			t.Fatal(err)
		}
	}
	plant("ns-a", secretName(team, "ghost"), "ghost") // no ledger entry
	plant("ns-a", secretName(team, "key-3"), "key-3") // key-3 lives in ns-b
	plant("ns-b", secretName(team, "key-1"), "key-1") // key-1 lives in ns-a
	want := map[string]string{"ghost": "ns-a", "key-3": "ns-a", "key-1": "ns-b"}

	rep := p.drift(t, cfg)
	got := map[string]recovery.Row{}
	for _, r := range rep.Rows {
		if r.Status == recovery.StatusOrphan {
			got[r.Key] = r
		} else if r.Status != recovery.StatusOK {
			t.Errorf("row %+v; want ok or orphan", r)
		}
	}
	for key, ns := range want {
		if r, ok := got[key]; !ok || r.SecretRef != secretName(team, key) {
			t.Errorf("%s's secret planted in %s: not reported as an orphan (%+v)", key, ns, r)
		}
	}
	for key, r := range got {
		if _, ok := want[key]; !ok {
			t.Errorf("orphan %+v; nothing of %s was planted (the keys written in ns-a and key-2's recorded copy are the ledger's)", r, key)
		}
	}
	if rep.Errors() != 0 || len(rep.Unlisted) != 0 {
		t.Errorf("errors %d, unlisted %v", rep.Errors(), rep.Unlisted)
	}
}
