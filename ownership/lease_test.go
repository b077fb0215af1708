package ownership_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/ownership"
)

const testTTL = 800 * time.Millisecond

// windows records, per epoch, when its holder first knew it held the lease
// and the latest deadline it was given: the span in which it could act.
type windows struct {
	mu sync.Mutex
	m  map[uint64]*window
}

type window struct {
	holder    string
	from, end time.Time
}

func newWindows() *windows { return &windows{m: map[uint64]*window{}} }

func (w *windows) hook(holder string) func(from, deadline time.Time, epoch uint64) {
	return func(from, deadline time.Time, epoch uint64) {
		w.mu.Lock()
		defer w.mu.Unlock()
		win, ok := w.m[epoch]
		if !ok {
			w.m[epoch] = &window{holder: holder, from: from, end: deadline}
			return
		}
		if win.holder != holder {
			panic(fmt.Sprintf("epoch %d held by %s and %s", epoch, win.holder, holder))
		}
		if deadline.After(win.end) {
			win.end = deadline
		}
	}
}

// check fails the test if two epochs' spans overlap: each holder's last
// deadline must have passed before the next holder could act. It returns
// the epochs in order.
func (w *windows) check(t *testing.T) []uint64 {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	eps := make([]uint64, 0, len(w.m))
	for e := range w.m {
		eps = append(eps, e)
	}
	sort.Slice(eps, func(i, j int) bool { return eps[i] < eps[j] })
	for i := 1; i < len(eps); i++ {
		prev, cur := w.m[eps[i-1]], w.m[eps[i]]
		if prev.end.After(cur.from) {
			t.Errorf("epoch %d (%s) could act until %s after epoch %d (%s) started acting",
				eps[i-1], prev.holder, prev.end.Sub(cur.from), eps[i], cur.holder)
		}
	}
	return eps
}

// release ends an epoch's span at its release: its holder had stopped
// acting by then.
func (w *windows) release(at time.Time, epoch uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if win, ok := w.m[epoch]; ok && at.Before(win.end) {
		win.end = at
	}
}

func (w *windows) holderOf(epoch uint64) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if win, ok := w.m[epoch]; ok {
		return win.holder
	}
	return ""
}

func bucket(t *testing.T, js jetstream.JetStream, replicas int) jetstream.KeyValue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "LEASES", Storage: jetstream.FileStorage, Replicas: replicas})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// ownConn opens the LEASES bucket over a connection of its own that never
// reconnects: closing it cuts its user off from NATS, as a crash or a
// partition would.
func ownConn(t *testing.T, url string) (jetstream.KeyValue, *nats.Conn) {
	t.Helper()
	return leasesKV(t, url, nats.NoReconnect())
}

// nodeKV opens the LEASES bucket through one cluster node only, so that
// killing the node cuts its user off (a partition).
func nodeKV(t *testing.T, url string) jetstream.KeyValue {
	t.Helper()
	kv, _ := leasesKV(t, url, nats.IgnoreDiscoveredServers(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	return kv
}

func leasesKV(t *testing.T, url string, opts ...nats.Option) (jetstream.KeyValue, *nats.Conn) {
	t.Helper()
	nc, js := testenv.ConnectJetStream(t, url, opts...)
	kv, err := js.KeyValue(context.Background(), "LEASES")
	if err != nil {
		t.Fatal(err)
	}
	return kv, nc
}

// clusterWithBucket starts a 3-node cluster with the LEASES bucket at
// replicas 3.
func clusterWithBucket(t *testing.T) *testenv.Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("cluster")
	}
	c, js := testenv.StartClusterJetStream(t, 3)
	bucket(t, js, 3)
	return c
}

type contender struct {
	name   string
	lease  *ownership.Lease
	cancel context.CancelFunc
	done   chan struct{}
}

