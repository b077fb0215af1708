package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
)

// Overdue parked schedules. A parked event's lane message is acknowledged
// once its schedule is stored, so the schedule is all that brings the event
// back. The server fires a schedule by storing its due message and then
// removing it; when that store fails (the account's storage full, say) the
// schedule stays unfired, and nats-server retries it only after a change
// of the stream's leader. Nothing else would bring the event back: it
// would wait, unhandled and unconfirmed, for as long as that takes.
//
// So every process looks once a minute (ParkedCheckEvery) at the oldest
// schedules of each lane, at most parkedRearmScan of them, and stores
// again, to fire a second later, each one whose time (its Nats-Schedule,
// or its stored time when it has none) lies more than ParkedOverdueMargin
// behind the server's time. Storing it again replaces it (the server keeps
// one schedule per subject), with the same copy and headers, and only if
// it is still the subject's last message
// (Nats-Expected-Last-Subject-Sequence): processes re-arming at once, or a
// schedule firing meanwhile, leave one schedule. A schedule that fires
// twice for all that is a second delivery of the parked event, which the
// handler treats as a redelivery (a duplicate is confirmed once). The
// oldest schedules are the ones to look at: a park delay is at most
// 1.5 × max(retry_max, 5 minutes) (breakerWait, redeliveryDelay), or a
// provider's Retry-After where that is longer, so a schedule left behind
// comes to the front of the stream within that long, whatever is parked
// after it. keyrelay_parked_overdue says how many were
// found; one that stays overdue (storing it again fails too) keeps it up,
// and the alert KeyrelayParkedOverdue fires.
//
// The times are judged by the server's: the stored times read here, moved
// on by the monotonic clock (ledgerClock), so a process whose clock runs
// ahead does not take schedules for overdue early.

// ParkedCheckEvery is how often a process looks for overdue schedules.
const ParkedCheckEvery = time.Minute

// ParkedOverdueMargin is how far past its time a schedule must be to be
// taken for one the server failed to fire.
const ParkedOverdueMargin = time.Minute

// parkedRearmScan bounds the schedules one look reads per lane.
const parkedRearmScan = 1024

// parkedCheckHook, when set (tests), replaces ParkedCheckEvery and
// ParkedOverdueMargin.
var parkedCheckHook atomic.Pointer[[2]time.Duration]

func parkedCheckTimes() (every, margin time.Duration) {
	if h := parkedCheckHook.Load(); h != nil {
		return h[0], h[1]
	}
	return ParkedCheckEvery, ParkedOverdueMargin
}

// rearmParked looks for overdue schedules every ParkedCheckEvery until ctx
// ends.
func (w *Worker) rearmParked(ctx context.Context) {
	every, _ := parkedCheckTimes()
	tick := time.NewTicker(every)
	defer tick.Stop()
	var failing bool
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, l := range []events.Lane{events.LaneInteractive, events.LaneBulk} {
			overdue, rearmed, err := w.rearmOverdue(ctx, l)
			if ctx.Err() != nil {
				return
			}
			w.m.ParkedOverdue.WithLabelValues(l.String()).Set(float64(overdue))
			if rearmed > 0 {
				w.m.Parked.WithLabelValues(l.String(), "rearmed").Add(float64(rearmed))
			}
			switch {
			case err != nil && !failing:
				failing = true
				w.log.Warn("overdue parked schedules not checked: NATS trouble; checked again in a minute", zap.String("lane", l.String()), zap.Error(err))
			case err == nil:
				failing = false
			}
			if overdue > 0 {
				w.log.Warn("parked events' schedules were past their time without firing: stored again to fire now",
					zap.String("lane", l.String()), zap.Int("overdue", overdue), zap.Int("rearmed", rearmed))
			}
		}
	}
}

// rearmOverdue reads lane l's oldest schedules in the parked stream and
// stores again each overdue one (rearmScan).
func (w *Worker) rearmOverdue(ctx context.Context, l events.Lane) (overdue, rearmed int, err error) {
	_, margin := parkedCheckTimes()
	filter := ParkedPrefix + "." + parkedAtToken + "." + laneToken(l) + ".>"
	return w.rearmScan(ctx, ParkedStream, filter, parkedRearmScan, margin, w.rearm)
}

