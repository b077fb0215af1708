package jobs_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/jobs"
	"github.com/keyrelay/keyrelay/worker"
)

// TestJobsShareTheBulkLane: two teams' jobs on the same backend, the first
// three times the size of the second and started first, progress at about
// the same rate while both run: each gets at least 40% of the
// confirmations in that time. Without each job's window of unconfirmed
// events, the first job's whole backlog would sit in the bulk stream ahead
// of the second's.
func TestJobsShareTheBulkLane(t *testing.T) {
	e := newEnvWith(t, 5*time.Millisecond)
	e.create(t, "team-big", 900)
	e.create(t, "team-small", 300)
	plan := func(team string) string {
		j, p, err := jobs.Plan(e.ctx, e.deps, jobs.Spec{Selection: jobs.Selection{Teams: []string{team}}, Window: 48})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.deps.Store.Create(e.ctx, j, p); err != nil {
			t.Fatal(err)
		}
		return j.ID
	}
	big, small := plan("team-big"), plan("team-small")
	start := time.Now().Add(-time.Second)
	errs := make(chan error, 2)
	go func() { _, err := jobs.Run(e.ctx, e.deps, big, nil); errs <- err }()
	time.Sleep(300 * time.Millisecond)
	go func() { _, err := jobs.Run(e.ctx, e.deps, small, nil); errs <- err }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	e.waitDone(t, big)
	e.waitDone(t, small)

	// The confirmations in the order they were stored.
	cons, err := e.js.OrderedConsumer(e.ctx, worker.ConfirmationsStream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start})
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for len(order) < 1200 {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var c struct {
				JobID string `json:"job_id"`
			}
			_ = json.Unmarshal(m.Data(), &c)
			if c.JobID != "" {
				order = append(order, c.JobID)
			}
		}
		if n == 0 {
			t.Fatalf("%d job confirmations, want 1200", len(order))
		}
	}
	// While both ran: from the small job's first confirmation to the
	// first job's last.
	first, last := -1, -1
	lastOf := map[string]int{}
	for i, id := range order {
		if id == small && first < 0 {
			first = i
		}
		lastOf[id] = i
	}
	last = min(lastOf[big], lastOf[small])
	counts := map[string]int{}
	for _, id := range order[first : last+1] {
		counts[id]++
	}
	both := last - first + 1
	t.Logf("while both ran (%d confirmations): big %d (%.0f%%), small %d (%.0f%%); the small job's first confirmation was number %d",
		both, counts[big], 100*float64(counts[big])/float64(both), counts[small], 100*float64(counts[small])/float64(both), first+1)
	for _, id := range []string{big, small} {
		if share := float64(counts[id]) / float64(both); share < 0.4 {
			t.Errorf("job %s got %.0f%% of the confirmations while both ran, want at least 40%%", id, 100*share)
		}
	}
	if both < 300 {
		t.Errorf("the jobs overlapped for %d confirmations only: the small one waited behind the big one", both)
	}
}
