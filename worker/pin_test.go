package worker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/worker"
)

// plainEvents are n key.created events of team with plaintext values
// (sentinel and their index), which no delivery can prove sealed.
func plainEvents(t *testing.T, team, prefix, sentinel string, n int) []*events.Event {
	t.Helper()
	var evs []*events.Event
	for i := range n {
		evs = append(evs, rawKeyEvent(t, fmt.Sprintf("evt-%s-%s-%d", team, prefix, i), team, fmt.Sprintf("%s-%03d", prefix, i),
			`{"alg":"plaintext","ct":"`+base64Std([]byte(fmt.Sprintf("%s%d", sentinel, i)))+`"}`))
	}
	return evs
}

// pinnedInParked lists the pins in the parked stream (subjects ending in
// ".pin"), checking that none holds a value.
func (b *bundle) pinnedInParked(sentinel string) []string {
	b.t.Helper()
	var pins []string
	for _, m := range b.rawMessages(worker.ParkedStream) {
		if strings.Contains(string(m.Data), sentinel) || strings.Contains(string(m.Data), base64Std([]byte(sentinel))) {
			b.t.Errorf("parked message %s holds a value in clear", m.Subject)
		}
		if strings.HasSuffix(m.Subject, ".pin") {
			pins = append(pins, m.Subject)
		}
	}
	return pins
}

// TestPinnedEventsHoldNoLaneSlot: as TestParkedEventsHoldNoLaneSlot, but
// team-a's 60 events carry plaintext values (allowed here), which no
// delivery proves sealed, as a value whose KMS is down is not: they are
// parked as pins, without a copy, and hold none of the lane consumer's 20
// MaxAckPending slots, so team-b's events published after them are
// confirmed promptly. When team-a's backend is back each of its events is
// written once and confirmed once; no value is in the parked stream or
// the logs. (Before pins, such events waited in the lane consumer: they
// held all 20 slots and team-b's events were not delivered.)
func TestPinnedEventsHoldNoLaneSlot(t *testing.T) {
	const sentinel = "sk-SENTINEL-pin-5be0c3-"
	b, down := parkSetup(t, 20)
	b.kr.AllowPlaintext(true)
	for range 2 {
		b.startWorker(func(c *worker.Config) { c.ParkAfter = 2 * time.Second })
	}
	b.publish(b.settingsEvent("team-b", 1, &events.TeamSettings{Backend: "backend_b"}))
	b.confirmations(1, 30*time.Second)
	down.down.Store(true)
	aEvs := plainEvents(t, "team-a", "key", sentinel, 60)
	b.publish(aEvs...)
	time.Sleep(time.Second)
	b.otherTeamFlows()
	if pins := b.pinnedInParked(sentinel); len(pins) == 0 {
		t.Error("no event pinned")
	}
	for _, ev := range aEvs {
		if down.putsOf(name(ev.TeamID, ev.KeyID)) != 0 {
			t.Fatalf("%s stored while its backend is down", ev.KeyID)
		}
	}
	time.Sleep(3 * time.Second) // pins come back and are pinned again
	down.down.Store(false)
	b.storedOnce(down, aEvs, 60*time.Second)
	for i, ev := range aEvs {
		if got := b.value("local", name(ev.TeamID, ev.KeyID)); got != fmt.Sprintf("%s%d", sentinel, i) {
			t.Errorf("%s: stored a value of %d bytes, not its own", ev.KeyID, len(got))
		}
	}
	waitWithin(t, 30*time.Second, "the parked stream drained", func() bool { msgs, pending := b.parkedState(); return msgs == 0 && pending == 0 })
	for id, n := range b.confirmationCounts() {
		if n != 1 {
			t.Errorf("event %s: %d confirmations", id, n)
		}
	}
	if dl := b.rawMessages(worker.DLQStream); len(dl) != 0 {
		t.Fatalf("%d dead letters", len(dl))
	}
	if strings.Contains(b.logs.String(), sentinel) {
		t.Error("a value in the logs")
	}
}

// TestTrimmerKeepsPinnedEvents: team-a's backend is down and its events,
// with plaintext values, are pinned (acknowledged on their lane, parked
// without a copy). Team-b's traffic then fills the small lane stream: the
// trimmer trims team-b's handled events before them but never the lowest
// pinned one, whose lane message is all there is of its event. When
// team-a's backend is back each pinned event is written and confirmed
// once. On one server and on a 3-node cluster. (A trimmer that did not
// read the pins purged their lane messages, and the events were lost:
// keyrelay_parked_total{outcome="gone"}.)
func TestTrimmerKeepsPinnedEvents(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cluster bool
	}{{"one server", false}, {"cluster", true}} {
		t.Run(tc.name, func(t *testing.T) { trimmerKeepsPinnedEvents(t, tc.cluster) })
	}
}

