package quota

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/internal/ctxtime"
	"github.com/keyrelay/keyrelay/providers"
)

// ErrClosed is returned by Wait after Close.
var ErrClosed = errors.New("quota: manager closed")

var _ providers.Quotas = (*Manager)(nil)

// Manager is this process's membership in the cluster-wide quotas it uses.
// It is safe for concurrent use.
type Manager struct {
	cfg    Config
	kv     jetstream.KeyValue
	log    *zap.Logger
	member string // this member's key token

	mu      sync.Mutex
	quotas  map[string]*quota // by name
	byTok   map[string]*quota // by key token
	view    map[string]map[string]*peer
	applied uint64 // bucket sequence view is current to
	// next is the view being rebuilt by a new watcher, until its initial
	// values are in (nil otherwise).
	next      map[string]map[string]*peer
	nextSeq   uint64
	watcher   jetstream.KeyWatcher
	watchUp   bool      // a watcher is delivering live updates into view
	downSince time.Time // when the last watcher stopped delivering
	started   time.Time // when the current watcher was created
	// puts are this member's heartbeats not yet seen back through the
	// watch, oldest first.
	puts   []*put
	stale  bool
	closed bool
	synced chan struct{} // closed once the first view is in

	kick   chan struct{}
	cancel context.CancelFunc
	// onShare, when set (tests), is told every share change, under the lock.
	onShare func(name string, share float64, at time.Time)
	loops   sync.WaitGroup
	once    sync.Once
}

// peer is the latest record of a member, as watched.
type peer struct {
	rec record
	rev uint64
}

// put is one heartbeat write: sent at sentAt, stored at bucket sequence rev
// (0 while in flight or when it failed).
type put struct {
	sentAt time.Time
	rev    uint64
	failed bool
}

// New joins the cluster-wide quotas in cfg.Bucket (created or updated by
// EnsureBucket) and returns once it has read the bucket's current records,
// or ctx's error. Quotas are joined by Wait, on first use. Close leaves
// them.
func New(ctx context.Context, js jetstream.JetStream, cfg Config) (*Manager, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	kv, err := EnsureBucket(ctx, js, cfg)
	if err != nil {
		return nil, err
	}
	m := newManager(cfg, kv)
	lctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.loops.Add(2)
	go m.watchLoop(lctx)
	go m.heartbeatLoop(lctx)
	select {
	case <-m.synced:
		return m, nil
	case <-ctx.Done():
		m.Close()
		return nil, fmt.Errorf("quota: read bucket %s: %w", cfg.Bucket, ctx.Err())
	}
}

func newManager(cfg Config, kv jetstream.KeyValue) *Manager {
	now := time.Now()
	return &Manager{
		cfg: cfg, kv: kv, log: cfg.Logger, member: token(cfg.Member),
		quotas: map[string]*quota{}, byTok: map[string]*quota{},
		view:      map[string]map[string]*peer{},
		downSince: now, started: now,
		synced: make(chan struct{}),
		kick:   make(chan struct{}, 1),
	}
}

// Member returns this member's id (Config.Member).
func (m *Manager) Member() string { return m.cfg.Member }

// Wait takes one token of the quota named name, shared by every member
// using that name at perSecond × Margin tokens per second in all (see the
// package doc). Like providers.WaitTokens: when ctx's deadline comes before
// the token, it takes none and returns at once the wait needed with an
// error wrapping providers.ErrThrottled; a context ended while waiting
// returns its error. It never talks to NATS and never fails because NATS
// is slow or down. A perSecond that is not a positive finite number means
// no limit: Wait returns at once. After Close it returns ErrClosed.
//
// A ctx marked providers.PriorityBulk (providers.WithPriority) takes only
// what this member's interactive calls leave: see Priorities in the
// package doc.
func (m *Manager) Wait(ctx context.Context, name string, perSecond float64) (time.Duration, error) {
	if !(perSecond > 0) || math.IsInf(perSecond, 1) {
		return 0, nil
	}
	if providers.PriorityOf(ctx) == providers.PriorityBulk {
		return m.waitBulk(ctx, name, perSecond)
	}
	return m.waitInteractive(ctx, name, perSecond)
}

