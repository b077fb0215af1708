package ownership_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/ownership"
)

type requester struct {
	req    *ownership.Request
	cancel context.CancelFunc
	done   chan struct{}
}

func request(t *testing.T, kv jetstream.KeyValue, name string) *requester {
	t.Helper()
	r, err := ownership.NewRequest(kv, ownership.RequestConfig{Key: "writer", Requester: name, TTL: testTTL, RenewEvery: testTTL / 8})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rq := &requester{req: r, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(rq.done); _ = r.Run(ctx) }()
	t.Cleanup(rq.stop)
	return rq
}

func (r *requester) stop() {
	r.cancel()
	<-r.done
}

func granted(t *testing.T, r *requester, within time.Duration) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	d, err := r.req.Granted(ctx)
	if err != nil {
		t.Fatalf("not granted within %s: %v", within, err)
	}
	if !time.Now().Before(d) {
		t.Fatalf("granted with a deadline in the past (%s)", d)
	}
	return time.Now()
}

func waitBegin(t *testing.T, c *contender, within time.Duration) ownership.Grant {
	t.Helper()
	end := time.Now().Add(within)
	for time.Now().Before(end) {
		if g, done, ok := c.lease.Begin(); ok {
			done()
			return g
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s could not act without claims within %s", c.name, within)
	return ownership.Grant{}
}

// A claims request stops the holder's claimless actions: it is granted
// only after those under way have ended (done, or their grant's deadline
// passed: a slow machine can delay the holder's renewals past the
// deadline an action was given), the holder begins none while it
// stands, and the holder goes back to claimless acting, in a new
// generation, once it is withdrawn.
func TestClaimsRequestIsAcknowledgedAfterDrain(t *testing.T) {
	_, js := testenv.StartJetStream(t)
	kv := bucket(t, js, 1)
	h := start(t, kv, "h", nil, testTTL)
	g1 := waitBegin(t, h, 10*testTTL)
	// Twice under the same requester name: the second time, the holder's
	// acknowledgement of the first must not count.
	for round := 1; round <= 2; round++ {
		g, done, ok := h.lease.Begin() // an action under way
		if !ok {
			t.Fatalf("round %d: Begin refused while claimless", round)
		}
		r := request(t, kv, "restore-1")
		grants := make(chan time.Time, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*testTTL)
			defer cancel()
			if _, err := r.req.Granted(ctx); err != nil {
				t.Errorf("not granted: %v", err)
			}
			grants <- time.Now()
		}()
		time.Sleep(testTTL / 4)
		doneAt := time.Now()
		done()
		if ended := earliest(doneAt, g.Deadline); (<-grants).Before(ended) {
			t.Fatalf("round %d: granted before the holder's claimless action ended (done %s, deadline %s)",
				round, doneAt.Format(time.StampMicro), g.Deadline.Format(time.StampMicro))
		}
		for end := time.Now().Add(2 * testTTL); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			if _, done, ok := h.lease.Begin(); ok {
				done()
				t.Fatalf("round %d: the holder began a claimless action while a claims request stood", round)
			}
			if _, _, ok := h.lease.Held(); !ok {
				t.Fatalf("round %d: the holder lost the lease", round)
			}
		}
		r.stop()
		g2 := waitBegin(t, h, 10*testTTL)
		if g2.Generation == g1.Generation || g2.Epoch != g1.Epoch {
			t.Errorf("round %d: after the request: generation %d epoch %d, want a new generation (was %d) in the same epoch %d",
				round, g2.Generation, g2.Epoch, g1.Generation, g1.Epoch)
		}
		g1 = g2
	}
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// With no holder the request is granted at once, and a process that
// acquires the lease later reads it before acting without claims.
func TestClaimsRequestBindsLaterHolders(t *testing.T) {
	_, js := testenv.StartJetStream(t)
	kv := bucket(t, js, 1)
	r := request(t, kv, "migrate-1")
	granted(t, r, 10*testTTL)
	h := start(t, kv, "h", nil, testTTL)
	waitHeld(t, 10*testTTL, h)
	for end := time.Now().Add(2 * testTTL); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if _, done, ok := h.lease.Begin(); ok {
			done()
			t.Fatal("a new holder acted without claims while a claims request stood")
		}
	}
	r.stop()
	waitBegin(t, h, 10*testTTL)
}

