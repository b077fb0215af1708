// Package keyedlock serializes the goroutines of one process per key
// (a secret's name, a policy branch), with a Lock that gives up when its
// context ends.
package keyedlock

import (
	"context"
	"sync"
)

// Set is a set of mutexes by key. Its zero value is ready to use. A key's
// entry lives only while someone holds or waits for its lock.
type Set struct {
	mu sync.Mutex
	m  map[string]*entry
}

type entry struct {
	ch   chan struct{} // holds a token while locked
	refs int           // holders and waiters
}

// Lock takes key's lock and returns the function that releases it, or
// ctx's error if ctx ends first (then nothing is held).
func (s *Set) Lock(ctx context.Context, key string) (unlock func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.m == nil {
		s.m = map[string]*entry{}
	}
	e := s.m[key]
	if e == nil {
		e = &entry{ch: make(chan struct{}, 1)}
		s.m[key] = e
	}
	e.refs++
	s.mu.Unlock()
	select {
	case e.ch <- struct{}{}:
		return func() { <-e.ch; s.release(key, e) }, nil
	case <-ctx.Done():
		s.release(key, e)
		return nil, ctx.Err()
	}
}

func (s *Set) release(key string, e *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.refs--; e.refs == 0 {
		delete(s.m, key)
	}
}

// size is the number of keys with an entry (tests).
func (s *Set) size() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
