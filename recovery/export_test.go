package recovery

import "time"

// SetClock makes s read this process's clock from now (a clock that is
// off): for the leases and deletion times of the migration records, and
// for the moves and cleanups it runs. Call it before s sweeps.
func (s *Sweeper) SetClock(now func() time.Time) { s.now = now }
