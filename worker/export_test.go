package worker

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/ownership"
)

// SetReleaseHook makes every claim release run f first and fail with its
// error; it returns the function that removes it.
func SetReleaseHook(f func() error) (restore func()) {
	releaseHook.Store(&f)
	return func() { releaseHook.Store(nil) }
}

// SetCommitHook makes every ledger commit run f first (with the event's
// id) and fail with its error; it returns the function that removes it.
func SetCommitHook(f func(eventID string) error) (restore func()) {
	commitHook.Store(&f)
	return func() { commitHook.Store(nil) }
}

// Single reads the bucket's replica count now and returns single's answer
// (tests).
func (l *Ledger) Single(ctx context.Context) bool {
	l.checkReplicas(ctx)
	return l.single()
}

// UseClaimsRequest makes req this claims-mode worker's claims request (a
// test's own, over a connection it can cut), kept granted as the
// worker's own is, until ctx ends. It first waits for the worker's own
// request to be granted and stored (a worker is Ready only then, but a
// caller may not have waited for Ready): storing req earlier let the
// worker's own request replace it.
func (w *Worker) UseClaimsRequest(ctx context.Context, req *ownership.Request) {
	for w.claimsReq.Load() == nil && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	w.claimsReq.Store(req)
	go w.keepGranted(ctx, req)
}

// ActsClaimless reports whether w, an exclusive worker, would begin a key
// action without a claim now (it holds the lease, has loaded its
// predecessors' intents and has read the claims requests since).
func (w *Worker) ActsClaimless() bool {
	if w.excl == nil {
		return false
	}
	a, err := w.begin()
	if err != nil {
		return false
	}
	if a.done != nil {
		a.done()
	}
	return a.claimless
}

// SetParkHook makes every park run f first and fail with its error; it
// returns the function that removes it.
func SetParkHook(f func() error) (restore func()) {
	parkHook.Store(&f)
	return func() { parkHook.Store(nil) }
}

// SetParkedAckHook runs f after every park; when it returns true the
// message parked is not acknowledged (a crash between the park and the
// ack). It returns the function that removes it.
func SetParkedAckHook(f func() bool) (restore func()) {
	parkedAckHook.Store(&f)
	return func() { parkedAckHook.Store(nil) }
}

// ParkedSubjectHeader names the lane subject of a parked message's copy.
const ParkedSubjectHeader = parkedSubjectHeader

// SetLaneDirectGetHook makes the direct gets of parked events' lane
// messages answer "not found" whenever f returns true (a lagging
// replica); it returns the function that removes it.
func SetLaneDirectGetHook(f func() bool) (restore func()) {
	laneDirectGetHook.Store(&f)
	return func() { laneDirectGetHook.Store(nil) }
}

// ParkedMaxBytesOf is c's parked stream cap (TopologyConfig.parkedMaxBytes).
func ParkedMaxBytesOf(c TopologyConfig) int64 { return c.parkedMaxBytes() }

// SetParkedCheckTimes makes processes look for overdue parked schedules
// every every, taking one past its time by margin for overdue; it returns
// the function that restores the defaults.
func SetParkedCheckTimes(every, margin time.Duration) (restore func()) {
	v := [2]time.Duration{every, margin}
	parkedCheckHook.Store(&v)
	return func() { parkedCheckHook.Store(nil) }
}

// Rearm stores parked schedule m again to fire now (rearmOverdue's step);
// ok is false when m is no longer its subject's last message.
func (w *Worker) Rearm(ctx context.Context, m *jetstream.RawStreamMsg) (ok bool, err error) {
	return w.rearm(ctx, m)
}

// SetRetireCheckTimes makes processes look for overdue retirement
// schedules every every, taking one past its time by margin for overdue;
// it returns the function that restores the defaults.
func SetRetireCheckTimes(every, margin time.Duration) (restore func()) {
	v := [2]time.Duration{every, margin}
	retireCheckHook.Store(&v)
	return func() { retireCheckHook.Store(nil) }
}

// RearmRetirement stores retirement schedule m again to fire now
// (rearmOverdueRetirements' step); ok is false when m is no longer its
// subject's last message.
func (w *Worker) RearmRetirement(ctx context.Context, m *jetstream.RawStreamMsg) (ok bool, err error) {
	return w.rearmRetirement(ctx, m)
}