// waitInteractive takes a token for an interactive call: any token of the
// bucket, or one reserved at most Horizon ahead. While it is blocked it
// counts in q.urgent, which holds the bulk calls back.
func (m *Manager) waitInteractive(ctx context.Context, name string, perSecond float64) (time.Duration, error) {
	// held is the quota this call is counted as blocked on (waiting,
	// urgent), from its first blocked pass to its return. A quota with a
	// blocked call is never left, so every pass finds the same one.
	var held *quota
	release := func() { // under m.mu
		if held != nil {
			held.waiting--
			held.urgent--
			held.wakeBulk()
			held = nil
		}
	}
	first := true
	for {
		now := time.Now()
		m.mu.Lock()
		if m.closed {
			release()
			m.mu.Unlock()
			return 0, ErrClosed
		}
		q := m.join(name, perSecond, now, false)
		if held != q {
			release()
		}
		d, reserved := q.lim.reserve(now, m.cfg.Horizon)
		if first {
			first = false
			q.calls++
			if !reserved || d > 0 {
				q.waited++
			}
		}
		if reserved && d == 0 {
			q.taken++
			release()
			m.mu.Unlock()
			return 0, nil
		}
		if !reserved && d == 0 {
			d = q.eta(now, &m.cfg) // no share yet
		}
		if held == nil {
			held = q
			q.waiting++
			q.urgent++
		}
		if !reserved {
			q.unreserved++
		}
		changed := q.changed
		m.mu.Unlock()

		// end finishes this pass under the lock: it gives the reservation
		// back or counts the token, and releases the call when it returns.
		end := func(cancel, took, returning bool) {
			m.mu.Lock()
			defer m.mu.Unlock()
			if !reserved {
				q.unreserved--
			}
			if cancel {
				q.lim.cancel(time.Now())
			}
			if took {
				q.taken++
			}
			if returning {
				release()
			}
		}
		if !providers.TokenInTime(ctx, d) {
			end(reserved, false, true)
			return d, fmt.Errorf("%w: cluster-wide quota %q needs %v, more than the call can spare before its deadline (%w)", providers.ErrThrottled, name, d.Round(time.Millisecond), providers.ErrOwnLimit)
		}
		if reserved {
			if err := ctxtime.Sleep(ctx, d); err != nil {
				end(true, false, true)
				return 0, err
			}
			end(false, true, true)
			return 0, nil
		}
		// No token within the horizon: sleep until one may be, or until the
		// share changes, and try again.
		sleep := max(time.Millisecond, min(d-m.cfg.Horizon, m.cfg.Heartbeat))
		t := time.NewTimer(sleep)
		select {
		case <-t.C:
		case <-changed:
			t.Stop()
		case <-ctx.Done():
			t.Stop()
			end(false, false, true)
			return 0, ctx.Err()
		}
		end(false, false, false)
	}
}

