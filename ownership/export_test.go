package ownership

import "time"

// SetOnHold installs a hook called after every stored write of the
// holder's (acquisition, renewal, adoption) with the time the holder
// learned of it, its deadline and the epoch.
func (l *Lease) SetOnHold(fn func(from, deadline time.Time, epoch uint64)) { l.onHold = fn }

var ParseRecord = func(b []byte) (holder string, ttl time.Duration, ok bool) {
	r, ok := parseRecord(b)
	return r.Holder, r.ttl(), ok
}

// SetOnRelease installs a hook called when a holder releases the lease
// (everything acting under it has stopped by then).
func (l *Lease) SetOnRelease(fn func(at time.Time, epoch uint64)) { l.onRelease = fn }

// IntentJSON is Intent's hand-written encoding.
func IntentJSON(in Intent) ([]byte, error) { return in.appendJSON(nil) }