// A holder cut off from NATS stops acting at its deadline; a request is
// then granted without its acknowledgement, once the record has stood
// still for a TTL. A requester cut off in turn lapses, and the holder
// forgets its request.
func TestClaimsRequestWithoutLiveHolder(t *testing.T) {
	srv, js := testenv.StartJetStream(t)
	kv := bucket(t, js, 1)
	kv2, nc := ownConn(t, srv.URL)
	h := start(t, kv2, "h", nil, testTTL)
	waitBegin(t, h, 10*testTTL)
	nc.Close()
	cut := time.Now()
	r := request(t, kv, "drift-1")
	grantedAt := granted(t, r, 10*testTTL)
	if grantedAt.Sub(cut) < testTTL {
		t.Fatalf("granted %s after the holder was cut off, before a TTL", grantedAt.Sub(cut))
	}
	if _, _, ok := h.lease.Held(); ok {
		t.Fatal("the cut-off holder still holds the lease")
	}

	// The requester is cut off: it lapses, and a new holder forgets it.
	kv3, nc3 := ownConn(t, srv.URL)
	r2 := request(t, kv3, "drift-2")
	granted(t, r2, 10*testTTL)
	h2 := start(t, kv, "h2", nil, testTTL)
	nc3.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*testTTL)
	defer cancel()
	for {
		if _, err := r2.req.Granted(ctx); errors.Is(err, ownership.ErrRequestLapsed) {
			break
		} else if ctx.Err() != nil {
			t.Fatal("the cut-off request never lapsed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.stop()
	waitBegin(t, h2, 20*testTTL)
}

// On a 3-node cluster with the bucket at replicas 3: a request granted by
// a holder stays in force when that holder's node is lost and another
// process takes the lease over.
func TestClaimsRequestClusterTakeover(t *testing.T) {
	c := clusterWithBucket(t)
	kvs := make([]jetstream.KeyValue, 3)
	for i := range kvs {
		kvs[i] = nodeKV(t, c.Node(i).URL)
	}
	ttl := 2 * time.Second
	h := start(t, kvs[0], "h0", nil, ttl)
	waitBegin(t, h, 30*time.Second)
	standby := start(t, kvs[2], "h2", nil, ttl)
	r, err := ownership.NewRequest(kvs[1], ownership.RequestConfig{Key: "writer", Requester: "restore-c", TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	gctx, gcancel := context.WithTimeout(context.Background(), time.Minute)
	defer gcancel()
	if _, err := r.Granted(gctx); err != nil {
		t.Fatal(err)
	}
	c.Kill(0)
	waitHeld(t, time.Minute, standby)
	for end := time.Now().Add(2 * ttl); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if _, done, ok := standby.lease.Begin(); ok {
			done()
			t.Fatal("the new holder acted without claims while the granted request stood")
		}
	}
	if r.Deadline().IsZero() {
		t.Fatal("the request lapsed while two of three nodes were up")
	}
	cancel()
	<-done
	waitBegin(t, standby, time.Minute)
}

func TestRequesterName(t *testing.T) {
	for in, want := range map[string]string{
		"migrate-host.example.com-42-ab12cd34": "migrate-host_example_com-42-ab12cd34",
		"a  b..c":                              "a_b_c",
		"":                                     "_",
		strings.Repeat("x", 70) + "-tail":      strings.Repeat("x", 59) + "-tail",
	} {
		got := ownership.RequesterName(in)
		cfg := ownership.RequestConfig{Key: "writer", Requester: got, TTL: ownership.DefaultTTL, RenewEvery: ownership.DefaultTTL / 4}
		if err := cfg.Validate(); got != want || err != nil {
			t.Errorf("RequesterName(%q) = %q (%v), want %q", in, got, err, want)
		}
	}
}

// GrantedUntil answers for the request's current life only. A requester
// cut off from NATS lapses, and the holder forgets its request and writes
// without claims again; when the requester's renewals succeed again, its
// request is stored anew, and that life is not granted until the holder
// has acknowledged it (Granted), so nothing may be claimed meanwhile.
func TestGrantedUntilNeedsTheNewLifeAcknowledged(t *testing.T) {
	srv, js := testenv.StartJetStream(t)
	kv := bucket(t, js, 1)
	h := start(t, kv, "h", nil, testTTL)
	waitBegin(t, h, 10*testTTL)

	px := testenv.NewTCPProxy(t, fmt.Sprintf("127.0.0.1:%d", srv.Port))
	kvr, _ := leasesKV(t, "nats://"+px.Addr, nats.IgnoreDiscoveredServers(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	r := request(t, kvr, "cut-1")
	if !r.req.GrantedUntil().IsZero() {
		t.Fatal("granted before Granted answered")
	}
	granted(t, r, 20*testTTL)
	if d := r.req.GrantedUntil(); d.IsZero() || d.After(time.Now().Add(testTTL)) {
		t.Fatalf("GrantedUntil %v right after Granted, want within a TTL", d)
	}
	if _, done, ok := h.lease.Begin(); ok {
		done()
		t.Fatal("the holder acts without claims while the request is granted")
	}

	px.Down()
	testenv.Eventually(t, 2*testTTL, "GrantedUntil to end with the lapse", func() bool { return r.req.GrantedUntil().IsZero() })
	waitBegin(t, h, 20*testTTL) // the holder forgot the request

	px.Up(t)
	testenv.Eventually(t, 20*testTTL, "the request to be stored again", func() bool { return !r.req.Deadline().IsZero() })
	if _, done, ok := h.lease.Begin(); ok {
		done() // it has not read the new life yet, or has not drained
	}
	if d := r.req.GrantedUntil(); !d.IsZero() {
		t.Fatalf("the new life counts as granted (until %v) before the holder acknowledged it", d)
	}
	granted(t, r, 20*testTTL)
	if r.req.GrantedUntil().IsZero() {
		t.Fatal("GrantedUntil is zero after Granted answered for the new life")
	}
	if _, done, ok := h.lease.Begin(); ok {
		done()
		t.Fatal("the holder acts without claims while the new life is granted")
	}
}