// rearmScan reads stream's schedules on filter in stream order, at most
// limit of them (0: every one), and stores again (again) each one whose
// time lies more than margin behind the server's (judgeSchedule). It
// stops at the first one stored within margin: every later one was stored
// later still, and none can be overdue by it. It returns how many were
// overdue and how many of those again stored; err is NATS trouble (the
// look ends there).
func (w *Worker) rearmScan(ctx context.Context, stream, filter string, limit int, margin time.Duration,
	again func(context.Context, *jetstream.RawStreamMsg) (bool, error)) (overdue, rearmed int, err error) {
	s, err := w.d.JS.Stream(ctx, stream)
	if err != nil {
		return 0, 0, err
	}
	for seq, n := uint64(1), 0; limit == 0 || n < limit; n++ {
		var m *jetstream.RawStreamMsg
		err := w.infraDo(ctx, func(ctx context.Context) (err error) {
			m, err = s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
			return err
		})
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return overdue, rearmed, nil
		}
		if err != nil {
			return overdue, rearmed, err
		}
		seq = m.Sequence + 1
		recent, late := w.judgeSchedule(m, margin)
		if recent {
			return overdue, rearmed, nil
		}
		if !late {
			continue
		}
		overdue++
		ok, err := again(ctx, m)
		if err != nil {
			return overdue, rearmed, err
		}
		if ok {
			rearmed++
		}
	}
	return overdue, rearmed, nil
}

// judgeSchedule tells, by the server's time (m's stored time observed
// first), whether schedule m was stored within margin of it (recent:
// then so was every later message of its stream, and none of them can be
// overdue by margin) and whether m's time lies more than margin behind it
// (overdue: the server failed to fire it).
func (w *Worker) judgeSchedule(m *jetstream.RawStreamMsg, margin time.Duration) (recent, overdue bool) {
	w.ledger.clock.observe(m.Time)
	srv, _ := w.ledger.clock.server()
	return srv.Sub(m.Time) <= margin, srv.After(scheduleTime(m).Add(margin))
}

// scheduleTime is when schedule m was to fire: its Nats-Schedule "@at"
// time, or its stored time when it has none that parses (it then never
// fires by itself).
func scheduleTime(m *jetstream.RawStreamMsg) time.Time {
	v, ok := strings.CutPrefix(m.Header.Get(scheduleHeader), "@at ")
	if !ok {
		return m.Time
	}
	at, err := time.Parse(time.RFC3339, strings.TrimSpace(v))
	if err != nil {
		return m.Time
	}
	return at
}

// rearm stores schedule m again, to fire a second from now onto the due
// subject its own subject names, with its copy and headers but the
// server's. ok is false when m was no longer its subject's last message
// (fired, re-parked or re-armed meanwhile) or names no lane message (a
// forged or corrupt subject, left as it is and reported overdue).
func (w *Worker) rearm(ctx context.Context, m *jetstream.RawStreamMsg) (ok bool, err error) {
	ref, valid := parseParked(parkedAtToken, m.Subject)
	if !valid {
		return false, nil
	}
	ok, err = w.storeScheduleAgain(ctx, ParkedStream, m, ref.subject(parkedDueToken))
	if err != nil {
		return false, fmt.Errorf("store parked schedule %s again: %w", m.Subject, err)
	}
	return ok, nil
}

// storeScheduleAgain stores schedule m of stream again, to fire a second
// from now onto target, with its data and headers but the server's (a
// Nats-Msg-Id among them would have the copy dropped as a duplicate). It
// is a compare-and-set on m's subject (Nats-Expected-Last-Subject-Sequence,
// the server keeping one schedule per subject): ok is false, and err nil,
// when m was no longer its subject's last message (fired, replaced or
// stored again by another process meanwhile), whichever of the two
// wrong-last-sequence codes the server answers that with (nats.go names
// the second one for replicated streams).
func (w *Worker) storeScheduleAgain(ctx context.Context, stream string, m *jetstream.RawStreamMsg, target string) (ok bool, err error) {
	at := time.Now().Add(time.Second).UTC()
	if at.Nanosecond() != 0 {
		at = at.Truncate(time.Second).Add(time.Second)
	}
	nm := &nats.Msg{Subject: m.Subject, Header: nats.Header{}, Data: m.Data}
	for name, vals := range m.Header {
		if !strings.HasPrefix(strings.ToLower(name), "nats-") {
			nm.Header[name] = vals
		}
	}
	nm.Header.Set(scheduleHeader, "@at "+at.Format(time.RFC3339))
	nm.Header.Set(scheduleTargetHeader, target)
	err = w.infraDo(ctx, func(ctx context.Context) error {
		_, err := w.d.JS.PublishMsg(ctx, nm, jetstream.WithExpectStream(stream), jetstream.WithExpectLastSequencePerSubject(m.Sequence))
		return err
	})
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, nil
}
