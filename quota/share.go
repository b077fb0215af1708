package quota

import (
	"math"
	"slices"
	"time"
)

// quota is this member's state for one quota name. Every field is guarded
// by the Manager's lock.
type quota struct {
	name string
	tok  string
	key  string // this member's record key

	perSecond float64 // as the latest Wait gave it
	lim       limiter
	share     float64       // the rate lim runs at
	changed   chan struct{} // closed (and replaced) when share changes
	settle    *time.Timer   // refreshes share when a granted step settles

	// steps are this member's allocations in the views it applied, oldest
	// first, from the newest settled one on (see effective).
	steps []step

	stale    bool
	staleCap float64 // the share while stale

	// Demand accounting: calls and calls that had to wait, per heartbeat
	// period, over the last demandWindow.
	calls, waited   int
	bcalls, bwaited int // of them, bulk calls
	periods         []period
	nperiods        int
	demand          float64 // announced
	idemand         float64 // of it, the interactive calls' (see bulkDemand)
	waiting         int     // Waits blocked now, bulk ones included
	lastUsed        time.Time
	taken           uint64

	// Priorities (see the package doc): urgent counts the interactive
	// Waits blocked now (with a reservation or sleeping), unreserved those
	// of them sleeping without one; bulk holds the bulk Waits blocked now,
	// in arrival order. Only the first bulk Wait watches the bucket; the
	// others sleep until they are first.
	urgent, unreserved int
	bulk               []*bulkWaiter
}

// bulkWaiter is one bulk Wait queued for a token.
type bulkWaiter struct {
	wake chan struct{} // buffered: a signal is never lost
}

// signal wakes w (at most one signal pending).
func (w *bulkWaiter) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// wakeBulk wakes the first queued bulk Wait, to look at the bucket again.
func (q *quota) wakeBulk() {
	if len(q.bulk) > 0 {
		q.bulk[0].signal()
	}
}

// enqueue queues w behind the bulk Waits already waiting; it counts as
// waiting (demand) until dequeued.
func (q *quota) enqueue(w *bulkWaiter) {
	q.bulk = append(q.bulk, w)
	q.waiting++
}

// dequeue removes w from the queue and wakes the next first one if w was
// first.
func (q *quota) dequeue(w *bulkWaiter) {
	i := slices.Index(q.bulk, w)
	if i < 0 {
		return
	}
	q.bulk = slices.Delete(q.bulk, i, i+1)
	q.waiting--
	if i == 0 {
		q.wakeBulk()
	}
}

// period counts one heartbeat period's calls and those that had to wait,
// all of them and the bulk ones.
type period struct{ calls, waited, bcalls, bwaited int }

// demandWindow is how far back a member's demand is measured.
const demandWindow = 2 * time.Second

// step is this member's allocation in the view up to bucket sequence seq,
// recorded whenever it changes. It may be used once every other member of
// that view has acknowledged seq (granted) and Horizon has passed since
// (settled).
type step struct {
	seq     uint64
	alloc   float64
	others  []string // member tokens of the other members in that view
	granted time.Time
}

func newQuota(name, memberTok string, perSecond float64, now time.Time) *quota {
	tok := token(name)
	return &quota{
		name: name, tok: tok, key: recordKey(tok, memberTok),
		perSecond: perSecond,
		changed:   make(chan struct{}),
		// Before any view: nothing, settled from the start.
		steps:    []step{{alloc: 0, granted: now.Add(-time.Hour)}},
		lastUsed: now,
	}
}

// limit is the cluster-wide rate this member would share on its own.
func (q *quota) limit(margin float64) float64 { return q.perSecond * margin }

// settled reports whether step s may be used at now.
func (s *step) settled(now time.Time, horizon time.Duration) bool {
	return !s.granted.IsZero() && !now.Before(s.granted.Add(horizon))
}

// fromSteps drops the steps older than the newest settled one and returns
// the smallest allocation from there on: decreases apply at once, and an
// increase only once it has settled.
func (q *quota) fromSteps(now time.Time, horizon time.Duration) float64 {
	start := 0
	for i := len(q.steps) - 1; i > 0; i-- {
		if q.steps[i].settled(now, horizon) {
			start = i
			break
		}
	}
	if start > 0 {
		q.steps = append(q.steps[:0], q.steps[start:]...)
	}
	low := math.Inf(1)
	for _, s := range q.steps {
		low = min(low, s.alloc)
	}
	return low
}

