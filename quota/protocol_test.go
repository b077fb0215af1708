package quota

import (
	"context"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// simBus stands in for the bucket's stream, without NATS: every write
// gets the next sequence, each member sees the writes in order after its
// own delivery delay, and a record not rewritten for ttl is removed (a
// removal appended), as the server does with MaxAge and limit markers.
type simBus struct {
	mu   sync.Mutex
	log  []simEntry
	last map[string]time.Time
	ttl  time.Duration
}

type simEntry struct {
	key string
	val []byte
	del bool
	at  time.Time
}

func (b *simBus) write(key string, val []byte, del bool) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.log = append(b.log, simEntry{key: key, val: val, del: del, at: time.Now()})
	if del {
		delete(b.last, key)
	} else {
		b.last[key] = time.Now()
	}
	return uint64(len(b.log))
}

func (b *simBus) reap(ctx context.Context) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b.mu.Lock()
		for k, at := range b.last {
			if time.Since(at) > b.ttl {
				delete(b.last, k)
				b.log = append(b.log, simEntry{key: k, del: true, at: time.Now()})
			}
		}
		b.mu.Unlock()
	}
}

// deliver applies the log to m in order, each entry delay after it was
// written, until ctx ends.
func (b *simBus) deliver(ctx context.Context, m *Manager, delay time.Duration) {
	next := 0
	for ctx.Err() == nil {
		b.mu.Lock()
		var batch []simEntry
		first := next
		for next < len(b.log) && time.Since(b.log[next].at) >= delay {
			batch = append(batch, b.log[next])
			next++
		}
		b.mu.Unlock()
		for i, e := range batch {
			m.mu.Lock()
			m.applyEntry(e.key, e.del, e.val, uint64(first+i+1), time.Now())
			m.mu.Unlock()
		}
		time.Sleep(time.Millisecond)
	}
}

// simKV is the part of jetstream.KeyValue a Manager writes with.
type simKV struct {
	jetstream.KeyValue
	bus *simBus
}

func (s *simKV) Put(_ context.Context, key string, val []byte) (uint64, error) {
	return s.bus.write(key, val, false), nil
}

func (s *simKV) Delete(_ context.Context, key string, _ ...jetstream.KVDeleteOpt) error {
	s.bus.write(key, nil, true)
	return nil
}

// shareLog records every share change of every member.
type shareLog struct {
	mu     sync.Mutex
	events []shareEvent
}

type shareEvent struct {
	member int
	at     time.Time
	share  float64
}

// maxSum replays the changes in time order and returns the largest sum of
// the members' shares at any time, and when.
func (l *shareLog) maxSum() (float64, time.Time) {
	l.mu.Lock()
	ev := slices.Clone(l.events)
	l.mu.Unlock()
	slices.SortStableFunc(ev, func(a, b shareEvent) int { return a.at.Compare(b.at) })
	cur := map[int]float64{}
	best, when := 0.0, time.Time{}
	for _, e := range ev {
		cur[e.member] = e.share
		sum := 0.0
		for _, s := range cur {
			sum += s
		}
		if sum > best {
			best, when = sum, e.at
		}
	}
	return best, when
}

