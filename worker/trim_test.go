package worker_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/worker"
)

// smallLanes caps each lane stream at 64 KiB (about a hundred key events).
func smallLanes(c *worker.TopologyConfig) { c.EventsMaxBytes = 64 << 10 }

// fillLane publishes key events (one key each, generation 1) on lane l
// until the stream refuses one, and returns the accepted ones and the
// refusal.
func (b *bundle) fillLane(l events.Lane, team string) ([]*events.Event, error) {
	b.t.Helper()
	var accepted []*events.Event
	for i := range 5000 {
		ev := b.keyEvent(events.KeyCreated, team, fmt.Sprintf("key-%d", i), 1, fmt.Sprintf("sk-%d", i))
		if _, err := b.pub.PublishIn(b.ctx, l, ev); err != nil {
			return accepted, err
		}
		accepted = append(accepted, ev)
	}
	b.t.Fatalf("%d events accepted by a lane stream of %d bytes: it never refused one", len(accepted), b.topo.EventsMaxBytes)
	return nil, nil
}

// streamState reads a stream's state.
func (b *bundle) streamState(name string) jetstream.StreamState {
	b.t.Helper()
	s, err := b.js.Stream(b.ctx, name)
	if err != nil {
		b.t.Fatal(err)
	}
	return s.CachedInfo().State
}

// ackFloor reads a consumer's ack floor (stream sequence).
func (b *bundle) ackFloor(stream, consumer string) uint64 {
	b.t.Helper()
	c, err := b.js.Consumer(b.ctx, stream, consumer)
	if err != nil {
		b.t.Fatal(err)
	}
	return c.CachedInfo().AckFloor.Stream
}

