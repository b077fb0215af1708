package ownership_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/ownership"
)

// cutKV is a requester's bucket whose writes start failing (NATS trouble
// on the requester's side) right after the write armed by cutAfterNext.
type cutKV struct {
	jetstream.KeyValue
	fail atomic.Bool
	next atomic.Pointer[chan time.Time]
}

// cutAfterNext makes the next successful Put the last one; its send time
// is sent on the returned channel.
func (k *cutKV) cutAfterNext() <-chan time.Time {
	ch := make(chan time.Time, 1)
	k.next.Store(&ch)
	return ch
}

func (k *cutKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	if k.fail.Load() {
		return 0, context.DeadlineExceeded
	}
	sent := time.Now()
	rev, err := k.KeyValue.Put(ctx, key, value)
	if err == nil {
		if ch := k.next.Swap(nil); ch != nil {
			k.fail.Store(true)
			*ch <- sent
		}
	}
	return rev, err
}

// slowWatchKV is a holder's bucket whose next watch, once armed, answers
// late: its snapshot is taken only after before() returns (a slow
// server), so it shows writes sent after the watch was asked for.
type slowWatchKV struct {
	jetstream.KeyValue
	before atomic.Pointer[func()]
}

type lateWatcher struct {
	ch   chan jetstream.KeyValueEntry
	mu   sync.Mutex
	real jetstream.KeyWatcher
	stop bool
}

func (w *lateWatcher) Updates() <-chan jetstream.KeyValueEntry { return w.ch }

func (w *lateWatcher) Stop() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stop = true
	if w.real != nil {
		return w.real.Stop()
	}
	return nil
}

func (k *slowWatchKV) WatchFiltered(ctx context.Context, keys []string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	before := k.before.Swap(nil)
	if before == nil {
		return k.KeyValue.WatchFiltered(ctx, keys, opts...)
	}
	w := &lateWatcher{ch: make(chan jetstream.KeyValueEntry)}
	go func() {
		defer close(w.ch)
		(*before)()
		real, err := k.KeyValue.WatchFiltered(ctx, keys, opts...)
		if err != nil {
			return
		}
		w.mu.Lock()
		w.real = real
		stopped := w.stop
		w.mu.Unlock()
		if stopped {
			_ = real.Stop()
			return
		}
		for e := range real.Updates() {
			select {
			case w.ch <- e:
			case <-ctx.Done():
				return
			}
		}
	}()
	return w, nil
}

// A holder that first sees a request's renewal in a read answered late
// must not count the request's standstill from before that renewal was
// sent: the renewal's sender may act until 0.9 TTL after it. Before, the
// holder stamped the renewal with the time it asked for the read, forgot
// the request up to that read's delay early, and wrote without claims
// while the requester, still granted, wrote by claims.
func TestClaimsRequestSeenLateIsNotForgottenEarly(t *testing.T) {
	_, js := testenv.StartJetStream(t)
	real := bucket(t, js, 1)
	hkv := &slowWatchKV{KeyValue: real}
	l, err := ownership.New(hkv, ownership.Config{Key: "writer", Holder: "h", TTL: testTTL, RenewEvery: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	hdone := make(chan struct{})
	go func() { defer close(hdone); _ = l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-hdone })
	h := &contender{name: "h", lease: l}
	waitBegin(t, h, 10*testTTL)

	rkv := &cutKV{KeyValue: real}
	r, err := ownership.NewRequest(rkv, ownership.RequestConfig{Key: "writer", Requester: "r", TTL: testTTL, RenewEvery: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	rdone := make(chan struct{})
	go func() { defer close(rdone); _ = r.Run(rctx) }()
	t.Cleanup(func() { rcancel(); <-rdone })
	gctx, gcancel := context.WithTimeout(context.Background(), 10*testTTL)
	defer gcancel()
	if _, err := r.Granted(gctx); err != nil {
		t.Fatal(err)
	}

	// The holder's next read of the requests answers 230 ms late, with the
	// requester's last renewal, sent meanwhile.
	lastSent := make(chan time.Time, 1)
	before := func() {
		time.Sleep(230 * time.Millisecond)
		select {
		case s := <-rkv.cutAfterNext():
			lastSent <- s
		case <-time.After(time.Second):
		}
	}
	hkv.before.Store(&before)
	var s time.Time
	select {
	case s = <-lastSent:
	case <-time.After(5 * testTTL):
		t.Fatal("the requester's last renewal was not sent")
	}
	// The requester works by claims until its deadline; the holder must
	// not write without claims before it.
	for {
		until := r.GrantedUntil()
		if until.IsZero() {
			break
		}
		if _, done, ok := l.Begin(); ok {
			done()
			t.Fatalf("the holder writes without claims %s after the request's last renewal was sent, while the requester is granted for %s more",
				time.Since(s).Round(time.Millisecond), time.Until(until).Round(time.Millisecond))
		}
		time.Sleep(time.Millisecond)
	}
	if want := s.Add(testTTL - testTTL/10); time.Now().Before(want.Add(-5 * time.Millisecond)) {
		t.Fatalf("the request lapsed %s before its deadline", want.Sub(time.Now()))
	}
	waitBegin(t, h, 10*testTTL) // and the holder does forget it
}