func trimmerKeepsPinnedEvents(t *testing.T, cluster bool) {
	const sentinel = "sk-SENTINEL-pin-trim-71a4d2-"
	down := &switchedOutage{puts: map[string]int{}}
	b := setup(t, setupOptions{
		cluster:  cluster,
		backends: []string{"backend_b"},
		wrap:     map[string]func(providers.Provider) providers.Provider{"local": func(p providers.Provider) providers.Provider { down.Provider = p; return down }},
		topo:     smallLanes,
	})
	b.kr.AllowPlaintext(true)
	b.startWorker(func(c *worker.Config) { c.ParkAfter = time.Second })
	// A few handled events of team-b's first, so that the stream has some
	// to trim before the pins (few: a round that trimmed 10% would leave
	// the stream below its high-water mark).
	var bEvs []*events.Event
	for i := range 4 {
		bEvs = append(bEvs, b.keyEvent(events.KeyCreated, "team-b", fmt.Sprintf("early-%d", i), 1, "sk-b"))
	}
	b.publish(b.settingsEvent("team-b", 1, &events.TeamSettings{Backend: "backend_b"}))
	b.confirmations(1, 30*time.Second)
	b.publish(bEvs...)
	b.waitConfirmed(bEvs, 30*time.Second)
	down.down.Store(true)
	pinned := plainEvents(t, "team-a", "key", sentinel, 3)
	var lowest uint64
	for _, ev := range pinned {
		seq, err := b.pub.Publish(b.ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		if lowest == 0 {
			lowest = seq
		}
	}
	waitWithin(t, 30*time.Second, "team-a's events pinned and acknowledged on their lane", func() bool {
		return len(b.pinnedInParked(sentinel)) == len(pinned) && b.ackFloor(worker.EventsStream, worker.ConsumerName) >= lowest+2
	})
	// Team-b's traffic up to the stream's cap, then handled.
	more, err := b.fillLane(events.LaneInteractive, "team-b")
	if !errors.Is(err, client.ErrStreamFull) {
		t.Fatalf("after %d events: %v, want client.ErrStreamFull", len(more), err)
	}
	b.waitConfirmed(more, 60*time.Second)
	for i := range 3 {
		r, err := worker.TrimLane(b.ctx, b.js, events.LaneInteractive)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Over || r.Pinned != lowest || r.Bound != lowest || (i > 0 && !r.Blocked) {
			t.Fatalf("trimming round %d: %+v; want over, bound by the pin at %d (blocked after the first)", i, r, lowest)
		}
	}
	if st := b.streamState(worker.EventsStream); st.FirstSeq != lowest {
		t.Fatalf("the stream's head is at %d; want it trimmed to the lowest pinned event, %d", st.FirstSeq, lowest)
	}
	if n := testutil.ToFloat64(b.metrics.Parked.WithLabelValues("interactive", "gone")); n != 0 {
		t.Fatalf("%v pinned events gone", n)
	}
	down.down.Store(false)
	b.storedOnce(down, pinned, 60*time.Second)
	if n := testutil.ToFloat64(b.metrics.Parked.WithLabelValues("interactive", "gone")); n != 0 {
		t.Errorf("%v pinned events gone", n)
	}
	if strings.Contains(b.logs.String(), sentinel) {
		t.Error("a value in the logs")
	}
}

// kmsOutage opens values with its Opener, but fails every open with a
// retryable error while down is set, as a KMS outage does.
type kmsOutage struct {
	events.Opener
	down atomic.Bool
}

func (k *kmsOutage) Open(ctx context.Context, sv *events.SealedValue, b events.Binding) ([]byte, error) {
	if k.down.Load() {
		return nil, providers.NewError("kms", "decrypt", "", providers.Retryable, fmt.Errorf("503 service unavailable: %w", providers.ErrUnavailable))
	}
	return k.Opener.Open(ctx, sv, b)
}

// TestParkedCopyIsNotPinned: sealed events are parked with their copies
// while their backend is down, and their lane messages then leave the
// events stream. When they come back their KMS is down too: their values
// do not open, so nothing proves them sealed in this delivery, but they
// are not parked again as pins (a pin names a lane message, and theirs
// is gone): they wait in the parked consumer. Once the KMS and the
// backend are back each is written and confirmed once. (Pinned, each came
// back to a lane message that was gone and was lost, terminated as
// keyrelay_parked_total{outcome="gone"}.)
func TestParkedCopyIsNotPinned(t *testing.T) {
	b, down := parkSetup(t, 256)
	kms := &kmsOutage{Opener: b.kr}
	b.opener = kms
	down.down.Store(true)
	b.startWorker(func(c *worker.Config) {
		// Every failure is handed back for 2 s (parked); the breaker
		// never opens.
		c.ParkAfter, c.RetryFor, c.RetryInitial, c.RetryMax = time.Second, 5*time.Minute, 2*time.Second, 2*time.Second
		c.InProcessAttempts, c.BreakerFailures = 1, 1000
	})
	var evs []*events.Event
	for i := range 3 {
		evs = append(evs, b.keyEvent(events.KeyCreated, "team-a", fmt.Sprintf("key-%d", i), 1, fmt.Sprintf("sk-a-%d", i)))
	}
	b.publish(evs...)
	waitWithin(t, 30*time.Second, "every event parked with its copy", func() bool { msgs, _ := b.parkedState(); return msgs == uint64(len(evs)) })
	kms.down.Store(true)
	s, err := b.js.Stream(b.ctx, worker.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(b.ctx); err != nil {
		t.Fatal(err)
	}
	waitWithin(t, 30*time.Second, "the copies handled with their KMS down", func() bool {
		return testutil.ToFloat64(b.metrics.Parked.WithLabelValues("interactive", "copy")) >= float64(2*len(evs)) ||
			testutil.ToFloat64(b.metrics.Parked.WithLabelValues("interactive", "gone")) > 0
	})
	if pins := b.pinnedInParked("sk-a-"); len(pins) != 0 {
		t.Errorf("pinned: %v", pins)
	}
	if n := testutil.ToFloat64(b.metrics.Parked.WithLabelValues("interactive", "gone")); n != 0 {
		t.Fatalf("%v events gone", n)
	}
	kms.down.Store(false)
	down.down.Store(false)
	b.storedOnce(down, evs, 60*time.Second)
	if n := testutil.ToFloat64(b.metrics.Parked.WithLabelValues("interactive", "gone")); n != 0 {
		t.Errorf("%v events gone", n)
	}
}