// nextSettle returns when the next granted step settles (false: none
// pending).
func (q *quota) nextSettle(horizon time.Duration) (time.Time, bool) {
	var at time.Time
	for i := 1; i < len(q.steps); i++ {
		if g := q.steps[i].granted; !g.IsZero() {
			if t := g.Add(horizon); at.IsZero() || t.Before(at) {
				at = t
			}
		}
	}
	return at, !at.IsZero()
}

// rebase forgets the steps: the share stays at most cap until the step for
// the current view (seq, alloc) is granted and settled. Used when the view
// was rebuilt or comes back from stale, when the views in between were
// never applied.
func (q *quota) rebase(cap float64, seq uint64, alloc float64, others []string, now time.Time) {
	q.steps = append(q.steps[:0], step{alloc: cap, granted: now.Add(-time.Hour)})
	if alloc != cap {
		q.steps = append(q.steps, step{seq: seq, alloc: alloc, others: others})
	}
}

// notify wakes the Waits sleeping on a share change.
func (q *quota) notify() {
	close(q.changed)
	q.changed = make(chan struct{})
}

// rollDemand closes a heartbeat period and updates the announced demand:
// the limit while callers had to wait (at least one call in twenty over
// the last demandWindow, or one blocked now), else the measured rate times
// headroom, at least minDemand, rounded up to a 128th of the limit. It
// rises at once and falls only below 0.7 of what was announced, so that
// small changes do not make every member recompute.
//
// The interactive calls' own demand is worked out the same way from
// their own counts, and what the total wants beyond it is announced as
// the bulk part (bulkDemand): the part the other members' interactive
// demand goes before (allocateTiered).
func (q *quota) rollDemand(cfg *Config) {
	if q.periods == nil {
		q.periods = make([]period, max(1, int(demandWindow/cfg.Heartbeat)))
	}
	q.periods[q.nperiods%len(q.periods)] = period{q.calls, q.waited, q.bcalls, q.bwaited}
	q.nperiods++
	q.calls, q.waited, q.bcalls, q.bwaited = 0, 0, 0, 0
	n := min(q.nperiods, len(q.periods))
	var sum period
	for _, p := range q.periods[:n] {
		sum.calls += p.calls
		sum.waited += p.waited
		sum.bcalls += p.bcalls
		sum.bwaited += p.bwaited
	}
	lim := q.limit(cfg.Margin)
	span := float64(n) * cfg.Heartbeat.Seconds()
	want := demandOf(cfg, lim, span, sum.calls, sum.waited, q.waiting)
	if want > q.demand || want < 0.7*q.demand {
		q.demand = want
	}
	iwant := demandOf(cfg, lim, span, sum.calls-sum.bcalls, sum.waited-sum.bwaited, q.urgent)
	if iwant > q.idemand || iwant < 0.7*q.idemand {
		q.idemand = iwant
	}
}

// demandOf is the demand of calls over span seconds, waited of which had
// to wait, with waiting blocked now (see rollDemand).
func demandOf(cfg *Config, lim, span float64, calls, waited, waiting int) float64 {
	if waiting > 0 || (waited > 0 && waited*20 >= calls) {
		return lim
	}
	want := max(cfg.MinDemand, float64(calls)/span*cfg.Headroom)
	if grid := lim / 128; grid > 0 {
		want = math.Ceil(want/grid) * grid
	}
	return min(want, lim)
}

// bulkDemand is the part of the announced demand only bulk calls want.
func (q *quota) bulkDemand() float64 {
	return max(0, q.demand-q.idemand)
}

// eta estimates how long until a member without a share gets one.
func (q *quota) eta(now time.Time, cfg *Config) time.Duration {
	if at, ok := q.nextSettle(cfg.Horizon); ok && at.After(now) {
		return at.Sub(now)
	}
	return cfg.Heartbeat + cfg.Horizon
}
