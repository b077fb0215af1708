package worker

import "time"

// SetClaimClock makes w read this process's clock from now (a clock that
// is off) when it claims keys and judges the claims it finds, and when it
// judges the retry budget of a record read from the ledger. Safe to call
// while w runs.
func (w *Worker) SetClaimClock(now func() time.Time) { w.ledger.clock.local.Store(&now) }