// waitBulk takes a token for a bulk call: only when no interactive call of
// this member is blocked on the quota and the bucket holds a token beyond
// the interactive reserve, and never ahead of time. Bulk calls queue in
// arrival order; the first one sleeps until the bucket reaches its level
// (a timer) or an interactive call ends (a signal), the others until they
// are first. Queued, they count as waiting in the demand.
func (m *Manager) waitBulk(ctx context.Context, name string, perSecond float64) (time.Duration, error) {
	var (
		q     *quota
		w     *bulkWaiter // queued (in q.bulk) while not nil
		first = true
	)
	leave := func() { // under m.mu
		if w != nil {
			q.dequeue(w)
			w = nil
		}
	}
	for {
		now := time.Now()
		m.mu.Lock()
		if m.closed {
			leave()
			m.mu.Unlock()
			return 0, ErrClosed
		}
		cur := m.join(name, perSecond, now, true)
		if cur != q {
			leave() // a quota with queued calls is never left: only the first pass
			q = cur
		}
		pos := len(q.bulk) // bulk calls ahead of this one
		if w != nil {
			pos = slices.Index(q.bulk, w)
		}
		keep := interactiveReserve(q.lim.burst)
		var d time.Duration
		if pos == 0 && q.urgent == 0 {
			var took bool
			if d, took = q.lim.takeAbove(now, keep); took {
				if first {
					q.calls++
					q.bcalls++
				}
				q.taken++
				leave()
				m.mu.Unlock()
				return 0, nil
			}
		} else {
			q.lim.advance(now)
		}
		if first {
			first = false
			q.calls++
			q.waited++
			q.bcalls++
			q.bwaited++
		}
		// The wait this call is told: until the bucket holds, beyond the
		// reserve, a token for each interactive call sleeping without a
		// reservation, each bulk call ahead and this one (the interactive
		// reservations are already taken out of it).
		est := q.lim.until(1 + keep + float64(pos+q.unreserved))
		if !(q.lim.rate > 0) {
			est = q.eta(now, &m.cfg) // no share yet
		}
		if !providers.TokenInTime(ctx, est) {
			leave()
			m.mu.Unlock()
			return est, fmt.Errorf("%w: cluster-wide quota %q needs %v for a bulk call (after this member's interactive calls and their reserve of %v tokens), more than the call can spare before its deadline (%w)",
				providers.ErrThrottled, name, est.Round(time.Millisecond), keep, providers.ErrOwnLimit)
		}
		if w == nil {
			w = &bulkWaiter{wake: make(chan struct{}, 1)}
			q.enqueue(w)
		}
		// The first call sleeps until the bucket reaches its level; while
		// interactive calls are blocked, or before the member has a share,
		// until signalled (an interactive call ended, the share changed),
		// with a heartbeat as a backstop. The others wait their turn.
		var timer <-chan time.Time
		var t *time.Timer
		if pos == 0 {
			sleep := m.cfg.Heartbeat
			if q.urgent == 0 && d > 0 {
				sleep = min(sleep, d)
			}
			t = time.NewTimer(sleep)
			timer = t.C
		}
		changed, wake := q.changed, w.wake
		m.mu.Unlock()

		select {
		case <-timer:
		case <-wake:
		case <-changed:
		case <-ctx.Done():
			m.mu.Lock()
			leave()
			m.mu.Unlock()
			if t != nil {
				t.Stop()
			}
			return 0, ctx.Err()
		}
		if t != nil {
			t.Stop()
		}
	}
}

// join returns the quota's state, joining it on first use by a call of
// the given priority.
func (m *Manager) join(name string, perSecond float64, now time.Time, bulk bool) *quota {
	q := m.quotas[name]
	if q == nil {
		q = newQuota(name, m.member, perSecond, now)
		// Until measured, the member wants the whole limit, for the
		// priority of the call that joined: the gateway's first calls are
		// never held back, and a process joining with a bulk job (one
		// restarted mid-job) does not take the others' shares for a
		// demand window as if it were interactive.
		q.demand = q.limit(m.cfg.Margin)
		q.idemand = q.demand
		if bulk {
			q.idemand = demandOf(&m.cfg, q.demand, 1, 0, 0, 0)
		}
		m.quotas[name] = q
		m.byTok[q.tok] = q
		if m.stale {
			m.enterStale(q, now)
		} else {
			m.viewChanged(q, m.applied, now)
		}
		m.kickSoon()
	} else if perSecond != q.perSecond {
		q.perSecond = perSecond
		m.refresh(q, now)
	}
	q.lastUsed = now
	return q
}

