package lookup

import "time"

// SetClock makes b read this process's clock from now (a clock that is
// off) when it judges a previous version's grace period. Call it before b
// loads.
func (b *Backend) SetClock(now func() time.Time) { b.now = now }

// SetClock makes s read this process's clock from now (a clock that is
// off). Call it before s serves.
func (s *Service) SetClock(now func() time.Time) { s.now = now }
