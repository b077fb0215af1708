package worker_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/ownership"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/worker"
)

// putWindows records, for each Put, how long its context gave it.
type putWindows struct {
	providers.Provider
	mu      sync.Mutex
	windows []time.Duration
}

func (p *putWindows) Put(ctx context.Context, r providers.PutRequest) (providers.PutResult, error) {
	if d, ok := ctx.Deadline(); ok {
		p.mu.Lock()
		p.windows = append(p.windows, time.Until(d))
		p.mu.Unlock()
	}
	return p.Provider.Put(ctx, r)
}

func (p *putWindows) all() []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Duration(nil), p.windows...)
}

// A claims-mode worker keeps a claims request so that a writer lease
// holder (a deployment part way through a change of worker.ownership)
// claims keys too. Its work is bounded by that request: each key's
// provider calls end by the request's deadline, and while the request is
// lapsed (its renewals failed for most of a TTL, so a holder may have
// forgotten it and be writing without claims) no key is claimed or
// written; the events wait, nothing spent, and go ahead once the request
// is granted again.
func TestClaimsWorkerIsBoundByItsClaimsRequest(t *testing.T) {
	pw := &putWindows{}
	b := setup(t, setupOptions{wrap: map[string]func(providers.Provider) providers.Provider{
		"local": func(p providers.Provider) providers.Provider { pw.Provider = p; return pw },
	}})
	const ttl = time.Second
	w, _ := b.startWorker(func(c *worker.Config) {
		c.ClaimLease, c.CallTimeout = 4*time.Second, 3*time.Second
	})

	// The worker's request, replaced by one with a TTL of a second over a
	// connection the test cuts.
	px := testenv.NewTCPProxy(t, fmt.Sprintf("127.0.0.1:%d", b.srv.Port))
	_, js := testenv.ConnectJetStream(t, "nats://"+px.Addr, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	kv, err := js.KeyValue(b.ctx, worker.OwnershipBucket)
	if err != nil {
		t.Fatal(err)
	}
	req, err := ownership.NewRequest(kv, ownership.RequestConfig{Key: worker.WriterLeaseKey, Requester: "cut-worker", TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(b.ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = req.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if _, err := req.Granted(b.ctx); err != nil {
		t.Fatal(err)
	}
	w.UseClaimsRequest(rctx, req)

	c1 := b.keyEvent(events.KeyCreated, "team-a", "key-1", 1, "sk-one")
	b.publish(c1)
	b.confirmations(1, 20*time.Second)
	ws := pw.all()
	if len(ws) != 1 || ws[0] > ttl {
		// Without the bound: the call timeout (3 s), under the claim's
		// deadline (3.6 s).
		t.Fatalf("the Put had %v to run, want at most the claims request's TTL %v", ws, ttl)
	}

	px.Down()
	for end := time.Now().Add(2 * ttl); !req.GrantedUntil().IsZero(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the cut-off request did not lapse")
		}
	}
	r2 := b.keyEvent(events.KeyRotated, "team-a", "key-1", 2, "sk-two")
	b.publish(r2)
	time.Sleep(3 * ttl / 2)
	if n := len(b.rawMessages(worker.ConfirmationsStream)); n != 1 {
		t.Fatalf("%d confirmations while the claims request was lapsed, want 1", n)
	}
	if got := b.value("local", name("team-a", "key-1")); got != "sk-one" {
		t.Fatalf("value %q written while the claims request was lapsed", got)
	}
	if !strings.Contains(b.logs.String(), "claims request lapsed") {
		t.Fatalf("the lapse is not logged:\n%s", tail(b.logs.String(), 3000))
	}

	px.Up(t)
	cs := byEventID(b.confirmations(2, 20*time.Second))
	if c := cs[r2.ID]; c == nil || c.Status != events.StatusRotated {
		t.Fatalf("after the request was granted again: %+v", c)
	}
	if got := b.value("local", name("team-a", "key-1")); got != "sk-two" {
		t.Fatalf("value %q, want sk-two", got)
	}
	if n := len(b.rawMessages(worker.DLQStream)); n != 0 {
		t.Fatalf("%d DLQ entries: a lapsed request is not the event's failure", n)
	}
}

// A claims-mode worker is not ready until its claims request is granted:
// while a writer lease holder has not acknowledged it, the worker handles
// nothing, and a readiness probe must not pass it. Here the lease record
// names a holder that never answers; the request is granted once that
// holder has not renewed for its TTL (and the request's own, the same).
func TestClaimsWorkerIsNotReadyUntilGranted(t *testing.T) {
	b := setup(t, setupOptions{})
	kv, err := b.js.KeyValue(b.ctx, worker.OwnershipBucket)
	if err != nil {
		t.Fatal(err)
	}
	const holderTTL = 2 * time.Second
	if _, err := kv.Put(b.ctx, worker.WriterLeaseKey, []byte(fmt.Sprintf(`{"holder":"silent-holder","nonce":7,"ttl_ms":%d}`, holderTTL.Milliseconds()))); err != nil {
		t.Fatal(err)
	}
	stored := time.Now()
	w, err := worker.New(b.ctx, worker.Config{Concurrency: 2, AckWait: b.topo.AckWait, MaxDeliver: b.topo.MaxDeliver, CallTimeout: time.Second,
		ClaimLease: holderTTL, LeaseTTL: holderTTL, ShutdownGrace: time.Second}, worker.Deps{JS: b.js, Settings: b.cfg, Registry: b.reg, Opener: b.kr, Logger: b.log, Metrics: b.metrics})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	testenv.Eventually(t, 5*time.Second, "team settings loaded", func() bool { return w.Teams().Ready() })
	// Until the silent holder's TTL has run out, the request is not
	// granted, and the worker says why it is not ready.
	for time.Since(stored) < holderTTL-300*time.Millisecond {
		if w.Ready() {
			t.Fatalf("ready %v after the silent holder's record, before its TTL (%v) ran out", time.Since(stored).Round(time.Millisecond), holderTTL)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if why := w.NotReady(); !strings.Contains(why, "claims request not granted") {
		t.Fatalf("NotReady = %q, want the claims request named", why)
	}
	testenv.Eventually(t, 10*time.Second, "ready once the request is granted", w.Ready)
	if why := w.NotReady(); why != "" {
		t.Fatalf("ready, yet NotReady = %q", why)
	}
}
