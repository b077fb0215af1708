package worker_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/worker"
)

// TestParkedStreamIsCapped: the parked stream's messages carry copies of
// lane events that outlive their lane messages, so during a long outage
// they grew without bound. It is now capped (ParkedMaxBytes; by default
// twice the lane cap): once it holds that much, events are not parked but
// wait in their lane consumer, and every event is still written once and
// confirmed once when the backend is back.
func TestParkedStreamIsCapped(t *testing.T) {
	b, down := parkSetup(t, 256, func(c *worker.TopologyConfig) { c.ParkedMaxBytes = worker.ParkedMinBytes })
	s, err := b.js.Stream(b.ctx, worker.ParkedStream)
	if err != nil {
		t.Fatal(err)
	}
	// The workers keep the cap (a stream with schedules cannot refuse
	// publishes itself); the stream only records it.
	if got := s.CachedInfo().Config.Metadata["keyrelay.parked_max_bytes"]; got != fmt.Sprint(worker.ParkedMinBytes) {
		t.Fatalf("parked stream's recorded cap %q, want %d", got, worker.ParkedMinBytes)
	}
	down.down.Store(true)
	b.startWorker(func(c *worker.Config) { c.ParkAfter = time.Second })
	// About 8 KiB per parked copy: the cap holds a handful of them.
	value := "sk-cap-" + strings.Repeat("x", 6000)
	var evs []*events.Event
	for i := range 24 {
		evs = append(evs, b.keyEvent(events.KeyCreated, "team-a", fmt.Sprintf("key-%02d", i), 1, value))
	}
	b.publish(evs...)
	waitWithin(t, 30*time.Second, "parks refused by the full parked stream", func() bool {
		return testutil.ToFloat64(b.metrics.Parked.WithLabelValues("interactive", "parked")) > 0 &&
			testutil.ToFloat64(b.metrics.Parked.WithLabelValues("interactive", "fallback")) > 0
	})
	info, err := s.Info(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Bytes > uint64(worker.ParkedMinBytes) {
		t.Fatalf("parked stream holds %d bytes, over its cap %d", info.State.Bytes, worker.ParkedMinBytes)
	}
	down.down.Store(false)
	b.storedOnce(down, evs, 60*time.Second)
	for id, n := range b.confirmationCounts() {
		if n != 1 {
			t.Errorf("event %s: %d confirmations", id, n)
		}
	}
}

// TestParkedStreamCapDefaults: 0 is twice the lane cap, at least one
// largest parked message; no lane cap or -1 is none.
func TestParkedStreamCapDefaults(t *testing.T) {
	tests := map[string]struct {
		events, parked, want int64
	}{
		"twice the lanes' cap": {events: 1 << 30, want: 2 << 30},
		"set":                  {events: 1 << 30, parked: 1 << 20, want: 1 << 20},
		"at least one message": {events: 1 << 10, want: worker.ParkedMinBytes},
		"no lane cap":          {events: -1, want: -1},
		"none":                 {events: 1 << 30, parked: -1, want: -1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := worker.ParkedMaxBytesOf(worker.TopologyConfig{EventsMaxBytes: tc.events, ParkedMaxBytes: tc.parked}); got != tc.want {
				t.Fatalf("parked cap %d, want %d", got, tc.want)
			}
		})
	}
}
