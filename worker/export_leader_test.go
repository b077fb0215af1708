package worker

import "time"

// SetExclusiveClock makes w's exclusive mode read this process's clock
// from now (a clock that is off); call it before Run.
func (w *Worker) SetExclusiveClock(now func() time.Time) { w.excl.now = now }

// OpenIntent returns the intent standing on ledger key key (loaded from
// the previous holders at an acquisition, or this process's own).
func (w *Worker) OpenIntent(key string) *Claim { return w.openIntent(key) }
