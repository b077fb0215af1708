package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/jobs"
	"github.com/keyrelay/keyrelay/worker"
)

// TestJobWithALargeKeysFileIsSaved: a job selected with a keys file of
// 100,000 keys is saved and its record stays small (it is rewritten every
// second while the job runs): the keys are in its plan, not in the record,
// which used to exceed the NATS message size and fail the job's creation.
func TestJobWithALargeKeysFileIsSaved(t *testing.T) {
	b := newBare(t)
	const n = 100_000
	now := time.Now().UTC()
	sel := jobs.Selection{}
	var plan []jobs.Target
	for i := range n {
		tk := jobs.TeamKey{Team: fmt.Sprintf("team-%03d", i%100), Key: fmt.Sprintf("key-%06d", i)}
		sel.Keys = append(sel.Keys, tk)
		plan = append(plan, jobs.Target{Team: tk.Team, Key: tk.Key, Generation: uint64(now.UnixMicro()), EventID: fmt.Sprintf("e-%d", i)})
	}
	j := &jobs.Job{ID: jobs.NewID(now), Selection: sel, Total: n, State: jobs.StateRunning, Created: now, Updated: now}
	if err := b.deps.Store.Create(b.ctx, j, plan); err != nil {
		t.Fatalf("create a job of %d keys from a keys file: %v", n, err)
	}
	e, err := b.deps.Store.KV.Get(b.ctx, "job."+j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Value()) > 64<<10 {
		t.Fatalf("the job record is %d bytes, rewritten every second while it runs", len(e.Value()))
	}
	got, _, err := b.deps.Store.Get(b.ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Total != n || got.Selection.KeysCount != n {
		t.Fatalf("record: total %d, keys %d", got.Total, got.Selection.KeysCount)
	}
	if p, err := b.deps.Store.Plan(b.ctx, j.ID); err != nil || len(p) != n {
		t.Fatalf("plan: %d keys, %v", len(p), err)
	}
}

// TestJobStatusSaysWhyAJobIsStuck: a job that cannot progress used to show
// as running, its cursor still, with nothing saying why: a full bulk lane,
// workers that confirm nothing (stopped, or their backend down), or a
// publisher that died. Its status now says which, with no value.
func TestJobStatusSaysWhyAJobIsStuck(t *testing.T) {
	stuck := func(t *testing.T, b *bare, j *jobs.Job, want string) {
		t.Helper()
		ctx, cancel := context.WithCancel(b.ctx)
		done := make(chan error, 1)
		go func() { _, err := jobs.Run(ctx, b.deps, j.ID, nil); done <- err }()
		defer func() { cancel(); <-done }()
		deadline := time.Now().Add(20 * time.Second)
		for {
			st, err := jobs.GetStatus(b.ctx, b.js, b.deps.Store, j.ID)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(st.Stalled, want) && strings.Contains(st.Job.Waiting, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("stuck at %d of %d: status says %q (waiting %q), want %q", st.Job.Cursor, st.Job.Total, st.Stalled, st.Job.Waiting, want)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	t.Run("full lane", func(t *testing.T) {
		b := newBareWith(t, func(c *worker.TopologyConfig) { c.EventsMaxBytes = 32 << 10 })
		j, _ := b.job(t, 150, 10000)
		stuck(t, b, j, "bulk lane is full")
	})
	t.Run("no confirmations", func(t *testing.T) {
		b := newBare(t)
		j, _ := b.job(t, 8, 2)
		stuck(t, b, j, "not confirmed")
	})
	t.Run("publisher gone", func(t *testing.T) {
		b := newBare(t)
		j, _ := b.job(t, 8, 2)
		e, err := b.deps.Store.KV.Get(b.ctx, "job."+j.ID)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(e.Value(), &m); err != nil {
			t.Fatal(err)
		}
		m["holder"], m["cursor"], m["updated"] = "host-1-dead", 3, time.Now().Add(-time.Minute).UTC()
		raw, _ := json.Marshal(m)
		if _, err := b.deps.Store.KV.Put(b.ctx, "job."+j.ID, raw); err != nil {
			t.Fatal(err)
		}
		st, err := jobs.GetStatus(b.ctx, b.js, b.deps.Store, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(st.Stalled, "jobs resume "+j.ID) {
			t.Fatalf("status of a job whose publisher died: %q", st.Stalled)
		}
	})
}

// TestJobResumedAfterItsConfirmationsAgedOut: a job stopped partway and
// resumed after the confirmations of the events it had published aged out
// of the confirmations stream (streams.confirmations_max_age or _bytes)
// counted them as unconfirmed for good: with a cursor past its window it
// never published again. A resumed run's window counts the events it
// publishes itself.
func TestJobResumedAfterItsConfirmationsAgedOut(t *testing.T) {
	b := newBare(t)
	j, plan := b.job(t, 8, 2)
	confirm := func(tg jobs.Target) {
		t.Helper()
		c := events.Confirmation{SpecVersion: events.SpecVersion, EventID: tg.EventID, EventType: events.KeyRotated, TeamID: tg.Team, KeyID: tg.Key,
			Generation: tg.Generation, JobID: j.ID, Status: events.StatusRotated, Time: time.Now().UTC()}
		data, _ := json.Marshal(c)
		if _, err := b.js.Publish(b.ctx, events.ConfirmationSubject(tg.Team, tg.Key, tg.EventID), data); err != nil {
			t.Fatal(err)
		}
	}
	run := func(until int) {
		t.Helper()
		var published atomic.Int64
		ctx, cancel := context.WithCancel(b.ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = jobs.Run(ctx, b.deps, j.ID, func(p jobs.Progress) { published.Store(int64(p.Published)) })
		}()
		defer func() { cancel(); <-done }()
		confirmed := 0
		for deadline := time.Now().Add(15 * time.Second); published.Load() < int64(until); {
			if time.Now().After(deadline) {
				t.Fatalf("published %d of %d, want %d", published.Load(), len(plan), until)
			}
			// The workers' part: confirm what is published.
			for ; confirmed < int(published.Load()); confirmed++ {
				confirm(plan[confirmed])
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	run(4)
	// Stopped at 4, every one confirmed; later the confirmations age out.
	cs, err := b.js.Stream(b.ctx, worker.ConfirmationsStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.Purge(b.ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // the stopped run's hold lapses
	run(len(plan))
}

// TestSlowRateJobStaysHeld: a job with a low rate (--rate 0.2: one event
// every five seconds) saved nothing while it waited for its next event,
// so after three seconds its record looked abandoned: a second publisher
// took it over (and `jobs status` said it had stopped). It is held, and
// sees a cancel, while it waits for its rate.
func TestSlowRateJobStaysHeld(t *testing.T) {
	b := newBare(t)
	now := time.Now().UTC()
	j := &jobs.Job{ID: jobs.NewID(now), Total: 3, Rate: 0.2, State: jobs.StateRunning, Created: now, Updated: now}
	var plan []jobs.Target
	for i := range 3 {
		plan = append(plan, jobs.Target{Team: "team-a", Key: fmt.Sprintf("key-%d", i), Generation: uint64(now.UnixMicro()), EventID: fmt.Sprintf("e-%d", i)})
	}
	if err := b.deps.Store.Create(b.ctx, j, plan); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := jobs.Run(b.ctx, b.deps, j.ID, nil); done <- err }()
	time.Sleep(4 * time.Second) // one event published, waiting for the next
	if _, err := jobs.Run(b.ctx, b.deps, j.ID, nil); err == nil || !strings.Contains(err.Error(), "may still be running") {
		t.Fatalf("a second publisher of the running job: %v, want refused", err)
	}
	st, err := jobs.GetStatus(b.ctx, b.js, b.deps.Store, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(st.Stalled, "no publisher") {
		t.Fatalf("status of a job waiting for its rate: %q", st.Stalled)
	}
	start := time.Now()
	if _, err := b.deps.Store.Cancel(b.ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, jobs.ErrCancelled) {
			t.Fatalf("run after the cancel: %v", err)
		}
		if d := time.Since(start); d > 2500*time.Millisecond {
			t.Fatalf("the cancel was seen after %v", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the run did not stop after the cancel")
	}
}
