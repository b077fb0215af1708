package lookup

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/keyrelay/keyrelay/providers"
)

// Backend reads are bounded twice: at most Config.MaxLoads in flight in
// all (max_concurrent_loads), and at most Config.MaxLoadsPerBackend of them
// on any one backend (max_loads_per_backend), so one hung backend holds at
// most its share of the pool and every other backend keeps the rest.
//
// A load takes its slots through claim, one backend at a time: the
// backend's share first, then the pool. A load waiting for a busy
// backend's share holds no slot of the pool, and a load that moves on to
// another backend (the ledger, then the team's secret manager; a secret
// manager, then KMS) gives up the slots of the first before it waits for
// the next. Waiting ends at backend_timeout or the load's deadline; the
// load then fails with a 503 naming the bound it waited for.

// errNoSlot marks the errors of a load that gave up waiting for a slot
// (errors.Is): nothing was read from the backend.
var errNoSlot = errors.New("no backend read slot")

// Limits named by refusals (keyrelay_lookup_load_refusals_total).
const (
	limitBackend = "max_loads_per_backend"
	limitGlobal  = "max_concurrent_loads"
)

// backendRef names the backend a read goes to: id is its identity (the
// provider and a digest of its options, as the provider registry keys its
// instances), name what errors say (the provider name). The zero
// backendRef is bound by the pool alone.
type backendRef struct{ id, name string }

// ledgerBackend is the ledger's reads (team scope).
var ledgerBackend = backendRef{id: "ledger", name: "ledger"}

// providerBackend is the identity of provider name opened with opts, as
// the provider registry keys its instances (providers.OptionsDigest: opts
// may hold credentials, only their digest is kept).
func providerBackend(name string, opts map[string]string) backendRef {
	return backendRef{id: "provider:" + name + "#" + providers.OptionsDigest(opts), name: name}
}

// slots are the read slots of one Service.
type slots struct {
	pool       chan struct{}
	perBackend int
	timeout    time.Duration
	m          *Metrics

	mu sync.Mutex
	// backends holds the shares of the backends with a load in flight or
	// waiting, and only those: its size is bounded by the loads.
	backends map[string]*share
}

type share struct {
	ch   chan struct{}
	refs int
}

func newSlots(cfg Config, m *Metrics) *slots {
	return &slots{pool: make(chan struct{}, cfg.MaxLoads), perBackend: cfg.MaxLoadsPerBackend, timeout: cfg.BackendTimeout,
		m: m, backends: map[string]*share{}}
}

// inFlight is the number of pool slots held (keyrelay_lookup_loads_in_flight).
func (s *slots) inFlight() int { return len(s.pool) }

// tracked is how many backends have a share allocated (tests).
func (s *slots) tracked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.backends)
}

func (s *slots) ref(id string) *share {
	s.mu.Lock()
	defer s.mu.Unlock()
	sh := s.backends[id]
	if sh == nil {
		sh = &share{ch: make(chan struct{}, s.perBackend)}
		s.backends[id] = sh
	}
	sh.refs++
	return sh
}

func (s *slots) unref(id string, sh *share) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sh.refs--; sh.refs == 0 {
		delete(s.backends, id)
	}
}

type loadKey struct{}

// loadState is one load's claim: the backend whose slots it holds, if any.
// A load's claims are made by the goroutine running it.
type loadState struct {
	s    *slots
	base context.Context
	// held is set while the load holds a pool slot (and, when cur.id is
	// set, a slot of sh).
	held   bool
	cur    backendRef
	sh     *share
	read   context.Context
	cancel context.CancelFunc
}

// begin starts a load: its context carries the state claim reads.
func (s *slots) begin(ctx context.Context) *loadState {
	ld := &loadState{s: s}
	ld.base = context.WithValue(ctx, loadKey{}, ld)
	return ld
}

// claim takes the slots for reads from b for the load ctx belongs to, and
// returns the context for those reads: the load's, bounded by
// backend_timeout from now. Outside a Service load it returns ctx as is.
func claim(ctx context.Context, b backendRef) (context.Context, error) {
	ld, ok := ctx.Value(loadKey{}).(*loadState)
	if !ok {
		return ctx, nil
	}
	return ld.claim(b)
}

func (ld *loadState) claim(b backendRef) (context.Context, error) {
	if ld.held && ld.cur.id == b.id {
		return ld.read, nil
	}
	ld.release()
	s := ld.s
	wait, cancel := context.WithTimeout(ld.base, s.timeout)
	defer cancel()
	var sh *share
	if b.id != "" {
		sh = s.ref(b.id)
		select {
		case sh.ch <- struct{}{}:
		case <-wait.Done():
			s.unref(b.id, sh)
			s.m.refused(limitBackend)
			return ld.base, unavailable(errors.Join(errNoSlot, wait.Err()),
				"backend %s is busy: %d reads in flight (max_loads_per_backend); gave up waiting", b.name, s.perBackend)
		}
	}
	select {
	case s.pool <- struct{}{}:
	case <-wait.Done():
		if sh != nil {
			<-sh.ch
			s.unref(b.id, sh)
		}
		s.m.refused(limitGlobal)
		return ld.base, unavailable(errors.Join(errNoSlot, wait.Err()),
			"too many backend reads in flight (max_concurrent_loads %d); gave up waiting", cap(s.pool))
	}
	ld.held, ld.cur, ld.sh = true, b, sh
	ld.read, ld.cancel = context.WithTimeout(ld.base, s.timeout)
	return ld.read, nil
}

// release gives back the slots the load holds.
func (ld *loadState) release() {
	if !ld.held {
		return
	}
	ld.cancel()
	<-ld.s.pool
	if ld.sh != nil {
		<-ld.sh.ch
		ld.s.unref(ld.cur.id, ld.sh)
	}
	ld.held, ld.cur, ld.sh, ld.read, ld.cancel = false, backendRef{}, nil, nil, nil
}
