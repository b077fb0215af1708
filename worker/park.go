package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
)

// Parking: a key event handed back for ParkAfter or longer (its provider
// failing, its backend's breaker open for a while) leaves its lane
// consumer's pending set, so that it holds none of the MaxAckPending slots
// the lane's other events, every team's, need. It waits in ParkedStream as
// a message schedule (nats-server 2.12+, ADR-51), as retirements not yet
// due do (see RetirePrefix), and comes back through the lane's parked
// consumer, handled as a redelivery of the lane message it stands for.
//
// A parked message names its lane message (lane, team, key, stream
// sequence) in its subject. An event safe to keep (keepsOriginal, as for
// the DLQ: its value proven sealed, or no value) is parked with a copy of
// it: the parked message's body is the lane message's bytes, its subject
// is in parkedSubjectHeader and its headers are the lane message's but for
// server headers (Nats-*). Any other (a plaintext value, where allowed, or
// a value whose open did not finish because its KMS is down) is parked as
// a pin: a bare reference, on subjects ending in ".pin", holding no copy
// and none of its headers, so no value that is not proven sealed is stored
// a second time. A pinned event depends on its lane message, so the
// trimmer keeps every lane message a pin names (lowestPinned); it holds no
// MaxAckPending slot while it waits. When the parked message comes back the
// worker reads the lane message from its lane's stream and handles its
// bytes, subject and headers, exactly as the lane delivers them; the copy
// must then be that message's, byte for byte, so a forged parked message
// can at most make a worker handle again an event the lane already holds,
// under that event's own identity (what a redelivery does). The copy is
// handled only when the lane message is no longer in its stream because
// the stream's head moved past it (events_max_age, or the trimmer of
// events_max_bytes, which does not wait for parked copies): a parked event
// with a copy outlives its lane message's retention. The copy is then an
// event like any other, validated in full, and can only claim a sequence
// the lane has already dropped. A pin whose lane message is gone
// (events_max_age, or a purge by hand) is terminated
// (keyrelay_parked_total{outcome="gone"}), as the lane message would have
// gone unhandled had it waited in its consumer. One that names no such message, another team, key or
// lane than that message's, or carries a copy that is not it, is
// terminated (keyrelay_parked_total{outcome="invalid"}) and acts on
// nothing.
//
// Subjects (ids are validated subject tokens, see RetirePrefix):
//
//   - keyrelay.parked.at.<lane>.<team>.<key>.<seq>: the schedule, firing
//     at the end of the delay onto the due subject; <lane> is
//     "interactive" or "bulk", <seq> the lane stream's sequence. One
//     subject per lane message: parking it again (a redelivery of the
//     original after a crash between the park and its ack) replaces the
//     schedule instead of adding a copy (the server rolls it up);
//   - keyrelay.parked.due.<lane>.<team>.<key>.<seq>: the schedule fired;
//     taken by the lane's parked consumer (ParkedConsumerOf), whose filter
//     leaves the schedules out;
//   - the same two followed by ".pin": a pin's schedule and due message.
//
// The message's identity is the lane message's throughout: its failure
// record (retry budget: failKey is the lane and sequence, in the process
// and in the ledger entry), its claims, its generation when the event
// carries none, its confirmation's stream_seq and lane, and its DLQ entry
// (the lane subject and sequence). Its deliveries are counted on from the
// lane's (parkedDeliveriesHeader).
const ParkedPrefix = "keyrelay.parked"

const (
	parkedAtToken  = "at"
	parkedDueToken = "due"
	// parkedPinToken ends the subjects of a pin (a parked message with no
	// copy).
	parkedPinToken = "pin"
)

// parkedDeliveriesHeader carries the deliveries the event had when it was
// parked, so its attempts and backoff keep counting. Only a count: a
// hostile value is clamped (maxParkedDeliveries).
const parkedDeliveriesHeader = "Keyrelay-Parked-Deliveries"

const maxParkedDeliveries = 1 << 20

// parkedSubjectHeader carries the lane message's subject in a parked
// message that holds a copy of it.
const parkedSubjectHeader = "Keyrelay-Parked-Subject"

