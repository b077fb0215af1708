package recovery_test

import (
	"strings"
	"testing"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/recovery"
)

// TestDriftBackendScopeKnowsKeysLivingElsewhere: with --backend A, drift
// reports only keys the ledger places on A, but the orphans it lists on A
// are judged against every entry of the team. A team moved from local to
// moveTarget: the old copy a rotation recorded on local (the cleanup's to
// delete) is not an orphan, and a stray copy on local of a key that lives
// on moveTarget is reported as placed there. Drift used to read only the
// entries on A, so it reported the recorded old copy as an orphan "which
// has no ledger entry", and the stray copy as having no entry either.
func TestDriftBackendScopeKnowsKeysLivingElsewhere(t *testing.T) {
	p := newPipeline(t)
	const team = "team-s"
	p.publish(t, p.event(t, events.KeyCreated, team, "key-1", 1, sentinel+"-s1"), p.event(t, events.KeyCreated, team, "key-2", 1, sentinel+"-s2"))
	p.settings(t, team, 10, moveTarget)
	// key-1 rotated after the change: written to moveTarget, its first value
	// left on local as a recorded old copy. key-2 stays on local (no move
	// ran); key-3 is created on moveTarget.
	p.publish(t, p.event(t, events.KeyRotated, team, "key-1", 2, sentinel+"-s1b"), p.event(t, events.KeyCreated, team, "key-3", 1, sentinel+"-s3"))
	for k, want := range map[string]string{"key-1": moveTarget, "key-2": "local", "key-3": moveTarget} {
		if e, _, err := p.ledger.Get(p.ctx, team, k); err != nil || e == nil || e.Provider != want || (k == "key-1") != (len(e.Sources) == 1) {
			t.Fatalf("%s's ledger entry: %+v, %v; want it on %s (key-1 with its old copy recorded)", k, e, err, want)
		}
	}
	// A copy of key-3 on local that nobody recorded.
	if _, err := p.store.Put(p.ctx, providers.PutRequest{Name: secretName(team, "key-3"), Value: []byte("planted"), IdempotencyKey: "plant-s3",
		Owner: providers.Owner{TeamID: team, KeyID: "key-3"}, Adopt: true}); err != nil {
		t.Fatal(err)
	}

	rep := p.drift(t, recovery.Config{Teams: []string{team}, Backend: "local"})
	var orphans []recovery.Row
	for _, r := range rep.Rows {
		switch {
		case r.Status == recovery.StatusOrphan:
			orphans = append(orphans, r)
		case r.Backend != "local":
			t.Errorf("row %+v outside --backend local", r)
		}
	}
	if len(orphans) != 1 || orphans[0].Key != "key-3" || !strings.Contains(orphans[0].Detail, "on "+moveTarget) {
		t.Fatalf("orphans on local: %+v; want only key-3's stray copy, placed by the ledger on %s (key-1's copy is recorded for the cleanup)",
			orphans, moveTarget)
	}
	if rep.Errors() != 0 {
		t.Errorf("errors: %+v", rep.Rows)
	}
}