// Stats is one quota as this member sees it.
type Stats struct {
	Name string
	// Limit is the cluster-wide rate the members share: the smallest
	// perSecond × Margin any live member announced (this member's own
	// before it sees the others).
	Limit float64
	// Share is the rate this member takes tokens at now.
	Share float64
	// Members is the number of live members in this member's view, itself
	// included once its first heartbeat came back.
	Members int
	// Demand is the demand this member announces, and Bulk the part of
	// it only bulk calls want.
	Demand, Bulk float64
	// Taken counts the tokens Wait gave.
	Taken uint64
	// Stale is set while the member's view is stale (NATS unreachable or
	// slow) and its share is the conservative one.
	Stale bool
}

// Stats returns every quota this member uses, by name.
func (m *Manager) Stats() []Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Stats, 0, len(m.quotas))
	for _, q := range m.quotas {
		limit := q.limit(m.cfg.Margin)
		for _, p := range m.view[q.tok] {
			if p.rec.Limit > 0 && p.rec.Limit < limit {
				limit = p.rec.Limit
			}
		}
		out = append(out, Stats{Name: q.name, Limit: limit, Share: q.share, Members: len(m.view[q.tok]),
			Demand: q.demand, Bulk: q.bulkDemand(), Taken: q.taken, Stale: q.stale})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Close leaves every quota: Waits return ErrClosed, the member's records
// are deleted (bounded by CloseTimeout) so the others take its share at
// once, and the watch stops. A member that is not closed (a killed
// process) gives its share back TTL after its last heartbeat.
func (m *Manager) Close() {
	m.once.Do(func() {
		m.mu.Lock()
		m.closed = true
		keys := make([]string, 0, len(m.quotas))
		for _, q := range m.quotas {
			keys = append(keys, q.key)
			q.lim.set(time.Now(), 0, 0)
			q.share = 0
			if q.settle != nil {
				q.settle.Stop()
			}
			q.notify()
		}
		w := m.watcher
		m.mu.Unlock()
		if m.cancel != nil {
			m.cancel()
		}
		if w != nil {
			_ = w.Stop()
		}
		m.loops.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.CloseTimeout)
		defer cancel()
		var wg sync.WaitGroup
		for _, k := range keys {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = m.kv.Delete(ctx, k)
			}()
		}
		wg.Wait()
	})
}

// kickSoon asks the heartbeat loop for an early heartbeat.
func (m *Manager) kickSoon() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// heartbeatLoop writes every joined quota's record each Heartbeat (and
// early when kicked), rolls the demand, leaves idle quotas, and watches
// for staleness.
func (m *Manager) heartbeatLoop(ctx context.Context) {
	defer m.loops.Done()
	t := time.NewTicker(m.cfg.Heartbeat)
	defer t.Stop()
	var lastKick time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.beat(ctx, true)
		case <-m.kick:
			if d := kickGap - time.Since(lastKick); d > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(d):
				}
			}
			lastKick = time.Now()
			m.beat(ctx, false)
		}
	}
}

type write struct {
	key string
	val []byte // nil: delete
	put *put
}

