package worker

import "time"

// SetClaimClock makes w read this process's clock from now (a clock that
// is off) when it claims keys and judges the claims it finds. Safe to call
// while w runs.
func (w *Worker) SetClaimClock(now func() time.Time) { w.ledger.clock.local.Store(&now) }
