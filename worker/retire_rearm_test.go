package worker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyrelay/keyrelay/worker"
)

// TestOverdueRetirementScheduleIsRearmed: two rotations with grace
// periods schedule the retirements of their previous versions, one due
// in an hour (at the front of the stream), one after 12 s. The second
// schedule is then replaced by the same message without a schedule, as
// one the server failed to fire is left: stored, never firing. The
// workers find it past its time behind the one still ahead and store it
// again: the previous version is retired once, not before its grace
// period ends, and the stream keeps only the schedule still ahead,
// untouched. (Without the look the version is never retired: it stays
// valid in the provider.)
//
// Storing a schedule again is a compare-and-set on its subject's last
// message: the replaced schedule, stored again, is refused quietly.
func TestOverdueRetirementScheduleIsRearmed(t *testing.T) {
	// One server: the compare-and-set store it shares with the parked
	// look runs on the 3-node cluster in TestOverdueParkedScheduleIsRearmed.
	testOverdueRetirementSchedule(t, false)
}

func testOverdueRetirementSchedule(t *testing.T, cluster bool) {
	defer worker.SetRetireCheckTimes(200*time.Millisecond, 2*time.Second)()
	b := setup(t, setupOptions{cluster: cluster})
	w, _ := b.startWorker(nil)
	n := 0
	far := b.rotated("team-a", "k-far", 3600, &n)
	const grace = 12 // more than the horizon (10 s): a schedule
	start := time.Now()
	stuck := b.rotated("team-a", "k-stuck", grace, &n)

	var farSched, sched *jetstream.RawStreamMsg
	for _, m := range b.rawMessages(worker.RetireStream) {
		switch {
		case strings.HasPrefix(m.Subject, worker.RetirePrefix+".at.team-a.k-far."):
			farSched = m
		case strings.HasPrefix(m.Subject, worker.RetirePrefix+".at.team-a.k-stuck."):
			sched = m
		}
	}
	if farSched == nil || sched == nil || sched.Header.Get("Nats-Schedule") == "" || farSched.Sequence > sched.Sequence {
		t.Fatalf("want the hour-away schedule, then the stuck one: %+v, %+v", farSched, sched)
	}
	// Leave the stuck retirement's schedule as an unfired one is left.
	b.leaveUnfired(sched)
	// The schedule it replaced, stored again: refused, never an error.
	for range 2 {
		ok, err := w.RearmRetirement(b.ctx, sched)
		if err != nil {
			t.Fatalf("storing a replaced schedule again: %v", err)
		}
		if ok {
			t.Fatal("a replaced schedule was stored again")
		}
	}

	waitWithin(t, 40*time.Second, "the stuck retirement", func() bool { return b.gone("local", name("team-a", "k-stuck"), stuck) })
	if d := time.Since(start); d < grace*time.Second {
		t.Fatalf("retired after %v, before the grace period (%ds) ended", d, grace)
	}
	if got := testutil.ToFloat64(b.metrics.Retirements.WithLabelValues("rearmed")); got < 1 {
		t.Errorf("rearmed %v retirement schedules, want at least 1", got)
	}
	waitWithin(t, 10*time.Second, "the stream holding only the schedule still ahead, none overdue", func() bool {
		subjects, pending := b.retireState()
		return len(subjects) == 1 && subjects[0] == farSched.Subject && pending == 0 &&
			testutil.ToFloat64(b.metrics.RetirementsOverdue) == 0
	})
	if got := testutil.ToFloat64(b.metrics.Retirements.WithLabelValues("retired")); got != 1 {
		t.Errorf("%v retirements, want 1", got)
	}
	if b.gone("local", name("team-a", "k-far"), far) {
		t.Error("the hour-away retirement ran during its grace period")
	}
	if m := b.rawMessages(worker.RetireStream); len(m) != 1 || m[0].Sequence != farSched.Sequence {
		t.Errorf("the schedule still ahead was stored again: %+v", m)
	}
}
