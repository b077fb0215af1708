package worker

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// Overdue retirement schedules. A retirement due later than retireHorizon
// is a message schedule (retireAtSubject) that the server fires onto the
// retirement's due subject; when it fails to store that message (the
// account's storage full, say) the schedule stays unfired until the
// stream's leader changes, and the previous version stays valid in the
// provider past its grace period. The look of parkrearm.go does not fit:
// a grace period lasts up to 30 days (a team's retire_previous_after
// longer still), so schedules due in days fill the front of the stream and
// one left behind can sit under them for as long.
//
// So every process reads all the retirement schedules every
// RetireCheckEvery (the first look at a random point of the first
// interval, so processes started together do not look together), and
// stores again, to fire a second later, each one whose time (its
// Nats-Schedule, or its stored time when it has none) lies more than
// RetireOverdueMargin behind the server's time, as parkrearm.go does:
// the same copy and headers, and only while it is still its subject's
// last message (storeScheduleAgain). The read stops at the first schedule
// stored within the margin, since none stored later can be overdue by it.
// A schedule that fires twice for all that retires a version twice, which
// a provider answers as retired or not found, both taken as done.
//
// The cost of a look is one message get (STREAM.MSG.GET, answered by the
// stream's leader: the stream has no direct gets) per retirement
// schedule, data included (a retirement names a secret and a version,
// under 1 KiB), and one publish per overdue one; one get after another,
// so at 1 ms a get 100,000 pending retirements take 100 s of each
// process every RetireCheckEvery. The stream is a work queue, which rules
// out reading it through a consumer of the look's own (internal/jsread):
// a work queue's consumers must acknowledge explicitly, and no two may
// filter on overlapping subjects, so the processes' looks would refuse
// one another.
//
// keyrelay_retirements_overdue says how many a look found;
// keyrelay_retirements_total{outcome="rearmed"} counts those stored again.
// One that stays overdue (storing it again fails too) keeps the gauge up,
// and the alert KeyrelayRetirementsOverdue fires.

// RetireCheckEvery is how often a process reads the retirement schedules
// for overdue ones.
const RetireCheckEvery = 10 * time.Minute

// RetireOverdueMargin is how far past its time a retirement schedule must
// be to be taken for one the server failed to fire.
const RetireOverdueMargin = time.Minute

// retireCheckHook, when set (tests), replaces RetireCheckEvery and
// RetireOverdueMargin.
var retireCheckHook atomic.Pointer[[2]time.Duration]

func retireCheckTimes() (every, margin time.Duration) {
	if h := retireCheckHook.Load(); h != nil {
		return h[0], h[1]
	}
	return RetireCheckEvery, RetireOverdueMargin
}

// retireAtFilter matches the retirement schedules and nothing else: three
// tokens after "at" (team, key, event id).
const retireAtFilter = RetirePrefix + "." + retireAtToken + ".*.*.*"

// rearmRetirements looks for overdue retirement schedules every
// RetireCheckEvery until ctx ends.
func (w *Worker) rearmRetirements(ctx context.Context) {
	every, _ := retireCheckTimes()
	timer := time.NewTimer(rand.N(every) + 1)
	defer timer.Stop()
	var failing bool
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		overdue, rearmed, err := w.rearmOverdueRetirements(ctx)
		if ctx.Err() != nil {
			return
		}
		timer.Reset(every)
		w.m.RetirementsOverdue.Set(float64(overdue))
		if rearmed > 0 {
			w.m.Retirements.WithLabelValues("rearmed").Add(float64(rearmed))
		}
		switch {
		case err != nil && !failing:
			failing = true
			w.log.Warn("overdue retirement schedules not checked: NATS trouble; checked again later",
				zap.Duration("in", every), zap.Error(err))
		case err == nil:
			failing = false
		}
		if overdue > 0 {
			w.log.Warn("retirements' schedules were past their time without firing: stored again to fire now",
				zap.Int("overdue", overdue), zap.Int("rearmed", rearmed))
		}
	}
}

// rearmOverdueRetirements reads every retirement schedule in stream order
// and stores again each overdue one (rearmScan).
func (w *Worker) rearmOverdueRetirements(ctx context.Context) (overdue, rearmed int, err error) {
	_, margin := retireCheckTimes()
	return w.rearmScan(ctx, RetireStream, retireAtFilter, 0, margin, w.rearmRetirement)
}

// rearmRetirement stores retirement schedule m again, to fire a second
// from now onto the due subject of the team and key its subject names.
// ok is false when m was no longer its subject's last message (fired,
// rescheduled or stored again meanwhile) or its subject is not a
// schedule's (left as it is and reported overdue). The retirement it
// carries is checked when it is delivered, as any other.
func (w *Worker) rearmRetirement(ctx context.Context, m *jetstream.RawStreamMsg) (ok bool, err error) {
	rest, _ := strings.CutPrefix(m.Subject, RetirePrefix+"."+retireAtToken+".")
	t := strings.Split(rest, ".")
	if len(t) != 3 || t[0] == "" || t[1] == "" || t[2] == "" {
		return false, nil
	}
	ok, err = w.storeScheduleAgain(ctx, RetireStream, m, retireDueSubject(t[0], t[1]))
	if err != nil {
		return false, fmt.Errorf("store retirement schedule %s again: %w", m.Subject, err)
	}
	return ok, nil
}