// parkedHeaderPrefix is the prefix of the headers parking sets; with
// "Nats-" (the server's) they are not part of the copy's headers.
const parkedHeaderPrefix = "Keyrelay-Parked-"

// copiedHeader reports whether a lane message's header named name is
// part of its parked copy: not the server's (Nats-*, whatever the case: in
// a parked message they would schedule, deduplicate or expire it) and not
// parking's own.
func copiedHeader(name string) bool {
	l := strings.ToLower(name)
	return !strings.HasPrefix(l, "nats-") && !strings.HasPrefix(l, strings.ToLower(parkedHeaderPrefix))
}

// parkedMaxMsgBytes is ParkedStream's MaxMsgSize: a copy of the largest
// event the lanes accept, with room for the parking headers.
const parkedMaxMsgBytes = events.MaxEventBytes + 8192

// ParkAfterDefault is Config.ParkAfter's default: an event handed back for
// 10 s or more is parked. Below it the event waits in its consumer
// (NakWithDelay): a parked event comes back on a whole second at the
// earliest, and each park costs a stored message.
const ParkAfterDefault = 10 * time.Second

func laneToken(l events.Lane) string { return l.String() }

func parkedSubject(kind string, l events.Lane, team, key string, seq uint64) string {
	return ParkedPrefix + "." + kind + "." + laneToken(l) + "." + team + "." + key + "." + strconv.FormatUint(seq, 10)
}

// subject is r's parked subject of kind (parkedAtToken or parkedDueToken).
func (r parkedRef) subject(kind string) string {
	s := parkedSubject(kind, r.lane, r.team, r.key, r.seq)
	if r.pinned {
		s += "." + parkedPinToken
	}
	return s
}

// pinnedFilter matches the subjects of lane l's pins, schedules and due
// messages both.
func pinnedFilter(l events.Lane) string {
	return ParkedPrefix + ".*." + laneToken(l) + ".*.*.*." + parkedPinToken
}

// parkedFilter is the filter of lane l's parked consumer: its due subjects.
func parkedFilter(l events.Lane) string {
	return ParkedPrefix + "." + parkedDueToken + "." + laneToken(l) + ".>"
}

// parkedRef is what a parked message's subject names.
type parkedRef struct {
	lane      events.Lane
	team, key string
	seq       uint64
	// pinned: the subject ends in ".pin" (a parked message with no copy).
	pinned bool
}

// parseParkedDue reads a due subject; ok is false for anything else.
func parseParkedDue(subj string) (r parkedRef, ok bool) { return parseParked(parkedDueToken, subj) }

// parseParked reads a parked subject of kind (parkedAtToken or
// parkedDueToken); ok is false for anything else.
func parseParked(kind, subj string) (r parkedRef, ok bool) {
	rest, found := strings.CutPrefix(subj, ParkedPrefix+"."+kind+".")
	if !found {
		return r, false
	}
	t := strings.Split(rest, ".")
	if len(t) == 5 && t[4] == parkedPinToken {
		r.pinned, t = true, t[:4]
	}
	if len(t) != 4 {
		return r, false
	}
	switch t[0] {
	case laneToken(events.LaneInteractive):
		r.lane = events.LaneInteractive
	case laneToken(events.LaneBulk):
		r.lane = events.LaneBulk
	default:
		return r, false
	}
	if events.ValidateID("team_id", t[1]) != nil || events.ValidateID("key_id", t[2]) != nil {
		return r, false
	}
	seq, err := strconv.ParseUint(t[3], 10, 64)
	if err != nil || seq == 0 || strconv.FormatUint(seq, 10) != t[3] {
		return r, false
	}
	r.team, r.key, r.seq = t[1], t[2], seq
	return r, true
}

// parkedMsg is a parked message presented as the lane message it stands
// for: that message's subject, bytes and headers, its lane stream and
// sequence, and its deliveries counted on. Acks, naks and terminations go
// to the parked message.
type parkedMsg struct {
	jetstream.Msg
	orig *jetstream.RawStreamMsg
	md   *jetstream.MsgMetadata
	// seq is the parked message's own sequence in ParkedStream: which
	// copy of the lane message this is (Claim.Copy).
	seq uint64
	// fromCopy: the lane message is gone; this is the parked copy.
	fromCopy bool
}