// TestProtocolSkewedDelivery drives four Managers through a simulated
// bucket in which they see the writes with very different delays (1 ms,
// 20 ms, 400 ms and 5 ms; the 400 ms one far longer than Horizon), while
// they join one after the other, one member's demand drops to 5/s, and one
// member dies (its record expires after the TTL).
//
// Asserted: at no time does the sum of the members' shares exceed the
// limit (47.5/s), replaying every share change in time order (a raise only
// follows the acknowledgements of the lowerings it depends on, so this
// holds whatever the delays); the tokens taken conform to a 50/s bucket
// with burst 50; at the end the three live members share at least 0.95 of
// the limit, the slow member included.
func TestProtocolSkewedDelivery(t *testing.T) {
	bus := &simBus{last: map[string]time.Time{}, ttl: time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go bus.reap(ctx)
	delays := []time.Duration{time.Millisecond, 20 * time.Millisecond, 400 * time.Millisecond, 5 * time.Millisecond}
	sl := &shareLog{}
	var ms []*Manager
	var stops []context.CancelFunc
	for i, d := range delays {
		m, stop := simMember(t, ctx, bus, Config{Member: "m" + string(rune('0'+i))}, d)
		m.onShare = func(_ string, share float64, at time.Time) {
			sl.mu.Lock()
			sl.events = append(sl.events, shareEvent{member: i, at: at, share: share})
			sl.mu.Unlock()
		}
		ms = append(ms, m)
		stops = append(stops, stop)
	}
	const name = "aws_secret_manager/123456789012/us-east-1/write"
	tk := newTakes(len(ms))
	loadCtx := make([]context.Context, len(ms))
	loadStop := make([]context.CancelFunc, len(ms))
	for i := range ms {
		loadCtx[i], loadStop[i] = context.WithCancel(ctx)
	}
	var loads []*sync.WaitGroup
	start := time.Now()
	at := func(d time.Duration) { time.Sleep(time.Until(start.Add(d))) }

	loads = append(loads, saturate(loadCtx[0], ms[0], name, 0, 4, tk))
	at(500 * time.Millisecond)
	loads = append(loads, saturate(loadCtx[1], ms[1], name, 1, 4, tk))
	at(1000 * time.Millisecond)
	loads = append(loads, saturate(loadCtx[2], ms[2], name, 2, 4, tk))
	at(2000 * time.Millisecond)
	loads = append(loads, saturate(loadCtx[3], ms[3], name, 3, 4, tk))
	at(3000 * time.Millisecond)
	// Member 0 now wants 5 tokens per second only.
	loadStop[0]()
	var light sync.WaitGroup
	light.Add(1)
	go func() {
		defer light.Done()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if _, err := ms[0].Wait(ctx, name, perSecond); err == nil {
				tk.add(0, time.Now())
			}
		}
	}()
	at(4500 * time.Millisecond)
	// Member 1 dies: no more heartbeats, no goodbye.
	loadStop[1]()
	stops[1]()
	sl.mu.Lock()
	sl.events = append(sl.events, shareEvent{member: 1, at: time.Now(), share: 0}) // a dead member takes nothing
	sl.mu.Unlock()
	at(7000 * time.Millisecond)

	var each []float64
	sum := 0.0
	for i, m := range ms {
		if i == 1 {
			continue
		}
		s := stats(m, name)
		each = append(each, math.Round(s.Share*100)/100)
		sum += s.Share
	}
	cancel()
	light.Wait()
	for _, wg := range loads {
		wg.Wait()
	}
	for i, m := range ms {
		if i != 1 {
			m.Close()
		}
	}
	best, when := sl.maxSum()
	all := tk.all()
	t.Logf("largest sum of shares %.4f at %v (limit 47.5); at the end shares of members 0, 2, 3: %v (sum %.2f); %d share changes; min burst at 50/s %.1f",
		best, when.Sub(start).Round(time.Millisecond), each, sum, len(sl.events), minBurst(all, perSecond))
	if best > 0.95*perSecond*(1+1e-9) {
		t.Errorf("the shares summed to %.4f at %v, more than the limit 47.5", best, when.Sub(start))
	}
	if b := minBurst(all, perSecond); b > perSecond {
		t.Errorf("the takes need a burst of %.1f at 50/s, more than 50", b)
	}
	if sum < 0.95*0.95*perSecond {
		t.Errorf("at the end the live members share %.2f, want >= %.2f", sum, 0.95*0.95*perSecond)
	}
	if each[1] <= 0 {
		t.Errorf("the slow member has no share at the end")
	}
}

// simMember starts a Manager on bus (heartbeats every 100 ms, TTL 1 s,
// stale after 800 ms, horizon 50 ms unless cfg says otherwise) that sees
// the bus's writes delay after they are made. stop kills it (no Close).
func simMember(t *testing.T, ctx context.Context, bus *simBus, cfg Config, delay time.Duration) (m *Manager, stop context.CancelFunc) {
	t.Helper()
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat, cfg.TTL, cfg.StaleAfter, cfg.Horizon = 100*time.Millisecond, time.Second, 800*time.Millisecond, 50*time.Millisecond
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	m = newManager(cfg, &simKV{bus: bus})
	m.watchUp = true
	mctx, stop := context.WithCancel(ctx)
	m.cancel = stop
	m.loops.Add(1)
	go m.heartbeatLoop(mctx)
	go bus.deliver(mctx, m, delay)
	return m, stop
}

