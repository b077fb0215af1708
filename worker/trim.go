package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
)

// Trimming the lane streams.
//
// The lane streams (EventsStream, BulkStream) keep events for replay up
// to streams.events_max_age and streams.events_max_bytes. They discard
// new messages, not old ones (jetstream.DiscardNew): when a stream holds
// MaxBytes the server refuses further publishes (client.ErrStreamFull; the
// publisher retries, the outbox relay keeps its rows) instead of removing
// its oldest events whether or not they were handled. With DiscardOld a
// backlog of a few minutes' traffic on a busy gateway silently lost
// accepted events.
//
// The rolling window DiscardOld gave is kept by trimLanes, over handled
// events only: every TrimInterval each worker process reads each lane
// stream's state and, when it holds more than TrimHighWater of its
// MaxBytes, purges from its head down toward TrimLowWater (the count
// estimated from the average message size), never past the lane
// consumer's ack floor: every message up to it is acknowledged, the next
// one is not.
//
// A parked event (park.go) was acknowledged on its lane and is not
// handled yet, but one parked with a copy does not hold the trimming back:
// the copy is handled when the lane message is gone. So one team's backend
// down for hours does not fill a lane stream that every team publishes
// to. A pinned event (parked without a copy: its value is not proven
// sealed) does: the trimmer never purges the lowest sequence a pin names
// (lowestPinned), as it would not purge that event had it waited in its
// consumer. The pins are read after the ack floor, and a worker stores a
// pin before it acknowledges the lane message: a floor past the message
// was read after its pin was stored.
//
// The ack floor only moves forward (a message once acknowledged stays
// so), so several processes trimming at once are safe: every message a
// purge removes was acknowledged when its process read the floor,
// whatever the others remove meanwhile. A missing consumer or any NATS
// error skips that stream for the round (logged when it starts, then once
// per trimLogEvery, and when it ends; never fatal).
const (
	// TrimInterval is how often each worker process trims the lane
	// streams.
	TrimInterval = 5 * time.Second
	// TrimHighWater is the share of a lane stream's MaxBytes above which
	// it is trimmed; TrimLowWater the share it is trimmed down to. Both
	// leave room for the largest message the stream accepts (trimMarks).
	TrimHighWater = 0.9
	TrimLowWater  = 0.8
)

// trimCallTimeout bounds one trimming round's NATS calls for one stream.
const trimCallTimeout = 3 * time.Second

// TrimResult is what one trimming round did to a lane stream.
type TrimResult struct {
	// Over: the stream held more than TrimHighWater of its MaxBytes.
	Over bool
	// Blocked: it was over and its first message is not acknowledged
	// yet: nothing could be trimmed.
	Blocked bool
	// Purged is how many messages this round removed from its head.
	Purged uint64
	// Bound is the first sequence the round had to keep (the first
	// unacknowledged one, or the lowest a pin names), when it was over.
	Bound uint64
	// Pinned is the lowest sequence a pin names, when it was over and
	// there was one (0: none).
	Pinned uint64
}

// trimLogEvery is how often a lasting trimming failure of one stream is
// logged again.
const trimLogEvery = time.Minute

// laneTrimmer trims the lane streams and remembers, per stream, since when
// its rounds fail, so that a lasting problem is logged when it starts, then
// once per trimLogEvery, and when it ends.
type laneTrimmer struct {
	js      jetstream.JetStream
	m       *Metrics
	log     *zap.Logger
	failing map[string]*trimFailure
}

type trimFailure struct {
	since, logged time.Time
	rounds        int
}

func newLaneTrimmer(js jetstream.JetStream, m *Metrics, log *zap.Logger) *laneTrimmer {
	return &laneTrimmer{js: js, m: m, log: log, failing: map[string]*trimFailure{}}
}

