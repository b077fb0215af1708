package recovery_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/recovery"
)

// TestRestoreFixesDriftAndIsIdempotent: hand edits (changed, deleted,
// resurrected, foreign) are restored from the ledger while rotations of
// the same keys are published live; unowned names and orphans are left
// alone; every key ends at its newest generation; a second restore writes
// nothing and no key got an extra version from it.
func TestRestoreFixesDriftAndIsIdempotent(t *testing.T) {
	p := newPipeline(t)
	var evs []*events.Event
	for i := 0; i < 30; i++ {
		evs = append(evs, p.event(t, events.KeyCreated, "team-r", fmt.Sprintf("key-%02d", i), 1, fmt.Sprintf("sk-r-%02d-g1", i)))
	}
	p.publish(t, evs...)
	p.publish(t, p.event(t, events.KeyDeleted, "team-r", "key-29", 2, ""))

	ctx, s := p.ctx, p.store
	owner := func(k string) providers.Owner { return providers.Owner{TeamID: "team-r", KeyID: k} }
	put := func(k string, o providers.Owner, v string) {
		if _, err := s.Put(ctx, providers.PutRequest{Name: secretName("team-r", k), Value: []byte(v), IdempotencyKey: "hand-" + k, Owner: o, Adopt: true}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 10; i++ { // stale
		put(fmt.Sprintf("key-%02d", i), owner(fmt.Sprintf("key-%02d", i)), "sk-old-backup")
	}
	for i := 10; i < 20; i++ { // missing
		k := fmt.Sprintf("key-%02d", i)
		if err := s.Delete(ctx, providers.DeleteRequest{Name: secretName("team-r", k), Owner: owner(k), Force: true}); err != nil {
			t.Fatal(err)
		}
	}
	put("key-29", owner("key-29"), "sk-resurrected")   // resurrected
	put("key-28", owner("someone-else"), "sk-foreign") // unowned
	put("ghost", owner("ghost"), "sk-orphan")          // orphan

	plan, err := recovery.Restore(ctx, p.deps(), recovery.RestoreConfig{Config: recovery.Config{Teams: []string{"team-r"}}, DryRun: true})
	if err != nil || len(plan.Rows) != 21 || plan.Written+plan.Deleted != 0 {
		t.Fatalf("dry run: %d rows, %v", len(plan.Rows), err)
	}

	// Live rotations of keys being restored, published while it runs.
	var live []*events.Event
	for _, i := range []int{0, 3, 11, 15} {
		live = append(live, p.event(t, events.KeyRotated, "team-r", fmt.Sprintf("key-%02d", i), 5, fmt.Sprintf("sk-r-%02d-g5", i)))
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); p.publish(t, live...) }()
	rep, err := recovery.Restore(ctx, p.deps(), recovery.RestoreConfig{Config: recovery.Config{Teams: []string{"team-r"}, Concurrency: 4}})
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restore: written %d, deleted %d, skipped %d, failed %d", rep.Written, rep.Deleted, rep.Skipped, rep.Failed)
	if rep.Failed != 0 || rep.Deleted != 1 {
		t.Fatalf("restore: %+v", rep.Rows)
	}
	// Keys without live traffic are written; those with it may have been
	// fixed by their rotation first (then they are not drift, or skipped).
	action := map[string]string{}
	for _, r := range rep.Rows {
		action[r.Key] = r.Action
	}
	for i := 0; i < 20; i++ {
		k := fmt.Sprintf("key-%02d", i)
		if i == 0 || i == 3 || i == 11 || i == 15 {
			continue
		}
		if action[k] != recovery.ActionWritten {
			t.Errorf("%s: %q, want written", k, action[k])
		}
	}
	// Every key at its newest generation; unowned and orphan untouched.
	for i := 0; i < 29; i++ {
		k := fmt.Sprintf("key-%02d", i)
		want := fmt.Sprintf("sk-r-%02d-g1", i)
		if i == 0 || i == 3 || i == 11 || i == 15 {
			want = fmt.Sprintf("sk-r-%02d-g5", i)
		}
		if i == 28 {
			want = "sk-foreign"
		}
		sec, err := s.Get(ctx, secretName("team-r", k), "")
		if err != nil || string(sec.Value) != want {
			t.Errorf("%s: %v, want its newest value", k, err)
		}
	}
	if _, err := s.Get(ctx, secretName("team-r", "key-29"), ""); err == nil {
		t.Error("the resurrected secret is still there")
	}
	after := p.drift(t, recovery.Config{Teams: []string{"team-r"}})
	if after.Drifted() != 2 { // the unowned name and the orphan
		t.Errorf("drift after the restore: %+v", after.Rows)
	}
	versions := func() int {
		n := 0
		for i := 0; i < 29; i++ {
			vs, _ := s.Versions(ctx, secretName("team-r", fmt.Sprintf("key-%02d", i)))
			n += len(vs)
		}
		return n
	}
	before := versions()
	again, err := recovery.Restore(ctx, p.deps(), recovery.RestoreConfig{Config: recovery.Config{Teams: []string{"team-r"}}})
	if err != nil || again.Written+again.Deleted != 0 {
		t.Fatalf("second restore: %+v %v", again, err)
	}
	if v := versions(); v != before {
		t.Fatalf("the second restore added %d versions", v-before)
	}
}
