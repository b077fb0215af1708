package worker

import (
	"context"
	"sync"
	"time"
)

// keyLocks serializes, within one process, events for the same key, so
// they queue here instead of contending for the ledger claim. A waiter
// gives up after a bound and hands its event back, so an event stuck on a
// slow key never holds a slot other keys need.
type keyLocks struct {
	mu    sync.Mutex
	locks map[string]*keyLock
}

type keyLock struct {
	ch   chan struct{}
	refs int
}

func newKeyLocks() *keyLocks { return &keyLocks{locks: map[string]*keyLock{}} }

// lock waits up to wait for key and returns the unlock function, or false
// when the key stayed busy (or ctx ended).
func (k *keyLocks) lock(ctx context.Context, key string, wait time.Duration) (func(), bool) {
	k.mu.Lock()
	l, ok := k.locks[key]
	if !ok {
		l = &keyLock{ch: make(chan struct{}, 1)}
		k.locks[key] = l
	}
	l.refs++
	k.mu.Unlock()
	drop := func() {
		k.mu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
	default:
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case l.ch <- struct{}{}:
		case <-t.C:
			drop()
			return nil, false
		case <-ctx.Done():
			drop()
			return nil, false
		}
	}
	return func() { <-l.ch; drop() }, true
}
