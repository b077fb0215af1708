package worker

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// The requests on an event's path (the claim and the commit, the
// confirmation, the settings lookup) each need a bound, so that a request
// the server lost (its stream's leader killed) ends its attempt and is made
// again (infraAttemptTimeout). A context.WithTimeout per attempt costs a
// timer, a closure and a child registered with the handler's context:
// measured at an eighth of the handler's CPU per event (BENCHMARKS.md,
// ninth session). requestMsg bounds a request with a pooled timer instead,
// and still ends at once when ctx does.

// replyMux routes the replies of one connection's requests: one wildcard
// subscription, one token per request.
type replyMux struct {
	prefix string // "<inbox>."
	sub    *nats.Subscription
	next   atomic.Uint64
	mu     sync.Mutex
	wait   map[string]chan *nats.Msg
}

var (
	muxes   sync.Map // *nats.Conn -> *replyMux, read without a lock
	muxesMu sync.Mutex
)

// muxFor returns nc's reply mux, subscribing on first use. A closed
// connection's mux is dropped.
func muxFor(nc *nats.Conn) (*replyMux, error) {
	if m, ok := muxes.Load(nc); ok && m.(*replyMux).sub.IsValid() {
		return m.(*replyMux), nil
	}
	muxesMu.Lock()
	defer muxesMu.Unlock()
	if m, ok := muxes.Load(nc); ok && m.(*replyMux).sub.IsValid() {
		return m.(*replyMux), nil
	}
	muxes.Range(func(c, _ any) bool {
		if c.(*nats.Conn).IsClosed() {
			muxes.Delete(c)
		}
		return true
	})
	m := &replyMux{prefix: nc.NewInbox() + ".", wait: map[string]chan *nats.Msg{}}
	sub, err := nc.Subscribe(m.prefix+"*", m.deliver)
	if err != nil {
		return nil, fmt.Errorf("reply subscription: %w", err)
	}
	// A reply is small and read at once; a slow handler must not make the
	// connection drop replies as a slow consumer.
	_ = sub.SetPendingLimits(-1, -1)
	m.sub = sub
	muxes.Store(nc, m)
	return m, nil
}

func (m *replyMux) deliver(msg *nats.Msg) {
	token := msg.Subject[len(m.prefix):]
	m.mu.Lock()
	ch, ok := m.wait[token]
	delete(m.wait, token)
	m.mu.Unlock()
	if ok {
		ch <- msg // buffered 1, and only one reply is taken per token
	}
}

var (
	replyChans = sync.Pool{New: func() any { return make(chan *nats.Msg, 1) }}
	timers     = sync.Pool{New: func() any {
		t := time.NewTimer(time.Hour)
		t.Stop()
		return t
	}}
)

// requestMsg sends m as a request and returns the reply. It waits at most
// infraAttemptTimeout, and never past ctx's deadline, and returns at once
// when ctx ends. A reply with the "no responders" status (no stream
// leader) is nats.ErrNoResponders; a request not answered in time is
// nats.ErrTimeout, or ctx's error when ctx ended first.
func requestMsg(ctx context.Context, nc *nats.Conn, m *nats.Msg) (*nats.Msg, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	mux, err := muxFor(nc)
	if err != nil {
		return nil, err
	}
	d, callers := infraAttemptTimeout, false
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left <= d {
			if left <= 0 {
				return nil, context.DeadlineExceeded
			}
			d, callers = left, true
		}
	}
	token := strconv.FormatUint(mux.next.Add(1), 36)
	ch := replyChans.Get().(chan *nats.Msg)
	mux.mu.Lock()
	mux.wait[token] = ch
	mux.mu.Unlock()
	forget := func() {
		mux.mu.Lock()
		_, pending := mux.wait[token]
		delete(mux.wait, token)
		mux.mu.Unlock()
		if pending {
			replyChans.Put(ch) // no reply can be sent on it any more
		}
		// else a reply is being sent on ch: leave it to the collector.
	}
	m.Reply = mux.prefix + token
	if err := nc.PublishMsg(m); err != nil {
		forget()
		return nil, err
	}
	t := timers.Get().(*time.Timer)
	t.Reset(d)
	defer func() {
		t.Stop() // Go 1.23+: no stale tick can be read after Stop
		timers.Put(t)
	}()
	select {
	case r := <-ch:
		replyChans.Put(ch)
		if len(r.Data) == 0 && r.Header.Get("Status") == "503" {
			return nil, nats.ErrNoResponders
		}
		return r, nil
	case <-ctx.Done():
		forget()
		return nil, ctx.Err()
	case <-t.C:
		forget()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if callers {
			// The caller's deadline, met by this timer a moment before
			// ctx's own.
			return nil, context.DeadlineExceeded
		}
		return nil, nats.ErrTimeout
	}
}
