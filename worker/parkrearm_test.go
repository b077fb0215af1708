package worker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/worker"
)

// TestOverdueParkedScheduleIsRearmed: an event is parked while its backend
// is down, its schedule 30 s away; the schedule is then replaced by the
// same message without a schedule, as one the server failed to fire is
// left: stored, never firing. Its lane message is acknowledged, so nothing
// else brings the event back. The workers find the schedule past its time
// and store it again: the event is written once and confirmed, and the
// parked stream drains. Another event, parked with a schedule still ahead,
// is not touched before its time. (Without the check the stuck event is
// never confirmed.)
func TestOverdueParkedScheduleIsRearmed(t *testing.T) {
	const sentinel = "sk-SENTINEL-rearm-4c2f"
	defer worker.SetParkedCheckTimes(200*time.Millisecond, 500*time.Millisecond)()
	b, down := parkSetup(t, 256)
	down.down.Store(true)
	b.startWorker(func(c *worker.Config) {
		c.ParkAfter, c.RetryInitial, c.RetryMax, c.InProcessAttempts = time.Second, 30*time.Second, 30*time.Second, 1
	})
	stuck := b.keyEvent(events.KeyCreated, "team-a", "key-stuck", 1, sentinel+"-stuck")
	later := b.keyEvent(events.KeyCreated, "team-a", "key-later", 1, sentinel+"-later")
	b.publish(stuck, later)
	waitWithin(t, 30*time.Second, "both events parked", func() bool { msgs, _ := b.parkedState(); return msgs == 2 })

	// Leave the stuck event's schedule as an unfired one is left.
	var sched *jetstream.RawStreamMsg
	for _, m := range b.rawMessages(worker.ParkedStream) {
		if strings.Contains(m.Subject, "key-stuck") {
			sched = m
		}
	}
	if sched == nil || sched.Header.Get("Nats-Schedule") == "" {
		t.Fatalf("no schedule parked for the stuck event: %+v", sched)
	}
	plain := &nats.Msg{Subject: sched.Subject, Header: nats.Header{}, Data: sched.Data}
	for k, v := range sched.Header {
		if !strings.HasPrefix(strings.ToLower(k), "nats-") {
			plain.Header[k] = v
		}
	}
	plain.Header.Set("Nats-Rollup", "sub")
	if _, err := b.js.PublishMsg(b.ctx, plain); err != nil {
		t.Fatal(err)
	}
	down.down.Store(false)

	b.storedOnce(down, []*events.Event{stuck}, 20*time.Second)
	if v := b.value("local", name("team-a", "key-stuck")); v != sentinel+"-stuck" {
		t.Errorf("stored %q", v)
	}
	if got := testutil.ToFloat64(b.metrics.Parked.WithLabelValues("interactive", "rearmed")); got < 1 {
		t.Errorf("rearmed %v schedules, want at least 1", got)
	}
	// The other event's schedule is still ahead: not stored again, not
	// written yet.
	if n := down.putsOf(name("team-a", "key-later")); n != 0 {
		t.Errorf("key-later written %d times before its schedule's time", n)
	}
	// It comes back on its own schedule, once.
	b.storedOnce(down, []*events.Event{stuck, later}, 60*time.Second)
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