// fromParkedCopy reports whether msg is a parked copy whose lane message
// is gone: a pin of it would name nothing.
func fromParkedCopy(msg jetstream.Msg) bool {
	pm, ok := msg.(*parkedMsg)
	return ok && pm.fromCopy
}

func (m *parkedMsg) Subject() string                           { return m.orig.Subject }
func (m *parkedMsg) Data() []byte                              { return m.orig.Data }
func (m *parkedMsg) Headers() nats.Header                      { return m.orig.Header }
func (m *parkedMsg) Metadata() (*jetstream.MsgMetadata, error) { return m.md, nil }

// errParkedInvalid marks a parked message that names no lane message it
// may stand for.
var errParkedInvalid = errors.New("invalid parked message")

// errParkedGone marks a pin whose lane message is no longer in its stream
// (streams.events_max_age, or a purge): its event is lost, as it would
// have been waiting in its lane consumer.
var errParkedGone = errors.New("pinned event gone")

// unpark resolves a parked message delivered by lane ln's parked consumer
// into the lane message it stands for. An invalid one is errParkedInvalid
// (terminated, never acted on); any other error is NATS trouble (the
// message waits).
func (w *Worker) unpark(ctx context.Context, ln *lane, msg jetstream.Msg) (jetstream.Msg, error) {
	ref, ok := parseParkedDue(msg.Subject())
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: not a due subject of the parked stream", errParkedInvalid)
	case ref.lane != ln.name:
		return nil, fmt.Errorf("%w: lane %s delivered by the %s lane's consumer", errParkedInvalid, ref.lane, ln.name)
	case ref.pinned && (len(msg.Data()) != 0 || msg.Headers().Get(parkedSubjectHeader) != ""):
		return nil, fmt.Errorf("%w: a pin carries no copy", errParkedInvalid)
	}
	md, err := msg.Metadata()
	if err != nil {
		return nil, fmt.Errorf("%w: no JetStream metadata: %w", errParkedInvalid, err)
	}
	s, err := w.laneStream(ctx, ref.lane)
	if err != nil {
		return nil, err
	}
	var orig *jetstream.RawStreamMsg
	err = w.infraDo(ctx, func(ctx context.Context) (err error) {
		orig, err = w.laneGet(ctx, s, ref)
		return err
	})
	fromCopy := false
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound) && ref.pinned:
		return nil, w.pinGone(ctx, s, ref)
	case errors.Is(err, jetstream.ErrMsgNotFound):
		if orig, err = w.parkedCopy(ctx, s, ref, msg); err != nil {
			return nil, err
		}
		fromCopy = true
	case err != nil:
		return nil, fmt.Errorf("read message %d of stream %s: %w", ref.seq, StreamOf(ref.lane), err)
	case !copyMatches(msg, orig):
		return nil, fmt.Errorf("%w: its copy is not message %d of stream %s", errParkedInvalid, ref.seq, StreamOf(ref.lane))
	}
	team, key := subjectIDs(orig.Subject)
	if events.LaneOf(orig.Subject) != ref.lane || team != ref.team || key != ref.key {
		return nil, fmt.Errorf("%w: message %d of stream %s is not a key event of team %s, key %s", errParkedInvalid, ref.seq, StreamOf(ref.lane), ref.team, ref.key)
	}
	if fromCopy {
		w.m.Parked.WithLabelValues(ref.lane.String(), "copy").Inc()
		w.log.Warn("parked event handled from its copy: its lane message is no longer retained (streams.events_max_age or events_max_bytes)",
			zap.String("team", ref.team), zap.String("key", ref.key), zap.String("stream", StreamOf(ref.lane)), zap.Uint64("stream_seq", ref.seq))
	}
	n := md.NumDelivered
	if prior, err := strconv.ParseUint(msg.Headers().Get(parkedDeliveriesHeader), 10, 64); err == nil {
		n += min(prior, maxParkedDeliveries)
	}
	vmd := *md
	vmd.Stream, vmd.Sequence.Stream, vmd.NumDelivered = StreamOf(ref.lane), ref.seq, n
	return &parkedMsg{Msg: msg, orig: orig, md: &vmd, seq: md.Sequence.Stream, fromCopy: fromCopy}, nil
}