// trimLanes trims both lane streams every TrimInterval until ctx ends.
func (w *Worker) trimLanes(ctx context.Context) {
	t := newLaneTrimmer(w.d.JS, w.m, w.log)
	tick := time.NewTicker(TrimInterval)
	defer tick.Stop()
	for {
		t.round(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// round trims each lane stream once.
func (t *laneTrimmer) round(ctx context.Context) {
	for _, l := range []events.Lane{events.LaneInteractive, events.LaneBulk} {
		name := StreamOf(l)
		cctx, cancel := context.WithTimeout(ctx, trimCallTimeout)
		r, err := trimLane(cctx, t.js, l)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			now := time.Now()
			f := t.failing[name]
			if f == nil {
				f = &trimFailure{since: now}
				t.failing[name] = f
			}
			f.rounds++
			if f.rounds == 1 || now.Sub(f.logged) >= trimLogEvery {
				f.logged = now
				t.log.Warn("lane stream not trimmed: its handled events stay until a round succeeds", zap.String("stream", name),
					zap.Int("failed_rounds", f.rounds), zap.Duration("failing_for", now.Sub(f.since)), zap.Error(err))
			}
			continue
		}
		if f := t.failing[name]; f != nil {
			delete(t.failing, name)
			t.log.Info("lane stream trimmed again", zap.String("stream", name), zap.Int("failed_rounds", f.rounds))
		}
		if r.Purged > 0 {
			t.m.Trimmed.WithLabelValues(name).Add(float64(r.Purged))
			t.log.Debug("lane stream trimmed", zap.String("stream", name), zap.Uint64("purged", r.Purged), zap.Uint64("first_unhandled", r.Bound))
		}
		blocked := 0.0
		if r.Blocked {
			blocked = 1
		}
		t.m.TrimBlocked.WithLabelValues(name).Set(blocked)
	}
}

// trimLane runs one trimming round on lane l's stream (see TrimInterval).
func trimLane(ctx context.Context, js jetstream.JetStream, l events.Lane) (TrimResult, error) {
	var r TrimResult
	name := StreamOf(l)
	s, err := js.Stream(ctx, name)
	if err != nil {
		return r, fmt.Errorf("stream %s: %w", name, err)
	}
	info := s.CachedInfo()
	maxBytes, st := info.Config.MaxBytes, info.State
	if maxBytes <= 0 || st.Msgs == 0 {
		return r, nil
	}
	high, low := trimMarks(maxBytes, info.Config.MaxMsgSize)
	if float64(st.Bytes) <= high {
		return r, nil
	}
	r.Over = true
	// The first unacknowledged message (read after the stream's state).
	c, err := js.Consumer(ctx, name, ConsumerOf(l))
	if err != nil {
		return r, fmt.Errorf("consumer %s of stream %s: %w", ConsumerOf(l), name, err)
	}
	bound := c.CachedInfo().AckFloor.Stream + 1
	// Then the pins (see above: after the floor).
	pinned, err := lowestPinned(ctx, js, l)
	if err != nil {
		return r, err
	}
	if r.Pinned = pinned; pinned != 0 {
		bound = min(bound, pinned)
	}
	r.Bound = bound
	if bound <= st.FirstSeq {
		r.Blocked = true
		return r, nil
	}
	// Down toward the low-water mark, by the average message size.
	avg := max(1, st.Bytes/st.Msgs)
	excess := st.Bytes - uint64(low)
	upto := min(st.FirstSeq+(excess+avg-1)/avg, bound, st.LastSeq+1)
	n, err := purgeBelow(ctx, js.Conn(), name, upto)
	if err != nil {
		return r, err
	}
	r.Purged = n
	return r, nil
}

// lowestPinned is the lowest sequence of lane l that a pin in the parked
// stream names, its schedule or its due message (0: none). A parked
// stream that does not exist (a deployment of a version before parking)
// holds none.
func lowestPinned(ctx context.Context, js jetstream.JetStream, l events.Lane) (uint64, error) {
	s, err := js.Stream(ctx, ParkedStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", ParkedStream, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(pinnedFilter(l)))
	if err != nil {
		return 0, fmt.Errorf("stream %s: pins of lane %s: %w", ParkedStream, l, err)
	}
	var low uint64
	for subj := range info.State.Subjects {
		ref, ok := parseParked(parkedAtToken, subj)
		if !ok {
			ref, ok = parseParked(parkedDueToken, subj)
		}
		if ok && ref.pinned && ref.lane == l && (low == 0 || ref.seq < low) {
			low = ref.seq
		}
	}
	return low, nil
}

// trimRecordSlack is what a stored message takes beyond its size as
// MaxMsgSize counts it (its subject and record framing), with a margin.
const trimRecordSlack = 1024

// trimMarks are the sizes in bytes above which a lane stream of maxBytes,
// accepting messages of up to maxMsgSize, is trimmed, and down to which.
// TrimHighWater and TrimLowWater of maxBytes, but with room left for the
// largest message the stream accepts (two below the low-water mark): the
// stream refuses a publish that does not fit (DiscardNew), so on a cap
// whose 10% is less than one large event a trimmer waiting for 90% let
// the lane refuse that event for ever with nothing but handled events in
// it. A cap smaller than one message: every handled event is trimmed.
func trimMarks(maxBytes int64, maxMsgSize int32) (high, low float64) {
	room := 0.0
	if maxMsgSize > 0 {
		room = float64(maxMsgSize) + trimRecordSlack
	}
	high = min(TrimHighWater*float64(maxBytes), float64(maxBytes)-room)
	low = max(0, min(TrimLowWater*float64(maxBytes), float64(maxBytes)-2*room))
	return max(0, high), low
}

// purgeBelow removes stream's messages below sequence upto and returns how
// many it removed. (jetstream.Stream.Purge does not say how many.)
func purgeBelow(ctx context.Context, nc *nats.Conn, stream string, upto uint64) (uint64, error) {
	body, err := json.Marshal(struct {
		Seq uint64 `json:"seq"`
	}{upto})
	if err != nil {
		return 0, err
	}
	m, err := requestMsg(ctx, nc, &nats.Msg{Subject: "$JS.API.STREAM.PURGE." + stream, Data: body})
	if err != nil {
		return 0, fmt.Errorf("stream %s: purge below %d: %w", stream, upto, err)
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Success bool                `json:"success"`
		Purged  uint64              `json:"purged"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return 0, fmt.Errorf("stream %s: purge: unreadable reply: %w", stream, err)
	}
	if resp.Error != nil {
		return 0, fmt.Errorf("stream %s: purge below %d: %w", stream, upto, resp.Error)
	}
	if !resp.Success {
		return 0, fmt.Errorf("stream %s: purge below %d: not done", stream, upto)
	}
	return resp.Purged, nil
}
