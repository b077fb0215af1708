package recovery_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/recovery"
	"github.com/keyrelay/keyrelay/worker"
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
	planned := 0
	for _, r := range plan.Rows {
		switch {
		case r.Action == "planned":
			planned++
		case r.Action != recovery.ActionSkipped || r.Status != recovery.StatusUnowned:
			t.Errorf("dry run row %+v", r)
		}
	}
	if err != nil || planned != 21 || len(plan.Rows) != 22 || plan.Written+plan.Deleted != 0 {
		t.Fatalf("dry run: %d rows, %d planned, %v", len(plan.Rows), planned, err)
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

// TestRestoreResumesFromItsCheckpoint: a restore stopped partway keeps its
// plan and progress in JetStream; --resume continues with the rows not
// done, without a new drift scan, and no key gets a second version from
// the same event.
func TestRestoreResumesFromItsCheckpoint(t *testing.T) {
	p := newPipeline(t)
	const n = 60
	var evs []*events.Event
	for i := range n {
		evs = append(evs, p.event(t, events.KeyCreated, "team-r", fmt.Sprintf("key-%02d", i), 1, fmt.Sprintf("%s-%02d", sentinel, i)))
	}
	p.publish(t, evs...)
	for i := range n {
		k := fmt.Sprintf("key-%02d", i)
		if err := p.store.Delete(p.ctx, providers.DeleteRequest{Name: secretName("team-r", k), Owner: providers.Owner{TeamID: "team-r", KeyID: k}, Force: true}); err != nil {
			t.Fatal(err)
		}
	}
	os, err := p.js.ObjectStore(p.ctx, worker.RecoveryObjects)
	if err != nil {
		t.Fatal(err)
	}
	cps := &recovery.Checkpoints{KV: p.js2, OS: os, JS: p.js}
	if _, err := recovery.Restore(p.ctx, p.deps(), recovery.RestoreConfig{Config: recovery.Config{All: true}, Checkpoints: cps, Resume: "latest"}); !errors.Is(err, recovery.ErrNoCheckpoint) {
		t.Fatalf("resume with nothing to resume: %v", err)
	}
	// Stop the first run after 20 keys.
	ctx, cancel := context.WithCancel(p.ctx)
	var runID string
	first, err := recovery.Restore(ctx, p.deps(), recovery.RestoreConfig{Config: recovery.Config{Teams: []string{"team-r"}, Concurrency: 2}, Checkpoints: cps,
		OnStart: func(id string, total, done int) { runID = id },
		Progress: func(pr recovery.Progress) {
			if pr.Done == 20 {
				cancel()
			}
		}})
	if !errors.Is(err, context.Canceled) || first.Written < 20 || first.Written >= n || runID == "" {
		t.Fatalf("first run: written %d, run %q, %v", first.Written, runID, err)
	}
	// A resume right away is refused: the run may still be alive.
	if _, err := recovery.Restore(p.ctx, p.deps(), recovery.RestoreConfig{Checkpoints: cps, Resume: runID}); err == nil || !strings.Contains(err.Error(), "may still be running") {
		t.Fatalf("resume of a fresh checkpoint: %v", err)
	}
	time.Sleep(3200 * time.Millisecond) // the checkpoint ages past three save periods
	var resumedDone, resumedTotal int
	rep, err := recovery.Restore(p.ctx, p.deps(), recovery.RestoreConfig{Checkpoints: cps, Resume: "latest",
		OnStart: func(id string, total, done int) { resumedDone, resumedTotal = done, total }})
	if err != nil || rep.Failed != 0 {
		t.Fatalf("resume: %v %+v", err, rep)
	}
	if resumedTotal != n || resumedDone < 20 || rep.Written+resumedDone < n || rep.Written > n-resumedDone {
		t.Fatalf("resume: %d of %d done before, %d written now", resumedDone, resumedTotal, rep.Written)
	}
	for i := range n {
		name := secretName("team-r", fmt.Sprintf("key-%02d", i))
		vs, err := p.store.Versions(p.ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, v := range vs {
			if v.IdempotencyKey != "" && seen[v.IdempotencyKey] {
				t.Errorf("%s: two versions from event %s", name, v.IdempotencyKey)
			}
			seen[v.IdempotencyKey] = true
		}
		if value(t, p, p.store, name) != fmt.Sprintf("%s-%02d", sentinel, i) {
			t.Errorf("%s not restored", name)
		}
	}
	// Finished: the checkpoint is gone.
	if _, err := recovery.Restore(p.ctx, p.deps(), recovery.RestoreConfig{Checkpoints: cps, Resume: runID}); !errors.Is(err, recovery.ErrNoCheckpoint) {
		t.Fatalf("resume of a finished run: %v", err)
	}
}