// laneGet reads lane message ref.seq from lane stream s. The lane streams
// allow direct gets, which any replica answers, and on a cluster a replica
// may lag: its "not found" is asked of the stream's leader again (a stream
// message get) before the message is taken for gone, so a parked event is
// never handled from its copy, nor terminated, because one replica is
// behind.
func (w *Worker) laneGet(ctx context.Context, s jetstream.Stream, ref parkedRef) (*jetstream.RawStreamMsg, error) {
	var m *jetstream.RawStreamMsg
	var err error = jetstream.ErrMsgNotFound
	if h := laneDirectGetHook.Load(); h == nil || !(*h)() {
		m, err = s.GetMsg(ctx, ref.seq)
	}
	if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return m, err
	}
	lm, err := leaderGet(ctx, w.d.JS.Conn(), StreamOf(ref.lane), leaderGetRequest{Seq: ref.seq})
	if err != nil {
		return nil, err
	}
	h, err := lm.Headers()
	if err != nil {
		return nil, fmt.Errorf("stream %s: message %d: headers: %w", StreamOf(ref.lane), ref.seq, err)
	}
	return &jetstream.RawStreamMsg{Subject: lm.Subject, Sequence: lm.Seq, Header: h, Data: lm.Data}, nil
}

// laneDirectGetHook, when set (tests), makes laneGet's direct get answer
// "not found" whenever it returns true, as a lagging replica would.
var laneDirectGetHook atomic.Pointer[func() bool]

// copyMatches reports whether parked message msg's copy, if it carries
// one, is lane message orig: the same subject and bytes. A bare reference
// (no body, no subject header) matches.
func copyMatches(msg jetstream.Msg, orig *jetstream.RawStreamMsg) bool {
	subj := msg.Headers().Get(parkedSubjectHeader)
	if len(msg.Data()) == 0 && subj == "" {
		return true
	}
	return subj == orig.Subject && bytes.Equal(msg.Data(), orig.Data)
}

// laneHead is the first sequence lane l's stream s holds, read now (a
// message below it was removed from the head: by the stream's limits, or
// a purge).
func (w *Worker) laneHead(ctx context.Context, s jetstream.Stream, l events.Lane) (uint64, error) {
	var info *jetstream.StreamInfo
	if err := w.infraDo(ctx, func(ctx context.Context) (err error) {
		info, err = s.Info(ctx)
		return err
	}); err != nil {
		return 0, fmt.Errorf("stream %s: %w", StreamOf(l), err)
	}
	return info.State.FirstSeq, nil
}

// pinGone is the error of pin ref whose lane message is not in lane
// stream s: errParkedGone when the stream's head has moved past it
// (removed by its limits, or a purge), else errParkedInvalid (a sequence
// the stream has not reached, or removed in its middle: it pins nothing).
func (w *Worker) pinGone(ctx context.Context, s jetstream.Stream, ref parkedRef) error {
	first, err := w.laneHead(ctx, s, ref.lane)
	if err != nil {
		return err
	}
	if ref.seq >= first {
		return fmt.Errorf("%w: message %d is not in stream %s, whose head is message %d: the pin stands for nothing removed by the stream's limits",
			errParkedInvalid, ref.seq, StreamOf(ref.lane), first)
	}
	return fmt.Errorf("%w: message %d of stream %s, which it pins, is no longer there", errParkedGone, ref.seq, StreamOf(ref.lane))
}