// beat writes the records; a regular beat (not a kick) also closes the
// demand period, leaves idle quotas, checks staleness and restarts a
// watcher that stopped delivering.
func (m *Manager) beat(ctx context.Context, regular bool) {
	now := time.Now()
	m.mu.Lock()
	var restart jetstream.KeyWatcher
	if regular {
		if s := m.isStale(now); s != m.stale {
			m.setStale(s, now)
		}
		if m.stale && m.watcher != nil && now.Sub(m.started) > m.cfg.StaleAfter {
			restart, m.watcher = m.watcher, nil
		}
	}
	writes := make([]write, 0, len(m.quotas))
	var p *put
	for name, q := range m.quotas {
		if regular {
			if q.waiting == 0 && now.Sub(q.lastUsed) > m.cfg.IdleAfter {
				m.leave(name, q, now)
				writes = append(writes, write{key: q.key})
				continue
			}
			q.rollDemand(&m.cfg)
		}
		val, err := json.Marshal(record{Quota: q.name, Member: m.cfg.Member, Limit: q.limit(m.cfg.Margin),
			Demand: q.demand, Bulk: q.bulkDemand(), Seen: m.applied, Share: q.share})
		if err != nil {
			continue
		}
		if p == nil {
			p = &put{sentAt: now}
			m.addPut(p)
		}
		writes = append(writes, write{key: q.key, val: val, put: p})
	}
	m.mu.Unlock()
	if restart != nil {
		m.log.Info("quota: restarting the bucket watch", zap.String("bucket", m.cfg.Bucket))
		_ = restart.Stop()
	}
	var wg sync.WaitGroup
	for _, w := range writes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wctx, cancel := context.WithTimeout(ctx, m.cfg.Heartbeat)
			defer cancel()
			if w.val == nil {
				_ = m.kv.Delete(wctx, w.key)
				return
			}
			rev, err := m.kv.Put(wctx, w.key, w.val)
			m.mu.Lock()
			defer m.mu.Unlock()
			if err != nil {
				w.put.failed = true
				return
			}
			w.put.rev = max(w.put.rev, rev)
			m.confirmPuts(time.Now())
		}()
	}
	wg.Wait()
}

// leave drops a quota nobody used for IdleAfter.
func (m *Manager) leave(name string, q *quota, now time.Time) {
	delete(m.quotas, name)
	delete(m.byTok, q.tok)
	q.lim.set(now, 0, 0)
	q.share = 0
	if q.settle != nil {
		q.settle.Stop()
	}
	q.notify()
}

// addPut records a heartbeat write. Of consecutive failed writes only the
// oldest matters (staleness counts from it, and the write that confirms a
// later one confirms it too), and the list is kept short.
func (m *Manager) addPut(p *put) {
	n := len(m.puts)
	if n >= 2 && m.puts[n-1].failed && m.puts[n-2].failed {
		m.puts = m.puts[:n-1]
	}
	if len(m.puts) >= 64 {
		m.puts = append(m.puts[:1], m.puts[2:]...)
	}
	m.puts = append(m.puts, p)
}

// confirmPuts drops the writes the view now includes, and every write sent
// before one of them: the view then holds everything written to the bucket
// before that write was sent. It ends staleness when nothing older than
// StaleAfter is left unconfirmed.
func (m *Manager) confirmPuts(now time.Time) {
	var upTo time.Time
	for _, p := range m.puts {
		if p.rev != 0 && p.rev <= m.applied && m.watchUp && p.sentAt.After(upTo) {
			upTo = p.sentAt
		}
	}
	if !upTo.IsZero() {
		m.puts = slices.DeleteFunc(m.puts, func(p *put) bool { return !p.sentAt.After(upTo) })
	}
	if m.stale && !m.isStale(now) {
		m.setStale(false, now)
	}
}

// isStale: the watch has not delivered for StaleAfter (a stale member
// stays stale until a watcher delivers again), or a heartbeat sent more
// than StaleAfter ago has not come back through it.
func (m *Manager) isStale(now time.Time) bool {
	if !m.watchUp {
		return m.stale || now.Sub(m.downSince) > m.cfg.StaleAfter
	}
	return len(m.puts) > 0 && now.Sub(m.puts[0].sentAt) > m.cfg.StaleAfter
}

func (m *Manager) setStale(stale bool, now time.Time) {
	m.stale = stale
	if stale {
		m.log.Warn("quota: view of the other members is stale (NATS unreachable or slow); conservative shares",
			zap.String("bucket", m.cfg.Bucket))
		for _, q := range m.quotas {
			m.enterStale(q, now)
		}
		return
	}
	m.log.Info("quota: view of the other members is current again", zap.String("bucket", m.cfg.Bucket))
	for _, q := range m.quotas {
		q.stale = false
		alloc, others := m.allocFor(q)
		q.rebase(q.staleCap, m.applied, alloc, others, now)
		m.grant(q, now)
		m.refresh(q, now)
	}
}

