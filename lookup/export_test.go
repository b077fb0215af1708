package lookup

import "time"

// SetClock makes b read this process's clock from now (a clock that is
// off) when it judges a previous version's grace period. Call it before b
// loads.
func (b *Backend) SetClock(now func() time.Time) { b.now = now }