// parkedCopy is the lane message ref names, rebuilt from parked message
// msg's copy, when that message is no longer in lane stream s: only when
// the stream's head has moved past it (removed by its limits), never for a
// sequence the stream has not reached or removed in its middle.
func (w *Worker) parkedCopy(ctx context.Context, s jetstream.Stream, ref parkedRef, msg jetstream.Msg) (*jetstream.RawStreamMsg, error) {
	subj := msg.Headers().Get(parkedSubjectHeader)
	if len(msg.Data()) == 0 || subj == "" {
		return nil, fmt.Errorf("%w: message %d is not in stream %s (removed by its limits, or never there) and the parked message holds no copy of it",
			errParkedInvalid, ref.seq, StreamOf(ref.lane))
	}
	first, err := w.laneHead(ctx, s, ref.lane)
	if err != nil {
		return nil, err
	}
	if ref.seq >= first {
		return nil, fmt.Errorf("%w: message %d is not in stream %s, whose head is message %d: its copy stands for nothing removed by the stream's limits",
			errParkedInvalid, ref.seq, StreamOf(ref.lane), first)
	}
	h := nats.Header{}
	for name, vals := range msg.Headers() {
		if copiedHeader(name) {
			h[name] = vals
		}
	}
	return &jetstream.RawStreamMsg{Subject: subj, Sequence: ref.seq, Header: h, Data: msg.Data()}, nil
}

// laneStream returns the stream of lane l.
func (w *Worker) laneStream(ctx context.Context, l events.Lane) (jetstream.Stream, error) {
	if l == events.LaneInteractive {
		return w.stream, nil
	}
	if s := w.bulkStream.Load(); s != nil {
		return *s, nil
	}
	var s jetstream.Stream
	err := w.infraDo(ctx, func(ctx context.Context) (err error) {
		s, err = w.d.JS.Stream(ctx, BulkStream)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", BulkStream, err)
	}
	w.bulkStream.Store(&s)
	return s, nil
}

// processParked handles one delivery of lane ln's parked consumer: as the
// lane message it stands for, or, when it stands for none, terminated.
func (w *Worker) processParked(ctx context.Context, ln *lane, msg jetstream.Msg, receivedAt time.Time) {
	// Reading the lane message may wait out NATS trouble for longer than
	// ack_wait: the parked message is worked on meanwhile, and must not be
	// delivered again (to this process or another) until it is handled.
	stopBeat := w.heartbeat(msg)
	pm, err := w.unpark(ctx, ln, msg)
	stopBeat()
	if err == nil {
		w.process(ctx, ln, pm, receivedAt)
		return
	}
	defer w.handled.Add(1)
	if errors.Is(err, errParkedGone) {
		w.m.Parked.WithLabelValues(ln.name.String(), "gone").Inc()
		w.log.Error("pinned event lost: its lane message was removed before it was handled (streams.events_max_age, or a purge)",
			zap.String("subject", clip(msg.Subject())), zap.String("reason", sanitize(err)))
		_ = msg.TermWithReason(clip(sanitize(err)))
		return
	}
	if errors.Is(err, errParkedInvalid) {
		w.m.Parked.WithLabelValues(ln.name.String(), "invalid").Inc()
		w.log.Error("parked message terminated: it stands for no event of its lane", zap.String("subject", clip(msg.Subject())),
			zap.String("reason", sanitize(err)))
		_ = msg.TermWithReason(clip(sanitize(err)))
		return
	}
	// NATS trouble: its lane message is not readable now.
	w.m.Retries.WithLabelValues("wait").Inc()
	w.log.Warn("parked message handed back: its event is not readable now", zap.String("subject", clip(msg.Subject())), zap.Error(err))
	_ = msg.NakWithDelay(w.retry.redeliveryDelay(1, time.Second))
}

// handBack hands msg (md its metadata) back for delay: parked when park is
// set and delay is ParkAfter or more, else (and when the park fails) with
// NakWithDelay. An event whose copy is safe to keep (keepsOriginal: its
// value proven sealed in this delivery, or no value) is parked with that
// copy; any other is pinned (no copy: its lane message stays, the trimmer
// keeps it), unless it was handled from its parked copy: its lane message
// is gone, so it waits in the parked consumer. It returns whether it was
// parked.
func (w *Worker) handBack(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, delay time.Duration, park, sealed bool) bool {
	if !park || w.cfg.ParkAfter <= 0 || delay < w.cfg.ParkAfter {
		// Short waits stay in the consumer.
		_ = msg.NakWithDelay(delay)
		return false
	}
	withCopy := keepsOriginal(msg, sealed)
	if !withCopy && fromParkedCopy(msg) {
		// A copy whose value did not open this time (its KMS down): a
		// pin would name a lane message that is gone.
		_ = msg.NakWithDelay(delay)
		return false
	}
	l := laneOfStream(md.Stream)
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), infraAttemptTimeout)
	err := w.park(pctx, msg, md, delay, withCopy)
	cancel()
	if err != nil {
		// Not parked: it waits in the consumer, as before parking existed.
		w.m.Parked.WithLabelValues(l.String(), "fallback").Inc()
		switch {
		case errors.Is(err, errParkedFull) && !w.parkedRoom.warnDue():
			// Full for as long as the outage lasts: every event waiting
			// would say so; once a minute is enough.
		default:
			w.log.Warn("event not parked; handed back to its consumer", zap.Uint64("stream_seq", md.Sequence.Stream),
				zap.Duration("delay", delay), zap.Error(err))
		}
		_ = msg.NakWithDelay(delay)
		return false
	}
	// Stored: the delivery ends. If this ack is lost, the lane message is
	// redelivered and parked again onto the same subject (the schedule is
	// replaced), or handled; a copy that comes back after it was applied
	// is a duplicate.
	w.m.Parked.WithLabelValues(l.String(), "parked").Inc()
	w.log.Debug("event parked", zap.Uint64("stream_seq", md.Sequence.Stream), zap.Duration("delay", delay))
	if h := parkedAckHook.Load(); h != nil && (*h)() {
		return true
	}
	_ = msg.Ack()
	return true
}