// TestIdleLeave: a quota nobody asked for during IdleAfter is left: the
// member's record is deleted and the quota leaves Stats; the next Wait
// joins again.
func TestIdleLeave(t *testing.T) {
	bus := &simBus{last: map[string]time.Time{}, ttl: time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m, _ := simMember(t, ctx, bus, Config{Member: "idle", IdleAfter: 300 * time.Millisecond}, time.Millisecond)
	defer m.Close()
	const name = "google_secret_manager/p/write"
	if _, err := m.Wait(ctx, name, 600.0/60); err != nil {
		t.Fatal(err)
	}
	key := recordKey(token(name), token("idle"))
	waitFor(t, 2*time.Second, "the quota left", func() bool { return len(m.Stats()) == 0 })
	bus.mu.Lock()
	last := bus.log[len(bus.log)-1]
	bus.mu.Unlock()
	if last.key != key || !last.del {
		t.Errorf("last write %q del=%v, want the deletion of %q", last.key, last.del, key)
	}
	if _, err := m.Wait(ctx, name, 600.0/60); err != nil {
		t.Fatal(err)
	}
	if s := m.Stats(); len(s) != 1 || s[0].Members != 1 {
		t.Errorf("after joining again: %+v", s)
	}
}

func TestAllocate(t *testing.T) {
	tests := map[string]struct {
		limit  float64
		demand []float64
		want   []float64
	}{
		"none":               {47.5, nil, []float64{}},
		"one takes all":      {47.5, []float64{47.5}, []float64{47.5}},
		"equal":              {45, []float64{45, 45, 45}, []float64{15, 15, 15}},
		"light one met":      {47.5, []float64{6, 47.5, 47.5}, []float64{6, 20.75, 20.75}},
		"two light":          {40, []float64{5, 47.5, 3, 100}, []float64{5, 16, 3, 16}},
		"all met, rest even": {30, []float64{5, 10}, []float64{12.5, 17.5}},
		"bad demands":        {30, []float64{math.NaN(), -1, math.Inf(1)}, []float64{0, 0, 30}},
		"no limit":           {0, []float64{1, 2}, []float64{0, 0}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			checkShares(t, "allocate", allocate(tt.limit, tt.demand), tt.want, tt.limit)
		})
	}
}

// checkShares fails unless got is want (to rounding) and the shares sum
// to limit whenever there is a member.
func checkShares(t *testing.T, what string, got, want []float64, limit float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
	sum := 0.0
	for i := range got {
		if math.Abs(got[i]-want[i]) > 1e-9 {
			t.Fatalf("%s = %v, want %v", what, got, want)
		}
		sum += got[i]
	}
	if len(got) > 0 && math.Abs(sum-limit) > 1e-9*max(limit, 1) {
		t.Errorf("%s: shares sum to %v, want the limit %v", what, sum, limit)
	}
}

func TestAllocateTiered(t *testing.T) {
	tests := map[string]struct {
		limit        float64
		demand, bulk []float64
		want         []float64
	}{
		"no bulk is allocate":          {47.5, []float64{6, 47.5, 47.5}, nil, []float64{6, 20.75, 20.75}},
		"no bulk, all met":             {30, []float64{5, 10}, []float64{0, 0}, []float64{12.5, 17.5}},
		"interactive before bulk":      {19, []float64{19, 19}, []float64{17.96, 0}, []float64{1.04, 17.96}},
		"bulk gets what is left":       {19, []float64{19, 1.04}, []float64{17.96, 0}, []float64{17.96, 1.04}},
		"two bulk jobs split the rest": {40, []float64{40, 40, 10}, []float64{38, 38, 0}, []float64{15, 15, 10}},
		"both tiers met, rest even":    {40, []float64{10, 6}, []float64{8, 0}, []float64{22, 18}},
		"bulk over demand is demand":   {20, []float64{5, 20}, []float64{50, 0}, []float64{0, 20}},
		"bad inputs":                   {30, []float64{math.NaN(), 10, math.Inf(1)}, []float64{1, math.NaN(), math.Inf(1)}, []float64{0, 10, 20}},
		"none":                         {47.5, nil, nil, []float64{}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			checkShares(t, "allocateTiered", allocateTiered(tt.limit, tt.demand, tt.bulk), tt.want, tt.limit)
		})
	}
}

