package worker_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/worker"
)

// TestTrimmerLeavesRoomForTheLargestEvent: a lane stream capped at 512
// KiB (streams.events_max_bytes accepts any positive size) holds only
// handled events, about 88% of its cap: under the 90% high-water mark,
// but with less room left than one large event (the lane accepts up to
// events.MaxEventBytes). That event is refused (Discard: new); a
// trimming round must then make room for it, or the lane refuses it,
// and every larger event after it, for ever although nothing in the
// stream is unhandled. (Trimming only above 90% of the cap, nothing was
// ever trimmed and the publish was refused after any number of rounds.)
func TestTrimmerLeavesRoomForTheLargestEvent(t *testing.T) {
	const maxBytes = 512 << 10
	b := setup(t, setupOptions{topo: func(c *worker.TopologyConfig) { c.EventsMaxBytes = maxBytes; c.AckWait = time.Minute }})
	subj := events.EventsPrefix + ".team-a.key-big." + string(events.KeyCreated)
	small := bytes.Repeat([]byte("h"), 4<<10)
	n := 0
	for float64(b.streamState(worker.EventsStream).Bytes) < 0.88*maxBytes {
		if _, err := b.js.Publish(b.ctx, subj, small); err != nil {
			t.Fatalf("after %d messages: %v", n, err)
		}
		n++
	}
	// Every message handled (acknowledged).
	cons, err := b.js.Consumer(b.ctx, worker.EventsStream, worker.ConsumerName)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(b.ctx); err != nil {
			t.Fatal(err)
		}
	}
	if f := b.ackFloor(worker.EventsStream, worker.ConsumerName); f != uint64(n) {
		t.Fatalf("ack floor %d, want %d", f, n)
	}
	large := bytes.Repeat([]byte("L"), events.MaxEventBytes)
	_, err = b.js.Publish(b.ctx, subj, large)
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != 10077 {
		t.Fatalf("a large event into a stream %.0f%% full: %v, want refused for its size", 100*float64(b.streamState(worker.EventsStream).Bytes)/maxBytes, err)
	}
	for range 3 {
		if _, err := worker.TrimLane(b.ctx, b.js, events.LaneInteractive); err != nil {
			t.Fatal(err)
		}
	}
	st := b.streamState(worker.EventsStream)
	if _, err := b.js.Publish(b.ctx, subj, large); err != nil {
		t.Fatalf("after three trimming rounds (%d of %d bytes, from message %d, every message handled): %v", st.Bytes, maxBytes, st.FirstSeq, err)
	}
}
