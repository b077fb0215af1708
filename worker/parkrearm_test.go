package worker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/worker"
)

// TestOverdueParkedScheduleIsRearmed: an event is parked while its backend
// is down, its schedule 6 to 18 s away; the schedule is then replaced by the
// same message without a schedule, as one the server failed to fire is
// left: stored, never firing. Its lane message is acknowledged, so nothing
// else brings the event back. The workers find the schedule past its time
// and store it again: the event is written once and confirmed, and the
// parked stream drains. Another event, parked with a schedule still ahead,
// is not touched before its time (one server). (Without the check the stuck event is
// never confirmed.)
//
// Storing a schedule again is a compare-and-set on its subject's last
// message: the stale one stored again a second time is refused quietly,
// on one server and on the 3-node cluster (replicas 3).
func TestOverdueParkedScheduleIsRearmed(t *testing.T) {
	t.Run("one server", func(t *testing.T) { testOverdueParkedSchedule(t, false) })
	t.Run("3-node cluster", func(t *testing.T) { testOverdueParkedSchedule(t, true) })
}

func testOverdueParkedSchedule(t *testing.T, cluster bool) {
	const sentinel = "sk-SENTINEL-rearm-4c2f"
	defer worker.SetParkedCheckTimes(200*time.Millisecond, time.Second)()
	down := &switchedOutage{puts: map[string]int{}}
	b := setup(t, setupOptions{
		cluster:  cluster,
		backends: []string{"backend_b"},
		wrap:     map[string]func(providers.Provider) providers.Provider{"local": func(p providers.Provider) providers.Provider { down.Provider = p; return down }},
		topo:     func(c *worker.TopologyConfig) { c.MaxAckPending = 256 },
	})
	down.down.Store(true)
	w, _ := b.startWorker(func(c *worker.Config) {
		c.ParkAfter, c.RetryInitial, c.RetryMax, c.InProcessAttempts = time.Second, 12*time.Second, 12*time.Second, 1
	})
	stuck := b.keyEvent(events.KeyCreated, "team-a", "key-stuck", 1, sentinel+"-stuck")
	evs := []*events.Event{stuck}
	if !cluster {
		// The schedule still ahead (one server only: waiting for it to
		// fire on the cluster too would prove nothing more).
		evs = append(evs, b.keyEvent(events.KeyCreated, "team-a", "key-later", 1, sentinel+"-later"))
	}
	b.publish(evs...)
	waitWithin(t, 30*time.Second, "every event parked", func() bool { msgs, _ := b.parkedState(); return msgs == uint64(len(evs)) })

	// Leave the stuck event's schedule as an unfired one is left.
	var sched *jetstream.RawStreamMsg
	var laterSeq uint64
	for _, m := range b.rawMessages(worker.ParkedStream) {
		switch {
		case strings.Contains(m.Subject, "key-stuck"):
			sched = m
		case strings.Contains(m.Subject, "key-later"):
			laterSeq = m.Sequence
		}
	}
	if sched == nil || sched.Header.Get("Nats-Schedule") == "" {
		t.Fatalf("no schedule parked for the stuck event: %+v", sched)
	}
	plain, seq := b.leaveUnfired(sched)
	// The stale schedule, stored again twice: once at most (the workers'
	// look may come first), never an error.
	stale := &jetstream.RawStreamMsg{Subject: plain.Subject, Sequence: seq, Header: plain.Header, Data: plain.Data, Time: time.Now().Add(-time.Minute)}
	var stored int
	for range 2 {
		ok, err := w.Rearm(b.ctx, stale)
		if err != nil {
			t.Fatalf("storing a stale schedule again: %v", err)
		}
		if ok {
			stored++
		}
	}
	if stored > 1 {
		t.Errorf("the same schedule stored again %d times, want at most once", stored)
	}
	down.down.Store(false)

	b.storedOnce(down, []*events.Event{stuck}, 20*time.Second)
	if v := b.value("local", name("team-a", "key-stuck")); v != sentinel+"-stuck" {
		t.Errorf("stored %q", v)
	}
	if got := testutil.ToFloat64(b.metrics.Parked.WithLabelValues("interactive", "rearmed")); got+float64(stored) < 1 {
		t.Errorf("stored again %v times by the workers' look and %d by the test, want at least once", got, stored)
	}
	// The other event's schedule was not overdue: it was not stored again
	// (it is still the message parked, or it has fired).
	for _, m := range b.rawMessages(worker.ParkedStream) {
		if strings.Contains(m.Subject, ".at.") && strings.Contains(m.Subject, "key-later") && m.Sequence != laterSeq {
			t.Errorf("key-later's schedule, not yet due, was stored again (sequence %d, parked as %d)", m.Sequence, laterSeq)
		}
	}
	// It comes back on its own schedule, once.
	b.storedOnce(down, evs, 60*time.Second)
	waitWithin(t, 30*time.Second, "the parked stream drained", func() bool { msgs, pending := b.parkedState(); return msgs == 0 && pending == 0 })
	for id, n := range b.confirmationCounts() {
		if n != 1 {
			t.Errorf("event %s: %d confirmations", id, n)
		}
	}
	if strings.Contains(b.logs.String(), sentinel) {
		t.Error("a value in the logs")
	}
}

// leaveUnfired replaces schedule sched by the same message without a
// schedule (a roll-up of its subject), as a schedule the server failed to
// fire is left: stored, never firing. It returns the message stored and
// its sequence.
func (b *bundle) leaveUnfired(sched *jetstream.RawStreamMsg) (*nats.Msg, uint64) {
	b.t.Helper()
	plain := &nats.Msg{Subject: sched.Subject, Header: nats.Header{}, Data: sched.Data}
	for k, v := range sched.Header {
		if !strings.HasPrefix(strings.ToLower(k), "nats-") {
			plain.Header[k] = v
		}
	}
	plain.Header.Set("Nats-Rollup", "sub")
	ack, err := b.js.PublishMsg(b.ctx, plain)
	if err != nil {
		b.t.Fatal(err)
	}
	return plain, ack.Sequence
}