// TestDemandSplit: the bulk part of the announced demand.
func TestDemandSplit(t *testing.T) {
	cfg := Config{}
	cfg.setDefaults()
	lim := 19.0
	tests := map[string]struct {
		calls, waited, bcalls, bwaited int // over one heartbeat period
		waiting, urgent                int // blocked now
		demand, bulk                   float64
	}{
		// MinDemand (1/s) rounded up to the limit's 128th.
		"idle":                        {0, 0, 0, 0, 0, 0, 1.0390625, 0},
		"interactive waiting":         {40, 10, 0, 0, 1, 1, lim, 0},
		"bulk waiting only":           {40, 10, 40, 10, 3, 0, lim, lim - 1.0390625},
		"bulk waits, interactive too": {40, 10, 30, 5, 3, 1, lim, 0},
		// One interactive call in the 0.5 s period: 2/s × 1.2, rounded up
		// to the limit's 128th (2.5234375).
		"light interactive, bulk": {20, 5, 19, 5, 2, 0, lim, lim - 2.5234375},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			q := newQuota("q", "m", lim/cfg.Margin, time.Now())
			q.periods = make([]period, 1)
			q.calls, q.waited, q.bcalls, q.bwaited = tt.calls, tt.waited, tt.bcalls, tt.bwaited
			q.waiting, q.urgent = tt.waiting, tt.urgent
			q.rollDemand(&cfg)
			if math.Abs(q.demand-tt.demand) > 1e-9 || math.Abs(q.bulkDemand()-tt.bulk) > 1e-9 {
				t.Errorf("demand %v, bulk %v; want %v, %v", q.demand, q.bulkDemand(), tt.demand, tt.bulk)
			}
		})
	}
}

func TestToken(t *testing.T) {
	names := []string{
		"aws_secret_manager/123456789012/us-east-1/write", "google_secret_manager/my-project/write",
		"azure_key_vault/https://vault.example/write", "a.b", "=", "=YQ", "a", "", "é", "with space", "x.y.z",
	}
	seen := map[string]string{}
	for _, n := range names {
		tok := token(n)
		if k, _, ok := splitKey(recordKey(tok, token("member.1"))); !ok || k != tok {
			t.Errorf("%q: token %q does not make one key token", n, tok)
		}
		if o, dup := seen[tok]; dup {
			t.Errorf("%q and %q share the token %q", n, o, tok)
		}
		seen[tok] = n
		back, err := fromToken(tok)
		if n == "" {
			continue
		}
		if err != nil || back != n {
			t.Errorf("fromToken(token(%q)) = %q, %v", n, back, err)
		}
	}
	if got := token("aws_secret_manager/1/us-east-1/write"); got != "aws_secret_manager/1/us-east-1/write" {
		t.Errorf("plain name encoded: %q", got)
	}
}

func TestLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	var l limiter
	l.set(now, 10, burstFor(10))
	if _, ok := l.reserve(now, 0); ok {
		t.Fatal("a new limiter has a token")
	}
	now = now.Add(time.Second)
	for i := range 10 {
		if d, ok := l.reserve(now, 0); !ok || d != 0 {
			t.Fatalf("token %d of the burst: %v %v", i, d, ok)
		}
	}
	if d, ok := l.reserve(now, 50*time.Millisecond); ok || d != 100*time.Millisecond {
		t.Fatalf("beyond the horizon: %v %v, want 100ms, not reserved", d, ok)
	}
	d, ok := l.reserve(now, 150*time.Millisecond)
	if !ok || d != 100*time.Millisecond {
		t.Fatalf("within the horizon: %v %v", d, ok)
	}
	l.cancel(now)
	if d, ok := l.reserve(now, 150*time.Millisecond); !ok || d != 100*time.Millisecond {
		t.Fatalf("after a cancel the same slot is free: %v %v", d, ok)
	}
	l.set(now.Add(time.Hour), 2.5, burstFor(2.5))
	if l.tokens != 2 {
		t.Errorf("tokens above the new burst kept: %v", l.tokens)
	}
	l.set(now, 0, 0)
	if d, ok := l.reserve(now.Add(2*time.Hour), time.Hour); ok || d != 0 {
		t.Errorf("rate 0 gave %v %v", d, ok)
	}
	if burstFor(0.3) != 1 || burstFor(15.83) != 15 || burstFor(0) != 0 {
		t.Errorf("burstFor: %v %v %v", burstFor(0.3), burstFor(15.83), burstFor(0))
	}
}