// park stores the schedule that brings the lane message of md back after
// delay (rounded up to the second: schedules name whole seconds): with a
// copy of msg when withCopy is set (the caller checked it is safe to
// keep), else a pin, which holds nothing of it.
func (w *Worker) park(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, delay time.Duration, withCopy bool) error {
	if h := parkHook.Load(); h != nil {
		if err := (*h)(); err != nil {
			return err
		}
	}
	l := laneOfStream(md.Stream)
	team, key := subjectIDs(msg.Subject())
	if team == "" || key == "" || events.LaneOf(msg.Subject()) != l {
		return fmt.Errorf("subject %q is not a key event's of lane %s", clip(msg.Subject()), l)
	}
	at := time.Now().Add(delay).UTC()
	if at.Nanosecond() != 0 {
		at = at.Truncate(time.Second).Add(time.Second)
	}
	ref := parkedRef{lane: l, team: team, key: key, seq: md.Sequence.Stream, pinned: !withCopy}
	m := &nats.Msg{Subject: ref.subject(parkedAtToken), Header: nats.Header{}}
	if withCopy {
		// The copy: the lane message's bytes, subject and headers but the
		// server's (and any that look like parking's own).
		for name, vals := range msg.Headers() {
			if copiedHeader(name) {
				m.Header[name] = vals
			}
		}
		m.Header.Set(parkedSubjectHeader, msg.Subject())
		m.Data = msg.Data()
	}
	m.Header.Set(scheduleHeader, "@at "+at.Format(time.RFC3339))
	m.Header.Set(scheduleTargetHeader, ref.subject(parkedDueToken))
	m.Header.Set(parkedDeliveriesHeader, strconv.FormatUint(md.NumDelivered, 10))
	// As the server counts it: the message and a record's overhead.
	size := int64(len(m.Subject)+len(m.Data)) + parkedRecordOverhead
	for k, vs := range m.Header {
		for _, v := range vs {
			size += int64(len(k) + len(v))
		}
	}
	if err := w.parkedRoom.take(ctx, w.d.JS, size); err != nil {
		return err
	}
	if _, err := w.d.JS.PublishMsg(ctx, m, jetstream.WithExpectStream(ParkedStream)); err != nil {
		w.parkedRoom.give(size)
		return fmt.Errorf("park in %s: %w", ParkedStream, err)
	}
	return nil
}

// parkedMaxBytesMetadata is the parked stream's metadata key holding its
// cap (TopologyConfig.ParkedMaxBytes; -1: none).
const parkedMaxBytesMetadata = "keyrelay.parked_max_bytes"