// enterStale sets the conservative share: the limit split between the
// other members last seen, this one and one more that may have joined
// unseen, and never more than the share held, if any.
func (m *Manager) enterStale(q *quota, now time.Time) {
	others := len(m.view[q.tok])
	if m.view[q.tok][m.member] != nil {
		others--
	}
	c := q.limit(m.cfg.Margin) / float64(others+2)
	if q.share > 0 {
		c = min(c, q.share)
	}
	q.stale, q.staleCap = true, c
	m.refresh(q, now)
}

// allocFor returns this member's allocation in the current view (0 when
// its own record is not in it) and the other members of that view.
func (m *Manager) allocFor(q *quota) (float64, []string) {
	peers := m.view[q.tok]
	toks := make([]string, 0, len(peers))
	for t := range peers {
		toks = append(toks, t)
	}
	sort.Strings(toks)
	others := slices.DeleteFunc(slices.Clone(toks), func(t string) bool { return t == m.member })
	mine := slices.Index(toks, m.member)
	if mine < 0 {
		return 0, others
	}
	limit := math.Inf(1)
	demand := make([]float64, len(toks))
	bulk := make([]float64, len(toks))
	for i, t := range toks {
		r := peers[t].rec
		if r.Limit > 0 && r.Limit < limit {
			limit = r.Limit
		}
		demand[i], bulk[i] = r.Demand, r.Bulk
	}
	return allocateTiered(limit, demand, bulk)[mine], others
}

// viewChanged records this member's allocation after the view changed at
// seq, checks which steps the others have acknowledged, and resets the
// share.
func (m *Manager) viewChanged(q *quota, seq uint64, now time.Time) {
	alloc, others := m.allocFor(q)
	if alloc != q.steps[len(q.steps)-1].alloc {
		q.steps = append(q.steps, step{seq: seq, alloc: alloc, others: others})
	}
	m.grant(q, now)
	m.refresh(q, now)
}

// grant marks the steps every other member of their view has
// acknowledged (a member no longer in the view counts as having done so:
// it left, or the server dropped it after TTL).
func (m *Manager) grant(q *quota, now time.Time) {
	peers := m.view[q.tok]
	for i := range q.steps {
		s := &q.steps[i]
		if !s.granted.IsZero() {
			continue
		}
		ok := true
		for _, o := range s.others {
			if p := peers[o]; p != nil && p.rec.Seen < s.seq {
				ok = false
				break
			}
		}
		if ok {
			s.granted = now
		}
	}
}

// refresh sets the limiter to the share in effect at now and schedules the
// next settling step.
func (m *Manager) refresh(q *quota, now time.Time) {
	if m.closed {
		return
	}
	var share float64
	if q.stale {
		share = q.staleCap
	} else {
		share = q.fromSteps(now, m.cfg.Horizon)
	}
	share = min(share, q.limit(m.cfg.Margin))
	if share != q.share {
		q.share = share
		q.lim.set(now, share, burstFor(share))
		q.notify()
		if m.onShare != nil {
			m.onShare(q.name, share, now)
		}
	}
	if q.settle != nil {
		q.settle.Stop()
		q.settle = nil
	}
	if at, ok := q.nextSettle(m.cfg.Horizon); ok && !q.stale {
		q.settle = time.AfterFunc(max(0, at.Sub(now))+time.Millisecond, func() {
			m.mu.Lock()
			defer m.mu.Unlock()
			if m.quotas[q.name] == q {
				m.refresh(q, time.Now())
			}
		})
	}
}

