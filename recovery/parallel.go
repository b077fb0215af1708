package recovery

import (
	"sync"
	"time"
)

// parallel runs do(i) for every i below n, at most conc at a time, and
// returns the results in order. after, when set, is called for each result
// as it comes, one call at a time under mu (a lock of its own when nil):
// the place to count progress and mark checkpoints.
func parallel[T any](n, conc int, mu *sync.Mutex, do func(i int) T, after func(i int, v T)) []T {
	if mu == nil {
		mu = new(sync.Mutex)
	}
	out := make([]T, n)
	sem := make(chan struct{}, max(conc, 1))
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			v := do(i)
			mu.Lock()
			defer mu.Unlock()
			out[i] = v
			if after != nil {
				after(i, v)
			}
		}()
	}
	wg.Wait()
	return out
}

// tracker counts rows as they finish and reports the progress.
type tracker struct {
	p      Progress
	start  time.Time
	report func(Progress)
}

func newTracker(total int, report func(Progress)) *tracker {
	return &tracker{p: Progress{Total: total}, start: time.Now(), report: report}
}

// add counts one finished row (callers serialize: parallel's after).
func (t *tracker) add(action string) {
	t.p.Done++
	count(&t.p, action)
	if t.report != nil {
		t.p.Elapsed = time.Since(t.start)
		t.report(t.p)
	}
}

// count adds one row's action to p.
func count(p *Progress, action string) {
	switch action {
	case ActionWritten, ActionMoved:
		p.Written++
	case ActionDeleted:
		p.Deleted++
	case ActionSkipped, ActionVerified, ActionPlanned:
		p.Skipped++
	default:
		p.Failed++
	}
}

// tally counts rows by action.
func tally(rows []RestoreRow) Progress {
	var p Progress
	for _, r := range rows {
		p.Done++
		count(&p, r.Action)
	}
	return p
}