func start(t *testing.T, kv jetstream.KeyValue, name string, w *windows, ttl time.Duration) *contender {
	t.Helper()
	l, err := ownership.New(kv, ownership.Config{Key: "writer", Holder: name, TTL: ttl, RenewEvery: ttl / 8})
	if err != nil {
		t.Fatal(err)
	}
	if w != nil {
		l.SetOnHold(w.hook(name))
		l.SetOnRelease(w.release)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &contender{name: name, lease: l, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(c.done); _ = l.Run(ctx) }()
	t.Cleanup(c.stop)
	return c
}

func (c *contender) stop() {
	c.cancel()
	<-c.done
}

// waitHeld waits until one of cs holds the lease and returns it.
func waitHeld(t *testing.T, within time.Duration, cs ...*contender) *contender {
	t.Helper()
	end := time.Now().Add(within)
	for time.Now().Before(end) {
		for _, c := range cs {
			if _, _, ok := c.lease.Held(); ok {
				return c
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no contender held the lease within %s", within)
	return nil
}

func TestConfigValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg  ownership.Config
		want string
	}{
		"defaults":          {ownership.Config{Key: "writer", Holder: "h1"}, ""},
		"no key":            {ownership.Config{Holder: "h1"}, "key is required"},
		"no holder":         {ownership.Config{Key: "writer"}, "holder"},
		"holder with space": {ownership.Config{Key: "writer", Holder: "a b"}, "holder"},
		"holder too long":   {ownership.Config{Key: "writer", Holder: strings.Repeat("h", ownership.MaxHolderLen+1)}, "holder"},
		"ttl too short":     {ownership.Config{Key: "writer", Holder: "h", TTL: time.Millisecond}, "ttl"},
		"ttl too long":      {ownership.Config{Key: "writer", Holder: "h", TTL: time.Hour}, "ttl"},
		"renew too slow":    {ownership.Config{Key: "writer", Holder: "h", TTL: time.Second, RenewEvery: 600 * time.Millisecond}, "renew_every"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ownership.New(nil, tc.cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestParseRecord(t *testing.T) {
	for name, tc := range map[string]struct {
		in     string
		holder string
		ttl    time.Duration
		ok     bool
	}{
		"held":             {`{"holder":"h1","nonce":7,"ttl_ms":15000}`, "h1", 15 * time.Second, true},
		"released":         {`{"holder":"","ttl_ms":15000}`, "", 15 * time.Second, true},
		"unknown member":   {`{"holder":"h1","ttl_ms":1000,"later":true}`, "h1", time.Second, true},
		"ttl capped":       {`{"holder":"h1","ttl_ms":999999999999}`, "h1", ownership.MaxRecordTTL, true},
		"empty":            {``, "", 0, false},
		"garbage":          {`not json`, "", 0, false},
		"no ttl":           {`{"holder":"h1"}`, "", 0, false},
		"negative ttl":     {`{"holder":"h1","ttl_ms":-5}`, "", 0, false},
		"holder not print": {`{"holder":"h\u0001","ttl_ms":1000}`, "", 0, false},
		"too large":        {`{"holder":"h1","ttl_ms":1000,"pad":"` + strings.Repeat("x", ownership.MaxRecordBytes) + `"}`, "", 0, false},
	} {
		t.Run(name, func(t *testing.T) {
			holder, ttl, ok := ownership.ParseRecord([]byte(tc.in))
			if ok != tc.ok || (ok && (holder != tc.holder || ttl != tc.ttl)) {
				t.Fatalf("got (%q, %s, %v), want (%q, %s, %v)", holder, ttl, ok, tc.holder, tc.ttl, tc.ok)
			}
		})
	}
}

// A missing record is waited out for a TTL (a holder whose record was
// deleted under it may still be acting), then created; the contenders
// then hand the lease on only when its holder releases it or dies, never
// overlapping.
func TestLeaseHandover(t *testing.T) {
	_, js := testenv.StartJetStream(t)
	kv := bucket(t, js, 1)
	w := newWindows()
	began := time.Now()
	cs := []*contender{start(t, kv, "a", w, testTTL), start(t, kv, "b", w, testTTL), start(t, kv, "c", w, testTTL)}
	first := waitHeld(t, 10*testTTL, cs...)
	if d := time.Since(began); d < testTTL {
		t.Fatalf("a missing record was taken after %s, before a ttl (%s)", d, testTTL)
	}
	// The holder keeps it while it renews.
	time.Sleep(3 * testTTL)
	_, ep1, ok := first.lease.Held()
	if !ok {
		t.Fatalf("%s lost the lease while renewing", first.name)
	}
	// A clean stop releases it: the next holder does not wait out a TTL.
	stopped := time.Now()
	first.stop()
	var rest []*contender
	for _, c := range cs {
		if c != first {
			rest = append(rest, c)
		}
	}
	second := waitHeld(t, 10*testTTL, rest...)
	if d := time.Since(stopped); d >= testTTL {
		t.Errorf("a released lease was taken %s after the release, not at once", d)
	}
	_, ep2, _ := second.lease.Held()
	if ep2 <= ep1 {
		t.Errorf("epoch %d after %d: epochs must grow with each change of hands", ep2, ep1)
	}
	eps := w.check(t)
	if len(eps) != 2 || w.holderOf(eps[0]) != first.name || w.holderOf(eps[1]) != second.name {
		t.Errorf("epochs %v, want one for %s and then one for %s", eps, first.name, second.name)
	}
}

// A holder that can no longer reach NATS stops acting at its deadline,
// and the next holder starts only after that deadline.
func TestLeaseCrashedHolderIsWaitedOut(t *testing.T) {
	srv, js := testenv.StartJetStream(t)
	kv := bucket(t, js, 1)
	w := newWindows()
	kv2, nc := ownConn(t, srv.URL)
	a := start(t, kv2, "a", w, testTTL)
	waitHeld(t, 10*testTTL, a)
	b := start(t, kv, "b", w, testTTL)
	time.Sleep(2 * testTTL)
	if _, _, ok := b.lease.Held(); ok {
		t.Fatal("b took the lease while a renewed it")
	}
	changed := a.lease.Changes()
	nc.Close() // a's renewals fail from now on, as in a crash or a partition
	waitHeld(t, 10*testTTL, b)
	select {
	case <-changed:
	default:
		t.Error("a's Changes channel was not closed when its lease expired")
	}
	if _, _, ok := a.lease.Held(); ok {
		t.Error("a still holds the lease after b took it")
	}
	if eps := w.check(t); len(eps) != 2 {
		t.Errorf("epochs %v, want two", eps)
	}
}

// A record that cannot be read counts as held by someone unknown and is
// waited out for the contender's own TTL; a readable one for the longer
// of the two TTLs.
func TestLeaseForeignRecordIsWaitedOut(t *testing.T) {
	for name, tc := range map[string]struct {
		value string
		wait  time.Duration
	}{
		"garbage":     {"\x00\xffnot a record", testTTL},
		"no ttl":      {`{"holder":"x"}`, testTTL},
		"bad holder":  {`{"holder":"a b","ttl_ms":100}`, testTTL},
		"oversized":   {`{"holder":"x","ttl_ms":100,"pad":"` + strings.Repeat("p", ownership.MaxRecordBytes) + `"}`, testTTL},
		"shorter ttl": {`{"holder":"x","ttl_ms":1}`, testTTL},
		"longer ttl":  {`{"holder":"x","ttl_ms":2500}`, 2500 * time.Millisecond},
	} {
		t.Run(name, func(t *testing.T) {
			_, js := testenv.StartJetStream(t)
			kv := bucket(t, js, 1)
			if _, err := kv.Put(context.Background(), "writer", []byte(tc.value)); err != nil {
				t.Fatal(err)
			}
			began := time.Now()
			a := start(t, kv, "a", nil, testTTL)
			waitHeld(t, 10*tc.wait, a)
			if d := time.Since(began); d < tc.wait {
				t.Fatalf("took the record after %s, before %s", d, tc.wait)
			}
		})
	}
}

// lossyKV stores a write and then reports a timeout, as when the reply is
// lost on the way back.
type lossyKV struct {
	jetstream.KeyValue
	dropUpdates atomic.Int32
	dropCreates atomic.Int32
}

func (k *lossyKV) Update(ctx context.Context, key string, value []byte, last uint64) (uint64, error) {
	rev, err := k.KeyValue.Update(ctx, key, value, last)
	if err == nil && k.dropUpdates.Add(-1) >= 0 {
		return 0, context.DeadlineExceeded
	}
	return rev, err
}

func (k *lossyKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	rev, err := k.KeyValue.Create(ctx, key, value, opts...)
	if err == nil && k.dropCreates.Add(-1) >= 0 {
		return 0, context.DeadlineExceeded
	}
	return rev, err
}

// A holder recognises its own write whose reply was lost, for an
// acquisition and for a renewal, and keeps the lease under one epoch.
func TestLeaseLostReplyIsAdopted(t *testing.T) {
	_, js := testenv.StartJetStream(t)
	kv := &lossyKV{KeyValue: bucket(t, js, 1)}
	kv.dropCreates.Store(1)
	w := newWindows()
	a := start(t, kv, "a", w, testTTL)
	waitHeld(t, 10*testTTL, a)
	_, ep, _ := a.lease.Held()
	kv.dropUpdates.Store(2)
	time.Sleep(3 * testTTL)
	_, ep2, ok := a.lease.Held()
	if !ok || ep2 != ep {
		t.Fatalf("after lost renewal replies: held %v, epoch %d, want held under epoch %d", ok, ep2, ep)
	}
	if left := kv.dropUpdates.Load(); left > 0 {
		t.Fatalf("%d renewals were not attempted", left)
	}
	if eps := w.check(t); len(eps) != 1 {
		t.Errorf("epochs %v, want one", eps)
	}
}

// NATS down for longer than the TTL: the holder stops acting at its
// deadline and, nobody else having taken the lease, goes on under the same
// epoch once NATS is back.
func TestLeaseSurvivesOutageUnderSameEpoch(t *testing.T) {
	srv, _ := testenv.StartJetStream(t)
	nc, err := nats.Connect(srv.URL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	kv := bucket(t, js, 1)
	w := newWindows()
	a := start(t, kv, "a", w, testTTL)
	waitHeld(t, 10*testTTL, a)
	_, ep, _ := a.lease.Held()
	changed := a.lease.Changes()
	srv.Stop()
	select {
	case <-changed:
	case <-time.After(3 * testTTL):
		t.Fatal("the lease did not expire while NATS was down")
	}
	if _, _, ok := a.lease.Held(); ok {
		t.Fatal("held with NATS down past the deadline")
	}
	srv.Restart()
	waitHeld(t, 30*time.Second, a)
	if _, ep2, _ := a.lease.Held(); ep2 != ep {
		t.Errorf("epoch %d after the outage, want %d (nobody else held it)", ep2, ep)
	}
	w.check(t)
}

// On a 3-node cluster with the bucket at replicas 3: contenders each on
// their own node; the holder's node is killed, the bucket's leader steps
// down; every change of hands waits out the previous holder's deadline.
func TestLeaseClusterNodeLoss(t *testing.T) {
	c := clusterWithBucket(t)
	w := newWindows()
	ttl := 2 * time.Second
	cs := make([]*contender, 3)
	for i := range cs {
		cs[i] = start(t, nodeKV(t, c.Node(i).URL), fmt.Sprintf("n%d", i), w, ttl)
	}
	holder := waitHeld(t, 30*time.Second, cs...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for round := 0; round < 2; round++ {
		if _, err := c.StepDown(ctx, "KV_LEASES"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(ttl)
	}
	idx := -1
	for i, ci := range cs {
		if ci == holder {
			idx = i
		}
	}
	c.Kill(idx)
	var rest []*contender
	for _, ci := range cs {
		if ci != holder {
			rest = append(rest, ci)
		}
	}
	next := waitHeld(t, time.Minute, rest...)
	if _, _, ok := holder.lease.Held(); ok {
		t.Error("the holder on the killed node still holds the lease")
	}
	c.Start(idx)
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * ttl)
	if _, _, ok := next.lease.Held(); !ok {
		// Not a safety failure, but the holder should keep a lease it renews.
		t.Logf("%s no longer holds the lease after the node came back", next.name)
	}
	eps := w.check(t)
	if len(eps) < 2 {
		t.Errorf("epochs %v: the lease never changed hands", eps)
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("ran out of time")
	}
}