// TestFullLaneStreamRefusesPublishesAndLosesNothing: with no worker
// running, a lane stream at streams.events_max_bytes refuses the next
// publish with client.ErrStreamFull and keeps every event it accepted
// (none dropped from the head: with DiscardOld, it dropped the oldest
// events unhandled and never refused). A worker then confirms every
// accepted event, and its trimmer frees room for new publishes, trimming
// only handled events.
func TestFullLaneStreamRefusesPublishesAndLosesNothing(t *testing.T) {
	b := setup(t, setupOptions{topo: smallLanes})
	accepted, err := b.fillLane(events.LaneInteractive, "team-a")
	if !errors.Is(err, client.ErrStreamFull) {
		t.Fatalf("after %d events: %v, want client.ErrStreamFull", len(accepted), err)
	}
	if st := b.streamState(worker.EventsStream); st.FirstSeq != 1 || st.Msgs != uint64(len(accepted)) || st.LastSeq != uint64(len(accepted)) {
		t.Fatalf("stream holds %d messages, %d to %d; want all %d accepted, from 1", st.Msgs, st.FirstSeq, st.LastSeq, len(accepted))
	}
	t.Logf("%d events accepted, then: %v", len(accepted), err)

	b.startWorker(nil)
	for id, c := range b.waitConfirmed(accepted, time.Minute) {
		if c.Status != events.StatusStored {
			t.Errorf("event %s confirmed %s (%s), want stored", id, c.Status, c.Reason)
		}
	}
	// Every event handled: the trimmer makes room (within a few rounds).
	var after *events.Event
	testenv.Eventually(t, time.Minute, "a publish accepted again", func() bool {
		ev := b.keyEvent(events.KeyCreated, "team-a", "key-after", 1, "sk-after")
		_, err := b.pub.Publish(b.ctx, ev)
		if err == nil {
			after = ev
			return true
		}
		if !errors.Is(err, client.ErrStreamFull) {
			t.Fatalf("publish: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
		return false
	})
	b.waitConfirmed([]*events.Event{after}, time.Minute)
	st := b.streamState(worker.EventsStream)
	if floor := b.ackFloor(worker.EventsStream, worker.ConsumerName); st.FirstSeq <= 1 || st.FirstSeq > floor+1 {
		t.Fatalf("first sequence %d after trimming, ack floor %d: want some trimmed, none past the floor", st.FirstSeq, floor)
	}
	if n := testutil.ToFloat64(b.metrics.Trimmed.WithLabelValues(worker.EventsStream)); n < 1 {
		t.Fatalf("keyrelay_stream_trimmed_messages_total = %v, want the trimmed events counted", n)
	}
	if cs := b.confirmations(len(accepted)+1, time.Minute); len(cs) != len(accepted)+1 || len(byEventID(cs)) != len(accepted)+1 {
		t.Fatalf("%d confirmations of %d events, want one for each of %d", len(cs), len(byEventID(cs)), len(accepted)+1)
	}
}

// TestTrimmerStopsAtTheAckFloor: a full lane stream whose consumer has
// acknowledged messages 1-5 and 7-40 but not 6 is trimmed by several
// rounds at once (as several processes do) to message 6 and no further,
// and reported blocked (keyrelay_stream_trim_blocked); once 6 is
// acknowledged, the next round trims down toward the low-water mark and
// counts what it removed. On one server and on a 3-node cluster.
func TestTrimmerStopsAtTheAckFloor(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cluster bool
	}{{"one server", false}, {"cluster", true}} {
		t.Run(tc.name, func(t *testing.T) { trimmerStopsAtTheAckFloor(t, tc.cluster) })
	}
}

func trimmerStopsAtTheAckFloor(t *testing.T, cluster bool) {
	b := setup(t, setupOptions{cluster: cluster, topo: func(c *worker.TopologyConfig) { smallLanes(c); c.AckWait = time.Minute }})
	accepted, err := b.fillLane(events.LaneInteractive, "team-a")
	if !errors.Is(err, client.ErrStreamFull) || len(accepted) < 60 {
		t.Fatalf("after %d events: %v, want client.ErrStreamFull after 60 or more", len(accepted), err)
	}
	cons, err := b.js.Consumer(b.ctx, worker.EventsStream, worker.ConsumerName)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(40, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var six jetstream.Msg
	n := 0
	for m := range batch.Messages() {
		n++
		md, _ := m.Metadata()
		if md.Sequence.Stream == 6 {
			six = m
			continue
		}
		if err := m.DoubleAck(b.ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n != 40 || six == nil {
		t.Fatalf("fetched %d messages (six: %v), want 40", n, six != nil)
	}
	if f := b.ackFloor(worker.EventsStream, worker.ConsumerName); f != 5 {
		t.Fatalf("ack floor %d, want 5", f)
	}

	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 3 {
				if _, err := worker.TrimLane(b.ctx, b.js, events.LaneInteractive); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	st := b.streamState(worker.EventsStream)
	if st.FirstSeq != 6 || st.Msgs != uint64(len(accepted)-5) {
		t.Fatalf("after trimming: %d messages from %d; want %d from 6 (the unacknowledged one)", st.Msgs, st.FirstSeq, len(accepted)-5)
	}
	s, _ := b.js.Stream(b.ctx, worker.EventsStream)
	if _, err := s.GetMsg(b.ctx, 6); err != nil {
		t.Fatalf("the unacknowledged message: %v", err)
	}
	r, err := worker.TrimLane(b.ctx, b.js, events.LaneInteractive)
	if err != nil || !r.Over || !r.Blocked || r.Purged != 0 || r.Bound != 6 {
		t.Fatalf("round at the floor: %+v, %v; want over, blocked at 6, nothing purged", r, err)
	}
	worker.TrimRound(b.ctx, b.js, b.metrics)
	if g := testutil.ToFloat64(b.metrics.TrimBlocked.WithLabelValues(worker.EventsStream)); g != 1 {
		t.Fatalf("keyrelay_stream_trim_blocked = %v, want 1", g)
	}

	if err := six.DoubleAck(b.ctx); err != nil {
		t.Fatal(err)
	}
	worker.TrimRound(b.ctx, b.js, b.metrics)
	st = b.streamState(worker.EventsStream)
	if st.FirstSeq <= 6 || st.FirstSeq > 41 || float64(st.Bytes) > worker.TrimHighWater*float64(b.topo.EventsMaxBytes) {
		t.Fatalf("after the ack: %d messages (%d bytes) from %d; want trimmed below the high-water mark, at most to 41", st.Msgs, st.Bytes, st.FirstSeq)
	}
	if n := testutil.ToFloat64(b.metrics.Trimmed.WithLabelValues(worker.EventsStream)); n != float64(st.FirstSeq-6) {
		t.Fatalf("keyrelay_stream_trimmed_messages_total = %v, want %d", n, st.FirstSeq-6)
	}
	if g := testutil.ToFloat64(b.metrics.TrimBlocked.WithLabelValues(worker.EventsStream)); g != 0 {
		t.Fatalf("keyrelay_stream_trim_blocked = %v, want 0", g)
	}
	if _, err := b.pub.Publish(b.ctx, b.keyEvent(events.KeyCreated, "team-a", "key-after", 1, "sk")); err != nil {
		t.Fatalf("publish after trimming: %v", err)
	}
}

// TestTrimmerTrimsPastParkedEvents: team-a's backend is down and its
// events are parked (acknowledged on their lane). Team-b's traffic then
// fills the small lane stream over and over: the trimmer does not wait
// for the parked events, it trims past them, so team-b's publishes keep
// being accepted. When team-a's backend is back each parked event is
// written once and confirmed once, from its parked message's copy.
// (Bounded by the parked events instead, the trimmer stopped at the first
// of them and the lane refused every team's publishes from then on.)
func TestTrimmerTrimsPastParkedEvents(t *testing.T) {
	down := &switchedOutage{puts: map[string]int{}}
	b := setup(t, setupOptions{
		backends: []string{"backend_b"},
		wrap:     map[string]func(providers.Provider) providers.Provider{"local": func(p providers.Provider) providers.Provider { down.Provider = p; return down }},
		topo:     smallLanes,
	})
	b.startWorker(func(c *worker.Config) { c.ParkAfter = time.Second })
	b.publish(b.settingsEvent("team-b", 1, &events.TeamSettings{Backend: "backend_b"}))
	b.confirmations(1, 30*time.Second)
	down.down.Store(true)
	var parked []*events.Event
	for i := range 5 {
		parked = append(parked, b.keyEvent(events.KeyCreated, "team-a", fmt.Sprintf("key-%d", i), 1, fmt.Sprintf("sk-a-%d", i)))
	}
	b.publish(parked...)
	waitWithin(t, 30*time.Second, "team-a's events parked", func() bool { msgs, _ := b.parkedState(); return msgs == uint64(len(parked)) })
	last := b.streamState(worker.EventsStream).LastSeq
	// Team-b's traffic, about twice the stream's size: each refused
	// publish is tried again after a trimming round (run here too, so the
	// test need not wait for the worker's every 5 s).
	var bEvs []*events.Event
	for i := range 300 {
		ev := b.keyEvent(events.KeyCreated, "team-b", fmt.Sprintf("key-%d", i), 1, "sk-b")
		for {
			_, err := b.pub.Publish(b.ctx, ev)
			if err == nil {
				break
			}
			if !errors.Is(err, client.ErrStreamFull) {
				t.Fatal(err)
			}
			if b.ctx.Err() != nil {
				t.Fatalf("team-b's event %d never accepted: the lane stayed full", i)
			}
			time.Sleep(100 * time.Millisecond)
			if _, err := worker.TrimLane(b.ctx, b.js, events.LaneInteractive); err != nil {
				t.Fatal(err)
			}
		}
		bEvs = append(bEvs, ev)
	}
	b.waitConfirmed(bEvs, 60*time.Second)
	if first := b.streamState(worker.EventsStream).FirstSeq; first <= last {
		t.Fatalf("the stream's head is at %d: not trimmed past the parked events (up to %d)", first, last)
	}
	down.down.Store(false)
	b.storedOnce(down, parked, 60*time.Second)
	if got := testutil.ToFloat64(b.metrics.Parked.WithLabelValues("interactive", "copy")); got < float64(len(parked)) {
		t.Errorf("handled from a copy %v times, want at least %d", got, len(parked))
	}
}

// TestEnsureTopologyMakesLaneStreamsDiscardNew: lane streams created by
// an earlier release (DiscardOld, the default) are updated in place to
// DiscardNew, keeping their events, on one server and on a cluster.
func TestEnsureTopologyMakesLaneStreamsDiscardNew(t *testing.T) {
	for name, cluster := range map[string]bool{"one server": false, "cluster": true} {
		t.Run(name, func(t *testing.T) {
			b := setup(t, setupOptions{cluster: cluster, topo: smallLanes})
			ev := b.keyEvent(events.KeyCreated, "team-a", "key-1", 1, "sk")
			for _, l := range []events.Lane{events.LaneInteractive, events.LaneBulk} {
				name := worker.StreamOf(l)
				if err := b.js.DeleteStream(b.ctx, name); err != nil {
					t.Fatal(err)
				}
				// The earlier release's configuration: no Discard.
				cfg := jetstream.StreamConfig{Name: name, Subjects: []string{events.EventsPrefix + ".>", events.SettingsPrefix + ".>"},
					Retention: jetstream.LimitsPolicy, Storage: jetstream.FileStorage, Replicas: b.topo.Replicas, Duplicates: time.Minute,
					MaxBytes: b.topo.EventsMaxBytes, MaxMsgSize: events.MaxEventBytes + 4096, AllowDirect: true}
				if l == events.LaneBulk {
					cfg.Subjects = []string{events.BulkPrefix + ".>"}
				}
				if _, err := b.js.CreateStream(b.ctx, cfg); err != nil {
					t.Fatal(err)
				}
				if _, err := b.pub.PublishIn(b.ctx, l, ev); err != nil {
					t.Fatal(err)
				}
			}
			if err := worker.EnsureTopology(b.ctx, b.js, b.topo); err != nil {
				t.Fatalf("upgrade: %v", err)
			}
			for _, l := range []events.Lane{events.LaneInteractive, events.LaneBulk} {
				s, err := b.js.Stream(b.ctx, worker.StreamOf(l))
				if err != nil {
					t.Fatal(err)
				}
				info := s.CachedInfo()
				if info.Config.Discard != jetstream.DiscardNew || info.Config.MaxBytes != b.topo.EventsMaxBytes || info.State.Msgs != 1 {
					t.Fatalf("%s after the upgrade: discard %v, max bytes %d, %d messages; want DiscardNew, %d, the 1 event kept",
						worker.StreamOf(l), info.Config.Discard, info.Config.MaxBytes, info.State.Msgs, b.topo.EventsMaxBytes)
				}
			}
			if _, err := b.fillLane(events.LaneBulk, "team-b"); !errors.Is(err, client.ErrStreamFull) {
				t.Fatalf("filling the upgraded bulk stream: %v, want client.ErrStreamFull", err)
			}
		})
	}
}
