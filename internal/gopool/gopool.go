// Package gopool runs short functions on reused goroutines.
//
// A goroutine starts with a small stack and copies it each time it grows.
// A function that goes deep (a JetStream publish through the NATS client,
// a ledger write) pays that copying on every fresh goroutine, and on the
// worker's event path it was a measurable share of the CPU per event
// (BENCHMARKS.md). A Pool hands a function to a goroutine that has run
// one before and kept its grown stack, when one is idle; otherwise it
// starts one, as `go` would. A goroutine left without work for the
// pool's idle time exits, so an idle pool holds none.
//
// Go never blocks and never queues: fn runs at once, as with `go fn()`.
package gopool

import (
	"sync/atomic"
	"time"
)

// DefaultIdle is how long a goroutine waits for more work before it exits.
const DefaultIdle = time.Second

// Pool runs functions on reused goroutines. The zero value is not usable;
// use New.
type Pool struct {
	work    chan func()
	idle    time.Duration
	waiting atomic.Int32 // goroutines waiting for work (for tests)
}

// New returns a pool whose goroutines exit after idle without work
// (DefaultIdle when idle <= 0).
func New(idle time.Duration) *Pool {
	if idle <= 0 {
		idle = DefaultIdle
	}
	// Unbuffered: a send succeeds only when a goroutine is waiting for
	// work, so fn never sits in a queue behind another function.
	return &Pool{work: make(chan func()), idle: idle}
}

// Go runs fn on an idle goroutine of the pool, or on a new one.
func (p *Pool) Go(fn func()) {
	select {
	case p.work <- fn:
	default:
		go p.run(fn)
	}
}

func (p *Pool) run(fn func()) {
	t := time.NewTimer(p.idle)
	defer t.Stop()
	for {
		fn()
		fn = nil // not kept alive while idle
		t.Reset(p.idle)
		p.waiting.Add(1)
		select {
		case fn = <-p.work:
			p.waiting.Add(-1)
		case <-t.C:
			p.waiting.Add(-1)
			return
		}
	}
}