// watchLoop keeps a watcher on the whole bucket, creating a new one
// whenever the current one stops (connection closed, restarted by beat).
func (m *Manager) watchLoop(ctx context.Context) {
	defer m.loops.Done()
	for ctx.Err() == nil {
		// The watcher lives as long as wctx (its subscription ends with
		// it); its creation may take at most StaleAfter.
		wctx, cancel := context.WithCancel(ctx)
		timeout := time.AfterFunc(m.cfg.StaleAfter, cancel)
		w, err := m.kv.WatchAll(wctx)
		timeout.Stop()
		if err != nil {
			cancel()
			m.log.Debug("quota: watch bucket", zap.String("bucket", m.cfg.Bucket), zap.Error(err))
			select {
			case <-ctx.Done():
				return
			case <-time.After(m.cfg.Heartbeat):
			}
			continue
		}
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			cancel()
			return
		}
		m.watcher = w
		m.started = time.Now()
		m.next, m.nextSeq = map[string]map[string]*peer{}, 0
		m.mu.Unlock()
		for e := range w.Updates() {
			m.apply(e, time.Now())
		}
		cancel()
		m.mu.Lock()
		if m.watcher == w {
			m.watcher = nil
		}
		if m.watchUp {
			m.watchUp = false
			m.downSince = time.Now()
		}
		m.next = nil
		m.mu.Unlock()
	}
}

// apply takes one watched entry (nil: the initial values are all in).
func (m *Manager) apply(e jetstream.KeyValueEntry, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e == nil {
		m.synced1(now)
		return
	}
	del := e.Operation() != jetstream.KeyValuePut
	m.applyEntry(e.Key(), del, e.Value(), e.Revision(), now)
}

// synced1 swaps in the rebuilt view once a new watcher's initial values
// are in. The views between the former one and this one were never
// applied, so every share is held where it is (or lowered) until the
// others acknowledge the new view.
func (m *Manager) synced1(now time.Time) {
	if m.next == nil {
		return
	}
	m.view, m.applied = m.next, m.nextSeq
	m.next = nil
	m.watchUp = true
	select {
	case <-m.synced:
	default:
		close(m.synced)
	}
	for _, q := range m.quotas {
		alloc, others := m.allocFor(q)
		cap := q.share
		if q.stale {
			cap = q.staleCap
		}
		q.rebase(cap, m.applied, alloc, others, now)
		m.grant(q, now)
		m.refresh(q, now)
	}
	m.confirmPuts(now)
	m.kickSoon()
}

// applyEntry applies one record write or removal at bucket sequence rev.
func (m *Manager) applyEntry(key string, del bool, val []byte, rev uint64, now time.Time) {
	qtok, mtok, ok := splitKey(key)
	building := m.next != nil
	view := m.view
	if building {
		view = m.next
		m.nextSeq = max(m.nextSeq, rev)
	} else {
		m.applied = max(m.applied, rev)
	}
	if !ok {
		return
	}
	peers := view[qtok]
	old := peers[mtok]
	relevant := false
	if del {
		if old != nil {
			delete(peers, mtok)
			if len(peers) == 0 {
				delete(view, qtok)
			}
			relevant = true
		}
	} else {
		var r record
		if err := json.Unmarshal(val, &r); err != nil {
			return
		}
		if peers == nil {
			peers = map[string]*peer{}
			view[qtok] = peers
		}
		relevant = old == nil || old.rec.Demand != r.Demand || old.rec.Bulk != r.Bulk || old.rec.Limit != r.Limit
		peers[mtok] = &peer{rec: r, rev: rev}
	}
	if building {
		return
	}
	m.confirmPuts(now)
	if q := m.byTok[qtok]; q != nil {
		m.viewChanged(q, rev, now)
		// Another member joined, left or changed its demand: it (or the
		// others) may wait on this member's acknowledgement. This member's
		// own record removed: write it again.
		if relevant && (mtok != m.member || del) {
			m.kickSoon()
		}
	}
}
