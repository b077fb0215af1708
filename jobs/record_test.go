package jobs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/jobs"
	"github.com/keyrelay/keyrelay/worker"
)

// bare is a nats-server with the topology and the job store, and no
// worker: nothing confirms a job's events unless the test does.
type bare struct {
	ctx  context.Context
	js   jetstream.JetStream
	deps jobs.Deps
}

func newBare(t *testing.T) *bare { return newBareWith(t, nil) }

// newBareWith is newBare with mut applied to the topology.
func newBareWith(t *testing.T, mut func(*worker.TopologyConfig)) *bare {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	_, js := testenv.StartJetStream(t)
	topo := worker.TopologyConfig{Replicas: 1, DuplicateWindow: time.Minute, AckWait: 5 * time.Second, MaxAckPending: 1024}
	if mut != nil {
		mut(&topo)
	}
	if err := worker.EnsureTopology(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
	kr, err := events.NewKeyring("j1", map[string][]byte{"j1": bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	st, err := jobs.EnsureStore(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	return &bare{ctx: ctx, js: js, deps: jobs.Deps{JS: js, Store: st, Sealer: kr}}
}

// job saves a running job of n keys of team-a (event e-<i>) with window.
func (b *bare) job(t *testing.T, n, window int) (*jobs.Job, []jobs.Target) {
	t.Helper()
	now := time.Now().UTC()
	j := &jobs.Job{ID: jobs.NewID(now), Total: n, Window: window, State: jobs.StateRunning, Created: now, Updated: now}
	var plan []jobs.Target
	for i := range n {
		plan = append(plan, jobs.Target{Team: "team-a", Key: fmt.Sprintf("key-%d", i), Generation: uint64(now.UnixMicro()), EventID: fmt.Sprintf("e-%d", i)})
	}
	if err := b.deps.Store.Create(b.ctx, j, plan); err != nil {
		t.Fatal(err)
	}
	return j, plan
}

// TestStoredJobRecordIsValidated: a job record is read back from a bucket
// and checked before anything acts on it. A cursor outside the plan (which
// made Run index plan[-1] and panic), an unknown state, a negative rate or
// window, or a record under another job's key is refused with an error
// naming the field, by Run and by the status.
func TestStoredJobRecordIsValidated(t *testing.T) {
	b := newBare(t)
	cases := map[string]struct {
		edit func(map[string]any)
		want string
	}{
		"negative cursor":  {func(m map[string]any) { m["cursor"] = -1 }, "cursor -1"},
		"cursor past plan": {func(m map[string]any) { m["cursor"] = 4 }, "cursor 4"},
		"unknown state":    {func(m map[string]any) { m["state"] = "bogus" }, "state"},
		"negative rate":    {func(m map[string]any) { m["rate"] = -2 }, "rate"},
		"negative window":  {func(m map[string]any) { m["window"] = -1 }, "window"},
		"negative grace":   {func(m map[string]any) { m["grace_seconds"] = -5 }, "grace_seconds"},
		"another job's id": {func(m map[string]any) { m["id"] = "job-other" }, "job-other"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			j, _ := b.job(t, 3, 0)
			e, err := b.deps.Store.KV.Get(b.ctx, "job."+j.ID)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(e.Value(), &m); err != nil {
				t.Fatal(err)
			}
			tc.edit(m)
			raw, _ := json.Marshal(m)
			if _, err := b.deps.Store.KV.Put(b.ctx, "job."+j.ID, raw); err != nil {
				t.Fatal(err)
			}
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("Run panicked on a bad record: %v", r)
					}
				}()
				if _, err := jobs.Run(b.ctx, b.deps, j.ID, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Run: %v, want an error naming %q", err, tc.want)
				}
			}()
			if _, err := jobs.GetStatus(b.ctx, b.js, b.deps.Store, j.ID); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("status: %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

// TestJobWindowCountsOnlyItsOwnConfirmations: any team can put a job's id
// on its own events; their confirmations (and a confirmation under
// another team that reuses a planned event id) must not open the job's
// window. Only a confirmation of a planned event, for its team and key,
// counts, and once however often it is repeated.
func TestJobWindowCountsOnlyItsOwnConfirmations(t *testing.T) {
	b := newBare(t)
	j, plan := b.job(t, 8, 2)
	confirm := func(team, key, eventID string) {
		t.Helper()
		c := events.Confirmation{SpecVersion: events.SpecVersion, EventID: eventID, EventType: events.KeyRotated, TeamID: team, KeyID: key,
			Generation: plan[0].Generation, JobID: j.ID, Status: events.StatusRotated, Time: time.Now().UTC()}
		data, _ := json.Marshal(c)
		if _, err := b.js.Publish(b.ctx, events.ConfirmationSubject(team, key, eventID), data); err != nil {
			t.Fatal(err)
		}
	}
	var published atomic.Int64
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = jobs.Run(ctx, b.deps, j.ID, func(p jobs.Progress) { published.Store(int64(p.Published)) })
	}()
	t.Cleanup(func() { cancel(); <-done })
	waitFor := func(n int64) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); published.Load() < n; {
			if time.Now().After(deadline) {
				t.Fatalf("published %d, want %d", published.Load(), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor(2)
	// Another team's events carrying the job's id, and one reusing a
	// planned event id under another team.
	for i := range 5 {
		confirm("team-x", fmt.Sprintf("key-%d", i), fmt.Sprintf("x-%d", i))
	}
	confirm("team-x", "key-0", plan[0].EventID)
	confirm("team-x", plan[1].Key, plan[1].EventID)
	time.Sleep(1500 * time.Millisecond)
	if n := published.Load(); n != 2 {
		t.Fatalf("published %d with a window of 2 and none of the job's events confirmed", n)
	}
	// The job's own confirmation opens the window by one, repeated or not.
	confirm(plan[0].Team, plan[0].Key, plan[0].EventID)
	confirm(plan[0].Team, plan[0].Key, plan[0].EventID)
	waitFor(3)
	time.Sleep(1500 * time.Millisecond)
	if n := published.Load(); n != 3 {
		t.Fatalf("published %d after one of the job's events was confirmed (twice), want 3", n)
	}
}

// TestSelectSkipsCorruptLedgerEntries: one ledger entry of team-x that
// does not decode used to make every job's selection fail. Now a job of
// team-a is planned without reading team-x at all; a job of every team
// selects the other keys and reports the entry (never its value); Select
// without a callback still fails, naming it.
func TestSelectSkipsCorruptLedgerEntries(t *testing.T) {
	e := newEnv(t)
	e.create(t, "team-a", 3)
	e.create(t, "team-x", 2)
	lkv, err := e.js.KeyValue(e.ctx, worker.LedgerBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lkv.Put(e.ctx, worker.LedgerKey("team-x", "key-000"), []byte(`{"generation":"SENTINEL`)); err != nil {
		t.Fatal(err)
	}
	var reported []worker.SkippedEntry
	d := e.deps
	d.LedgerSkipped = func(se worker.SkippedEntry) { reported = append(reported, se) }

	_, plan, err := jobs.Plan(e.ctx, d, jobs.Spec{Selection: jobs.Selection{Teams: []string{"team-a"}}})
	if err != nil || len(plan) != 3 || len(reported) != 0 {
		t.Fatalf("team-a: %d keys, reported %+v, %v", len(plan), reported, err)
	}
	_, plan, err = jobs.Plan(e.ctx, d, jobs.Spec{Selection: jobs.Selection{All: true}})
	if err != nil || len(plan) != 4 || len(reported) != 1 || reported[0].Key != worker.LedgerKey("team-x", "key-000") ||
		reported[0].Reason == "" || strings.Contains(reported[0].Reason, "SENTINEL") {
		t.Fatalf("every team: %d keys, reported %+v, %v", len(plan), reported, err)
	}
	var se *worker.SkippedEntriesError
	if _, err := jobs.Select(e.ctx, d.Ledger, jobs.Selection{All: true}, time.Now()); !errors.As(err, &se) || len(se.Entries) != 1 {
		t.Fatalf("Select without a callback: %v", err)
	}
}

// TestJobWaitsForRoomInAFullBulkLane: the bulk lane stream is full of
// events no worker has handled (streams.events_max_bytes, here 32 KiB),
// so it refuses the job's next event. The job does not fail: it waits,
// keeping its cursor, and goes on once handled events are trimmed, until
// every event of its plan is in the lane once. (It used to stop with the
// publish error at the first refusal.)
func TestJobWaitsForRoomInAFullBulkLane(t *testing.T) {
	b := newBareWith(t, func(c *worker.TopologyConfig) { c.EventsMaxBytes = 32 << 10 })
	j, plan := b.job(t, 150, 10000)
	var published atomic.Int64
	type result struct {
		j   *jobs.Job
		err error
	}
	done := make(chan result, 1)
	go func() {
		j, err := jobs.Run(b.ctx, b.deps, j.ID, func(p jobs.Progress) { published.Store(int64(p.Published)) })
		done <- result{j, err}
	}()
	s, err := b.js.Stream(b.ctx, worker.BulkStream)
	if err != nil {
		t.Fatal(err)
	}
	// Stalled at a full lane, still running.
	var stalled int64
	for last := int64(-1); ; {
		time.Sleep(time.Second)
		select {
		case r := <-done:
			t.Fatalf("the job ended at a full lane after %d events: %v", published.Load(), r.err)
		default:
		}
		if n := published.Load(); n == last {
			stalled = n
			break
		} else {
			last = n
		}
	}
	if stalled == 0 || stalled >= int64(len(plan)) {
		t.Fatalf("stalled after %d of %d events", stalled, len(plan))
	}
	// A worker's part: each event handled (acked), then the handled ones
	// trimmed from the head, until the job is done.
	cons, err := b.js.Consumer(b.ctx, worker.BulkStream, worker.BulkConsumerName)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	var r result
	for r.j == nil && r.err == nil {
		batch, err := cons.Fetch(100, jetstream.FetchMaxWait(200*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		var last uint64
		for m := range batch.Messages() {
			ev, err := events.Decode(m.Data())
			if err != nil {
				t.Fatal(err)
			}
			seen[ev.ID]++
			md, _ := m.Metadata()
			last = md.Sequence.Stream
			if err := m.DoubleAck(b.ctx); err != nil {
				t.Fatal(err)
			}
		}
		if last > 0 {
			if err := s.Purge(b.ctx, jetstream.WithPurgeSequence(last+1)); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case r = <-done:
		default:
		}
	}
	if r.err != nil {
		t.Fatalf("job: %v", r.err)
	}
	// The last events, published after the final trim.
	if batch, err := cons.Fetch(100, jetstream.FetchMaxWait(500*time.Millisecond)); err == nil {
		for m := range batch.Messages() {
			if ev, err := events.Decode(m.Data()); err == nil {
				seen[ev.ID]++
			}
			_ = m.Ack()
		}
	}
	if r.j.State != jobs.StatePublished || r.j.Cursor != len(plan) {
		t.Errorf("job ended %s at cursor %d, want published at %d", r.j.State, r.j.Cursor, len(plan))
	}
	for _, tg := range plan {
		if seen[tg.EventID] != 1 {
			t.Errorf("event %s in the lane %d times, want once", tg.EventID, seen[tg.EventID])
		}
	}
	t.Logf("stalled at %d of %d events until handled events were trimmed", stalled, len(plan))
}