// parkedRecordOverhead bounds what a stored message adds to its subject,
// headers and data in a stream's byte count (the file store's record
// header and checksum).
const parkedRecordOverhead = 64

// errParkedFull: the parked stream holds its cap.
var errParkedFull = errors.New("the parked stream holds its cap (twice streams.events_max_bytes): the event waits in its lane consumer")

// parkedRoom keeps the parked stream's cap: a stream with message
// schedules cannot refuse publishes itself (DiscardNew). Parks are rare
// (long waits only), so the stream's size is read at most once a second;
// this process's parks since are counted on top of it, so a burst of parks
// stops at the cap too. Other processes' parks since the read are not
// counted: processes parking at once may pass it by that much.
type parkedRoom struct {
	mu       sync.Mutex
	read     time.Time
	capacity int64 // -1: none
	used     int64 // at the read, plus this process's parks since
	warned   time.Time
}

// warnDue reports whether a refused park is to be logged: once a minute.
func (r *parkedRoom) warnDue() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.warned) < time.Minute {
		return false
	}
	r.warned = time.Now()
	return true
}

// take reserves n bytes of the parked stream, or returns errParkedFull.
func (r *parkedRoom) take(ctx context.Context, js jetstream.JetStream, n int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.read) >= time.Second {
		s, err := js.Stream(ctx, ParkedStream)
		if err != nil {
			return fmt.Errorf("parked stream: %w", err)
		}
		info := s.CachedInfo()
		r.capacity = -1
		if c, err := strconv.ParseInt(info.Config.Metadata[parkedMaxBytesMetadata], 10, 64); err == nil && c > 0 {
			r.capacity = c // none recorded (a stream of an earlier version): none
		}
		r.used, r.read = int64(min(info.State.Bytes, math.MaxInt64)), time.Now()
	}
	if r.capacity > 0 && r.used+n > r.capacity {
		return errParkedFull
	}
	r.used += n
	return nil
}

// give returns n bytes take reserved for a park that was not stored.
func (r *parkedRoom) give(n int64) {
	r.mu.Lock()
	r.used -= n
	r.mu.Unlock()
}

// parkHook, when set (tests), runs before each park and fails it with its
// error. parkedAckHook, when set, runs after each park and, when it
// returns true, the parked message is not acknowledged (a crash between
// the park and the ack).
var (
	parkHook      atomic.Pointer[func() error]
	parkedAckHook atomic.Pointer[func() bool]
)

// parkedPending reports whether lane message seq of l (team's key) is
// parked: a schedule or a fired schedule for it is in ParkedStream. A
// claim of it may then still be written by that copy, although its lane
// consumer acknowledged it (outcomeOf). Read from the stream's leader (a
// lagging replica would say "not parked" of a park it has not stored
// yet), the schedule first: a schedule that fires between the two reads
// has stored its due message before it goes.
//
// An event parked again moves between a copy's subjects and a pin's (its
// value proven sealed in one delivery and not in the next, or the other
// way): the new schedule is stored before the fired one is acknowledged.
// So the pin's two are read before the copy's and again after them: a
// move either way between two reads of a pair is seen by the later pair.
// Only two moves within the reads (each one a park of a second or more)
// would pass unseen.
func (w *Worker) parkedPending(ctx context.Context, l events.Lane, team, key string, seq uint64) (bool, error) {
	pin := parkedRef{lane: l, team: team, key: key, seq: seq, pinned: true}
	cp := pin
	cp.pinned = false
	for _, subj := range []string{pin.subject(parkedAtToken), pin.subject(parkedDueToken), cp.subject(parkedAtToken),
		cp.subject(parkedDueToken), pin.subject(parkedAtToken), pin.subject(parkedDueToken)} {
		_, err := leaderGet(ctx, w.d.JS.Conn(), ParkedStream, leaderGetRequest{LastBySubj: subj})
		switch {
		case err == nil:
			return true, nil
		case !errors.Is(err, jetstream.ErrMsgNotFound):
			return false, err
		}
	}
	return false, nil
}
