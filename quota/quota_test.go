package quota

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/providers"
)

// The quota every test shares out: AWS Secrets Manager's 50 writes per
// second per account and region.
const perSecond = 50.0

// member is one Manager on its own NATS connection.
type member struct {
	m  *Manager
	nc *nats.Conn
}

// connect opens a connection preferring urls[0] (the others as fallbacks).
func connect(t *testing.T, urls []string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(strings.Join(urls, ","), nats.DontRandomize(), nats.Timeout(2*time.Second),
		nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// newMember starts a Manager on its own connection to urls[0].
func newMember(t *testing.T, urls []string, cfg Config) *member {
	t.Helper()
	nc := connect(t, urls)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := New(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return &member{m: m, nc: nc}
}

// members starts n members, member i connected to node i mod len(urls)
// first.
func members(t *testing.T, n int, urls []string, cfg Config) []*member {
	t.Helper()
	out := make([]*member, n)
	for i := range out {
		k := i % len(urls)
		out[i] = newMember(t, append(slices.Clone(urls[k:]), urls[:k]...), cfg)
	}
	return out
}

// recordShares logs every share change of the members (for the quota
// named name) into a shareLog.
func recordShares(ms []*member, name string) *shareLog {
	sl := &shareLog{}
	for i, x := range ms {
		x.m.mu.Lock()
		x.m.onShare = func(n string, share float64, at time.Time) {
			if n != name {
				return
			}
			sl.mu.Lock()
			sl.events = append(sl.events, shareEvent{member: i, at: at, share: share})
			sl.mu.Unlock()
		}
		x.m.mu.Unlock()
	}
	return sl
}

// takes records when each member got a token.
type takes struct {
	mu  sync.Mutex
	at  [][]time.Time
	err atomic.Int64
}

func newTakes(n int) *takes { return &takes{at: make([][]time.Time, n)} }

func (tk *takes) add(i int, t time.Time) {
	tk.mu.Lock()
	tk.at[i] = append(tk.at[i], t)
	tk.mu.Unlock()
}

// all returns the takes of the given members (all when none is given),
// merged and sorted.
func (tk *takes) all(only ...int) []time.Time {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	var out []time.Time
	for i, ts := range tk.at {
		if len(only) == 0 || slices.Contains(only, i) {
			out = append(out, ts...)
		}
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

// count returns how many takes of the given members fall in [from, to).
func (tk *takes) count(from, to time.Time, only ...int) int {
	n := 0
	for _, t := range tk.all(only...) {
		if !t.Before(from) && t.Before(to) {
			n++
		}
	}
	return n
}

// saturate calls Wait from workers goroutines as fast as tokens come,
// recording every token, until ctx ends. Any error other than ctx's is
// counted.
func saturate(ctx context.Context, m *Manager, name string, i, workers int, tk *takes) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				_, err := m.Wait(ctx, name, perSecond)
				if err != nil {
					if ctx.Err() == nil {
						tk.err.Add(1)
					}
					continue
				}
				tk.add(i, time.Now())
			}
		}()
	}
	return &wg
}

// minBurst is the smallest burst b such that a token bucket refilled at
// rate per second, full at the first take, lets every take through: the
// largest count of takes in any interval minus rate × its length. A
// provider enforcing (rate, burst) would have refused none of the takes if
// and only if minBurst(ts, rate) <= burst.
func minBurst(ts []time.Time, rate float64) float64 {
	if len(ts) == 0 {
		return 0
	}
	best, low := 0.0, math.Inf(1)
	for j, t := range ts {
		x := float64(j) - rate*t.Sub(ts[0]).Seconds()
		low = min(low, x)
		best = max(best, x-low+1)
	}
	return best
}

// maxWindow returns the most takes in any interval [t, t+w).
func maxWindow(ts []time.Time, w time.Duration) int {
	best, i := 0, 0
	for j := range ts {
		for ts[j].Sub(ts[i]) >= w {
			i++
		}
		best = max(best, j-i+1)
	}
	return best
}

// perWindow counts the takes in consecutive windows of w from start.
func perWindow(ts []time.Time, start time.Time, w time.Duration, n int) []int {
	out := make([]int, n)
	for _, t := range ts {
		if k := int(t.Sub(start) / w); t.Compare(start) >= 0 && k < n {
			out[k]++
		}
	}
	return out
}

// waitFor polls cond every 50ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

func stats(m *Manager, name string) Stats {
	for _, s := range m.Stats() {
		if s.Name == name {
			return s
		}
	}
	return Stats{}
}

// active reports whether every member sees n members and has a share.
func active(ms []*member, name string, n int) bool {
	for _, x := range ms {
		s := stats(x.m, name)
		if s.Members != n || s.Share <= 0 || s.Stale {
			return false
		}
	}
	return true
}

func shares(ms []*member, name string) (sum float64, each []float64) {
	for _, x := range ms {
		s := stats(x.m, name).Share
		each = append(each, math.Round(s*100)/100)
		sum += s
	}
	return sum, each
}

// TestCluster runs the three-member tests on one 3-node cluster, each
// member connected to its own node: shares, a killed member, uneven demand.
func TestCluster(t *testing.T) {
	c := testenv.StartCluster(t, 3)
	cfg := Config{Replicas: 3}
	t.Run("ThreeMembersShareOneQuota", func(t *testing.T) { testShare(t, c.URLs(), cfg) })
	t.Run("KilledMemberShareReturns", func(t *testing.T) { testKill(t, c.URLs(), cfg) })
	t.Run("UnevenDemand", func(t *testing.T) { testUneven(t, c.URLs(), cfg) })
	t.Run("BulkYieldsAcrossMembers", func(t *testing.T) { testBulkAcross(t, c.URLs(), cfg) })
	t.Run("BulkJoinerYields", func(t *testing.T) { testBulkJoin(t, c.URLs(), cfg) })
}

// testBulkAcross: priorities between members. Member 0 floods a 20/s
// quota (19/s shared) with bulk calls only, member 1 (on another node)
// with interactive calls only; then member 1 stops.
//
// Asserted: while both flood, member 1 takes >= 0.8 × (19 − 1.04)/s, the
// limit less member 0's minimum interactive demand (1/s on the limit's
// 128th grid): its interactive demand goes before member 0's bulk demand
// (with no priority across members each would get 9.5/s); member 0 takes
// at most 3/s. Once member 1 is idle, member 0's bulk calls take >= 0.8 ×
// 17/s (all but member 1's idle allocation). Every take of both conforms
// to a 20/s bucket with burst 20; no Wait fails.
func testBulkAcross(t *testing.T, urls []string, cfg Config) {
	const name = "aws_secret_manager/222222222222/eu-west-1/write"
	ms := members(t, 2, urls, cfg)
	tk := newTakes(2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ictx, stopInteractive := context.WithCancel(ctx)
	defer stopInteractive()
	bulk := flood(ctx, ms[0].m, name, true, 0, 16, tk)
	inter := flood(ictx, ms[1].m, name, false, 1, 4, tk)
	took := waitFor(t, 15*time.Second, "the interactive member ahead", func() bool {
		s0, s1 := stats(ms[0].m, name), stats(ms[1].m, name)
		return s0.Members == 2 && s1.Members == 2 && s0.Bulk > 0 && s1.Share > 15
	})
	s0, s1 := stats(ms[0].m, name), stats(ms[1].m, name)
	t.Logf("settled %v after start: bulk member share %.2f (demand %.2f, bulk %.2f), interactive member share %.2f (demand %.2f, bulk %.2f)",
		took.Round(time.Millisecond), s0.Share, s0.Demand, s0.Bulk, s1.Share, s1.Demand, s1.Bulk)
	start := time.Now()
	time.Sleep(4 * time.Second)
	end := time.Now()
	sec := end.Sub(start).Seconds()
	bulkRate, interRate := float64(tk.count(start, end, 0))/sec, float64(tk.count(start, end, 1))/sec
	t.Logf("both flooding, 4 s: interactive member %.2f/s, bulk member %.2f/s", interRate, bulkRate)
	if interRate < 0.8*(19-1.04) {
		t.Errorf("the interactive member took %.2f/s next to another member's bulk job, want >= %.2f", interRate, 0.8*(19-1.04))
	}
	if bulkRate > 3 {
		t.Errorf("the bulk member took %.2f/s while another member's interactive calls waited, want <= 3", bulkRate)
	}

	stopInteractive()
	inter.Wait()
	took = waitFor(t, 15*time.Second, "the bulk member has the quota", func() bool {
		return stats(ms[0].m, name).Share > 16
	})
	t.Logf("bulk member's share %.2f, %v after the interactive member stopped", stats(ms[0].m, name).Share, took.Round(time.Millisecond))
	start = time.Now()
	time.Sleep(3 * time.Second)
	end = time.Now()
	cancel()
	bulk.Wait()
	bulkRate = float64(tk.count(start, end, 0)) / end.Sub(start).Seconds()
	t.Logf("interactive member idle, 3 s: bulk member %.2f/s", bulkRate)
	if bulkRate < 0.8*17 {
		t.Errorf("the bulk member took %.2f/s with the other member idle, want >= %.2f", bulkRate, 0.8*17)
	}
	if b := minBurst(tk.all(), prioRate); b > prioRate {
		t.Errorf("the takes need a burst of %.1f at 20/s, more than 20", b)
	}
	if e := tk.err.Load(); e > 0 {
		t.Errorf("%d Wait errors", e)
	}
}

// testBulkJoin: a member joining a quota with a bulk job (a process
// restarted in the middle of `keyrelay rotate`) does not take a busy
// member's interactive share for its first demand window. Member 1 floods
// a 20/s quota (19/s shared) with interactive calls alone; then member 0
// joins with bulk calls.
//
// Asserted: from member 0's first announcement on, it announces the
// limit as bulk demand (all but its minimum interactive demand), and
// member 1's share never drops below 0.8 × (19 − 1.04)/s. Counted as
// interactive until measured, the joiner would halve member 1's share
// (9.5/s each) until its first demand window.
func testBulkJoin(t *testing.T, urls []string, cfg Config) {
	const name = "aws_secret_manager/333333333333/eu-west-1/write"
	ms := members(t, 2, urls, cfg)
	tk := newTakes(2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	inter := flood(ctx, ms[1].m, name, false, 1, 4, tk)
	waitFor(t, 15*time.Second, "the interactive member alone has the quota", func() bool {
		return stats(ms[1].m, name).Share > 17
	})
	bulk := flood(ctx, ms[0].m, name, true, 0, 16, tk)
	minShare, joinBulk := math.Inf(1), -1.0
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		s0, s1 := stats(ms[0].m, name), stats(ms[1].m, name)
		if joinBulk < 0 && s0.Limit > 0 {
			joinBulk = s0.Bulk
		}
		if s1.Members == 2 {
			minShare = min(minShare, s1.Share)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	bulk.Wait()
	inter.Wait()
	t.Logf("bulk demand announced on joining %.2f; the interactive member's lowest share after the join %.2f", joinBulk, minShare)
	if joinBulk < 19-1.04-1e-6 {
		t.Errorf("a member joining with a bulk call announced %.2f/s of bulk demand, want %.2f (the limit less its minimum interactive demand)", joinBulk, 19-1.04)
	}
	if math.IsInf(minShare, 1) {
		t.Fatal("the interactive member never saw the bulk member")
	}
	if minShare < 0.8*(19-1.04) {
		t.Errorf("the interactive member's share fell to %.2f/s when a member joined with a bulk job, want >= %.2f", minShare, 0.8*(19-1.04))
	}
	if e := tk.err.Load(); e > 0 {
		t.Errorf("%d Wait errors", e)
	}
}

// testShare: three members with demand join one after the other (the
// second 1.5 s after the first, the third 1.5 s later) and take tokens for
// 10 s once all three have a share.
//
// Asserted: over the 10 s, 450 <= total <= 550 (0.9 × 50 × 10 and
// 50 × 10 + 50); and over the whole run, joins included, the merged takes
// conform to a token bucket of 50/s with burst 50 starting full (the
// provider's quota: it would have refused none), which implies that no
// interval of 1 s holds more than 50 + 50; replaying every share change in
// time order, the three shares never sum to more than 47.5. Logged: totals, each member's
// count, every 1-second window, the largest sliding 1-second window, and
// the smallest burst a bucket at 47.5/s (the shared limit) would need.
func testShare(t *testing.T, urls []string, cfg Config) {
	const name = "aws_secret_manager/123456789012/us-east-1/write"
	ms := members(t, 3, urls, cfg)
	sl := recordShares(ms, name)
	tk := newTakes(3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var loads []*sync.WaitGroup
	for i, x := range ms {
		if i > 0 {
			time.Sleep(1500 * time.Millisecond)
		}
		loads = append(loads, saturate(ctx, x.m, name, i, 4, tk))
	}
	took := waitFor(t, 10*time.Second, "three members with a share", func() bool { return active(ms, name, 3) })
	sum, each := shares(ms, name)
	t.Logf("all three active %v after the third joined; shares %v (sum %.2f)", took.Round(time.Millisecond), each, sum)
	start := time.Now()
	time.Sleep(10 * time.Second)
	end := time.Now()
	cancel()
	for _, wg := range loads {
		wg.Wait()
	}
	total := tk.count(start, end)
	var per []int
	for i := range ms {
		per = append(per, tk.count(start, end, i))
	}
	all := tk.all()
	inRun := slices.DeleteFunc(slices.Clone(all), func(x time.Time) bool { return x.Before(start) || !x.Before(end) })
	t.Logf("10 s: %d tokens (%.1f/s), per member %v; per second %v", total, float64(total)/end.Sub(start).Seconds(), per,
		perWindow(all, start, time.Second, 10))
	t.Logf("whole run (joins included, %d tokens): largest 1 s window %d; min burst at 50/s %.1f, at 47.5/s %.1f; in the 10 s: largest 1 s window %d",
		len(all), maxWindow(all, time.Second), minBurst(all, perSecond), minBurst(all, 0.95*perSecond), maxWindow(inRun, time.Second))
	best, when := sl.maxSum()
	t.Logf("largest sum of the three shares at any time: %.4f (at %v; limit 47.5)", best, when.Format("15:04:05.000"))
	if best > 0.95*perSecond*(1+1e-9) {
		t.Errorf("the shares summed to %.4f, more than the limit 47.5", best)
	}
	if n := tk.err.Load(); n > 0 {
		t.Errorf("%d Wait errors", n)
	}
	if total < 450 || total > 550 {
		t.Errorf("10 s total %d, want within [450, 550]", total)
	}
	if b := minBurst(all, perSecond); b > perSecond {
		t.Errorf("the takes need a burst of %.1f at 50/s, more than the provider's 50", b)
	}
	if w := maxWindow(all, time.Second); w > 100 {
		t.Errorf("a 1 s window holds %d takes, more than 50 + 50", w)
	}
}

// testKill: three members with demand; one member's connection is closed
// without Close (its process killed: no goodbye, its record stays until the
// server drops it after TTL) and its callers stop.
//
// Asserted: the two others take >= 0.9 × 50 × 3 = 135 tokens in the 3 s
// starting TTL + 2 s after the kill; the takes of all three conform to a
// 50/s bucket with burst 50 over the whole run; then one survivor leaves
// with Close and the last one holds the whole limit within the TTL (its
// record is deleted, not left to expire). Logged: how long the two took to
// hold the whole limit between them, and the last one after the Close.
func testKill(t *testing.T, urls []string, cfg Config) {
	const name = "google_secret_manager/project-1/write"
	ms := members(t, 3, urls, cfg)
	tk := newTakes(3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	victimCtx, kill := context.WithCancel(ctx)
	loads := []*sync.WaitGroup{saturate(ctx, ms[0].m, name, 0, 4, tk), saturate(ctx, ms[1].m, name, 1, 4, tk),
		saturate(victimCtx, ms[2].m, name, 2, 4, tk)}
	waitFor(t, 10*time.Second, "three members with a share", func() bool { return active(ms, name, 3) })
	time.Sleep(time.Second)
	killed := time.Now()
	ms[2].nc.Close()
	kill()
	limit := stats(ms[0].m, name).Limit
	back := waitFor(t, 3*cfgOr(cfg.TTL, TTLDefault), "the survivors hold the limit", func() bool {
		sum, _ := shares(ms[:2], name)
		return sum >= 0.99*limit
	})
	sum, each := shares(ms[:2], name)
	t.Logf("after the kill the two survivors held the limit %.1f in %v (TTL %v); shares %v (sum %.2f)", limit,
		back.Round(time.Millisecond), cfgOr(cfg.TTL, TTLDefault), each, sum)
	from := killed.Add(cfgOr(cfg.TTL, TTLDefault) + 2*time.Second)
	if d := time.Until(from.Add(3 * time.Second)); d > 0 {
		time.Sleep(d)
	}
	cancel()
	for _, wg := range loads {
		wg.Wait()
	}
	n := tk.count(from, from.Add(3*time.Second), 0, 1)
	all := tk.all()
	t.Logf("survivors took %d tokens (%.1f/s) in the 3 s from TTL+2s after the kill; per second from the kill %v; min burst at 50/s %.1f",
		n, float64(n)/3, perWindow(all, killed, time.Second, int(from.Add(3*time.Second).Sub(killed)/time.Second)), minBurst(all, perSecond))
	if n < 135 {
		t.Errorf("survivors took %d tokens in 3 s, want >= 135", n)
	}
	// A member that leaves with Close deletes its record: the last one
	// holds the whole limit well before the TTL.
	closed := time.Now()
	ms[1].m.Close()
	alone := waitFor(t, cfgOr(cfg.TTL, TTLDefault), "the last member holds the limit", func() bool {
		return stats(ms[0].m, name).Share >= 0.99*limit
	})
	t.Logf("after a Close the last member held the limit in %v", alone.Round(time.Millisecond))
	_ = closed
	if b := minBurst(all, perSecond); b > perSecond {
		t.Errorf("the takes need a burst of %.1f at 50/s, more than the provider's 50", b)
	}
	if e := tk.err.Load(); e > 0 {
		t.Errorf("%d Wait errors", e)
	}
}

func cfgOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// testUneven: one member wants 5 tokens per second (a caller every 200 ms),
// two want all they can get.
//
// Asserted, over 5 s once the light member's demand is known: the light
// member got >= 4.5/s (its demand met), the two heavy ones together
// >= 40.5/s (0.9 of the 45 the light one leaves), and all three conform to
// a 50/s bucket with burst 50.
func testUneven(t *testing.T, urls []string, cfg Config) {
	const name = "azure_key_vault/=vault.example/write"
	ms := members(t, 3, urls, cfg)
	tk := newTakes(3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
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
			if _, err := ms[0].m.Wait(ctx, name, perSecond); err != nil {
				if ctx.Err() == nil {
					tk.err.Add(1)
				}
				continue
			}
			tk.add(0, time.Now())
		}
	}()
	loads := []*sync.WaitGroup{&light, saturate(ctx, ms[1].m, name, 1, 4, tk), saturate(ctx, ms[2].m, name, 2, 4, tk)}
	took := waitFor(t, 15*time.Second, "the light member's demand known", func() bool {
		return active(ms, name, 3) && stats(ms[0].m, name).Demand < 10 && stats(ms[1].m, name).Share > 18 && stats(ms[2].m, name).Share > 18
	})
	_, each := shares(ms, name)
	t.Logf("settled %v after start: shares %v, light demand %.2f", took.Round(time.Millisecond), each, stats(ms[0].m, name).Demand)
	start := time.Now()
	time.Sleep(5 * time.Second)
	end := time.Now()
	cancel()
	for _, wg := range loads {
		wg.Wait()
	}
	sec := end.Sub(start).Seconds()
	lightRate := float64(tk.count(start, end, 0)) / sec
	heavyRate := float64(tk.count(start, end, 1, 2)) / sec
	all := tk.all()
	t.Logf("5 s: light %.2f/s, heavy two %.2f/s (%.2f + %.2f), total %.2f/s; min burst at 50/s %.1f", lightRate, heavyRate,
		float64(tk.count(start, end, 1))/sec, float64(tk.count(start, end, 2))/sec, lightRate+heavyRate, minBurst(all, perSecond))
	if lightRate < 4.5 {
		t.Errorf("light member got %.2f/s, want >= 4.5", lightRate)
	}
	if heavyRate < 40.5 {
		t.Errorf("heavy members got %.2f/s together, want >= 40.5", heavyRate)
	}
	if b := minBurst(all, perSecond); b > perSecond {
		t.Errorf("the takes need a burst of %.1f at 50/s, more than the provider's 50", b)
	}
	if e := tk.err.Load(); e > 0 {
		t.Errorf("%d Wait errors", e)
	}
}

// TestNATSDown: two members with demand on one server; the server is shut
// down, then started again.
//
// Asserted: no Wait fails; while the server is down (from StaleAfter + one
// heartbeat after the shutdown, for 3 s) the two take tokens at their
// conservative shares, together >= 0.9 × 47.5 × 2/3 (each of the two
// keeps room for itself, the other and one unseen newcomer: 47.5/3) and
// <= 50 × 3 + 50; a quota first used while the server is down gets tokens
// too; after the restart they take >= 0.9 × 50 per second again (measured
// over 3 s once both are current). No member's share exceeds 47.5/3 while
// the server is down, the shares never sum to more than 47.5, and all
// takes conform to a 50/s bucket with burst 50.
func TestNATSDown(t *testing.T) {
	srv := testenv.StartNATS(t)
	ms := members(t, 2, []string{srv.URL}, Config{})
	const name = "aws_secret_manager/210987654321/eu-west-1/write"
	sl := recordShares(ms, name)
	tk := newTakes(3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	loads := []*sync.WaitGroup{saturate(ctx, ms[0].m, name, 0, 4, tk), saturate(ctx, ms[1].m, name, 1, 4, tk)}
	waitFor(t, 10*time.Second, "two members with a share", func() bool { return active(ms, name, 2) })
	before := time.Now()
	time.Sleep(2 * time.Second)
	upRate := float64(tk.count(before, time.Now())) / time.Since(before).Seconds()

	srv.Stop()
	down := time.Now()
	from := down.Add(StaleAfterDefault + HeartbeatDefault)
	time.Sleep(time.Until(from))
	_, each := shares(ms, name)
	for _, x := range ms {
		if s := stats(x.m, name); !s.Stale {
			t.Errorf("member %s not stale %v after the shutdown", x.m.Member(), time.Since(down))
		}
	}
	// A quota never used before, first asked for while NATS is down.
	fresh := make(chan time.Duration, 1)
	loads = append(loads, func() *sync.WaitGroup {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			if _, err := ms[0].m.Wait(ctx, "google_secret_manager/new-project/write", 600.0/60); err != nil {
				tk.err.Add(1)
				return
			}
			fresh <- time.Since(t0)
			tk.add(2, time.Now())
		}()
		return &wg
	}())
	time.Sleep(3 * time.Second)
	to := time.Now()
	downRate := float64(tk.count(from, to, 0, 1)) / to.Sub(from).Seconds()
	var freshWait time.Duration
	select {
	case freshWait = <-fresh:
	default:
		t.Errorf("Wait on a new quota while NATS is down did not return within 3 s")
	}
	t.Logf("up: %.2f/s; down: shares %v, %.2f/s (conservative limit %.2f/s); new quota's first token after %v",
		upRate, each, downRate, 2*0.95*perSecond/3, freshWait.Round(time.Millisecond))

	restarted := time.Now()
	srv.Restart()
	back := waitFor(t, 15*time.Second, "both current with a share", func() bool {
		sum, _ := shares(ms, name)
		return active(ms, name, 2) && sum >= 0.99*0.95*perSecond
	})
	start := time.Now()
	time.Sleep(3 * time.Second)
	end := time.Now()
	cancel()
	for _, wg := range loads {
		wg.Wait()
	}
	againRate := float64(tk.count(start, end, 0, 1)) / end.Sub(start).Seconds()
	all := tk.all(0, 1)
	t.Logf("restarted: both back at the full limit %v after the restart; %.2f/s over 3 s; min burst at 50/s %.1f", (back).Round(time.Millisecond),
		againRate, minBurst(all, perSecond))
	// Every share held while stale, from StaleAfter + one heartbeat after
	// the shutdown until the restart, and the largest sum at any time.
	conservative := 0.95 * perSecond / 3
	sl.mu.Lock()
	cur := map[int]float64{}
	var worst float64
	for _, e := range sl.events {
		if !e.at.After(from) {
			cur[e.member] = e.share
			continue
		}
		if e.at.Before(restarted) {
			worst = max(worst, e.share)
		}
	}
	for _, v := range cur {
		worst = max(worst, v)
	}
	sl.mu.Unlock()
	best, _ := sl.maxSum()
	t.Logf("largest share while NATS was down %.2f (conservative %.2f); largest sum of shares at any time %.4f", worst, conservative, best)
	if worst > conservative*(1+1e-9) {
		t.Errorf("a member held %.2f while NATS was down, more than the conservative %.2f", worst, conservative)
	}
	if best > 0.95*perSecond*(1+1e-9) {
		t.Errorf("the shares summed to %.4f, more than the limit 47.5", best)
	}
	if e := tk.err.Load(); e > 0 {
		t.Errorf("%d Wait errors", e)
	}
	if downRate < 0.9*0.95*perSecond*2/3 || downRate > perSecond+perSecond/3 {
		t.Errorf("while NATS was down: %.2f/s, want within [%.2f, %.2f]", downRate, 0.9*0.95*perSecond*2/3, perSecond+perSecond/3)
	}
	if againRate < 0.9*perSecond {
		t.Errorf("after the restart: %.2f/s, want >= %.2f", againRate, 0.9*perSecond)
	}
	if b := minBurst(all, perSecond); b > perSecond {
		t.Errorf("the takes need a burst of %.1f at 50/s, more than the provider's 50", b)
	}
}

// TestDeadline: Wait mirrors providers.WaitTokens. A deadline shorter than
// the wait returns at once ErrThrottled with the wait needed and takes no
// token (also while the member is still joining); a context cancelled while
// waiting returns its error; with time enough the token comes.
func TestDeadline(t *testing.T) {
	srv := testenv.StartNATS(t)
	m := newMember(t, []string{srv.URL}, Config{}).m
	const name = "hashicorp_vault/slow/write"
	const rate = 2.0 // shared as 1.9/s, burst 1

	// Joining: no share yet.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	t0 := time.Now()
	d, err := m.Wait(ctx, name, rate)
	cancel()
	if returned := time.Since(t0); !errors.Is(err, providers.ErrThrottled) || d <= 0 || returned > 40*time.Millisecond {
		t.Fatalf("joining: Wait = %v, %v after %v; want ErrThrottled with a wait, at once", d, err, returned)
	}
	t.Logf("joining: ErrThrottled, retry after %v (%v)", d, err)

	// With time enough the first token comes once the member has its share.
	t0 = time.Now()
	if _, err := m.Wait(context.Background(), name, rate); err != nil {
		t.Fatal(err)
	}
	t.Logf("first token after %v", time.Since(t0).Round(time.Millisecond))

	// The bucket is empty now: the next token is ~1/1.9 s away.
	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	t0 = time.Now()
	d, err = m.Wait(ctx, name, rate)
	cancel()
	returned := time.Since(t0)
	if !errors.Is(err, providers.ErrThrottled) || d < 300*time.Millisecond || d > 600*time.Millisecond || returned > 40*time.Millisecond {
		t.Fatalf("empty bucket: Wait = %v, %v after %v; want ErrThrottled with ~526ms, at once", d, err, returned)
	}
	t.Logf("empty bucket: ErrThrottled after %v, retry after %v", returned.Round(time.Microsecond), d.Round(time.Millisecond))

	// No token was taken: waiting now takes about d, not d + 1/1.9 s.
	t0 = time.Now()
	if _, err := m.Wait(context.Background(), name, rate); err != nil {
		t.Fatal(err)
	}
	waited := time.Since(t0)
	if waited > d+200*time.Millisecond {
		t.Errorf("after a refused Wait the next token took %v, want about %v (the refused one took none)", waited, d)
	}
	t.Logf("next token after %v", waited.Round(time.Millisecond))

	// Cancelled while waiting: ctx's error, and the token is given back.
	ctx, cancel = context.WithCancel(context.Background())
	go func() { time.Sleep(100 * time.Millisecond); cancel() }()
	t0 = time.Now()
	if _, err := m.Wait(ctx, name, rate); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: Wait = %v, want context.Canceled", err)
	}
	t.Logf("cancelled after %v", time.Since(t0).Round(time.Millisecond))
	before := stats(m, name).Taken
	if _, err := m.Wait(context.Background(), name, rate); err != nil {
		t.Fatal(err)
	}
	if got := stats(m, name).Taken - before; got != 1 {
		t.Errorf("taken %d, want 1", got)
	}

	m.Close()
	if _, err := m.Wait(context.Background(), name, rate); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
}
