package lookup_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/lookup"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/worker"
)

// hang is a backend whose reads block until release is closed (or their
// context ends): a secret manager that stopped answering.
type hang struct {
	providers.Provider
	release               chan struct{}
	gets                  atomic.Int64
	inflight, maxInflight atomic.Int64
}

func newHang(p providers.Provider) *hang { return &hang{Provider: p, release: make(chan struct{})} }

func (h *hang) Get(ctx context.Context, name, version string) (*providers.Secret, error) {
	h.gets.Add(1)
	n := h.inflight.Add(1)
	defer h.inflight.Add(-1)
	for m := h.maxInflight.Load(); n > m && !h.maxInflight.CompareAndSwap(m, n); m = h.maxInflight.Load() {
	}
	select {
	case <-h.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return h.Provider.Get(ctx, name, version)
}

func (h *hang) Unwrap() providers.Provider { return h.Provider }

// teamBackends gives teams their own backend (worker.Teams' Cached).
type teamBackends map[string]string

func (t teamBackends) Cached(team string) worker.TeamState {
	if b, ok := t[team]; ok {
		return worker.TeamState{Team: team, Settings: &events.TeamSettings{Backend: b}}
	}
	return worker.TeamState{Team: team}
}

// lookupResult is one lookup's answer: the value, or the error.
type lookupResult struct {
	key, value string
	err        *lookup.Error
}

// TestHungBackendKeepsToItsShare: team A's secret manager hangs while
// more of A's misses arrive than the whole pool of read slots. A holds
// only its share (max_loads_per_backend) and its misses beyond it are
// refused with a 503 naming that bound, without holding a pool slot;
// team B, on a healthy backend, is answered all along. max_concurrent_loads
// still caps every backend together (two hung backends fill the pool).
// When A's backend answers again everything drains.
func TestHungBackendKeepsToItsShare(t *testing.T) {
	const pool, share = 4, 2
	f := newFixture(t, fixtureOptions{noWorker: true,
		cache: lookup.Config{MaxLoads: pool, MaxLoadsPerBackend: share, BackendTimeout: time.Minute}})
	hungA, hungC := newHang(f.store), newHang(f.store)
	var once sync.Once
	releaseAll := func() { once.Do(func() { close(hungA.release); close(hungC.release) }) }
	t.Cleanup(releaseAll)
	f.reg.Register("hang_a", func(context.Context, providers.Config) (providers.Provider, error) { return hungA, nil })
	f.reg.Register("hang_c", func(context.Context, providers.Config) (providers.Provider, error) { return hungC, nil })
	f.backend.Teams = teamBackends{"team-a": "hang_a", "team-c": "hang_c"}
	for _, team := range []string{"team-a", "team-b", "team-c"} {
		r := f.cfg.Resolve(nil)
		for i := range 10 {
			key := fmt.Sprintf("%s%d", team[len(team)-1:], i)
			name, err := r.SecretName(team, key, "")
			if err != nil {
				t.Fatal(err)
			}
			req := putReq(name, "sk-"+team+"-"+key)
			req.Owner = providers.Owner{TeamID: team, KeyID: key}
			if _, err := f.store.Put(f.ctx, req); err != nil {
				t.Fatal(err)
			}
		}
	}
	get := func(ctx context.Context, team, key string, out chan<- lookupResult) {
		body, err := f.svc.Lookup(ctx, lookup.HTTP, lookup.Scope{Team: team}, key, nil)
		res := lookupResult{key: key, err: err}
		if err == nil {
			var m map[string]any
			if jerr := json.Unmarshal(body, &m); jerr != nil {
				t.Error(jerr)
			}
			res.value, _ = m["value"].(string)
		}
		out <- res
	}
	wantValue := func(team string, r lookupResult) {
		t.Helper()
		if r.err != nil || r.value != "sk-"+team+"-"+r.key {
			t.Errorf("%s %s: %q, %v; want its value", team, r.key, r.value, r.err)
		}
	}

	// More of A's misses than the pool, one name twice (they share a load),
	// waiting as long as the test runs.
	hungOut := make(chan lookupResult, 7)
	for _, key := range []string{"a0", "a1", "a2", "a3", "a4", "a5", "a0"} {
		go get(f.ctx, "team-a", key, hungOut)
	}
	waitFor(t, 10*time.Second, "A's reads to hang", func() bool { return hungA.inflight.Load() >= share })
	time.Sleep(100 * time.Millisecond) // room for a read beyond the share to start

	// B's misses, more than the pool, are answered.
	bOut := make(chan lookupResult, 10)
	for i := range 10 {
		ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
		defer cancel()
		go get(ctx, "team-b", fmt.Sprintf("b%d", i), bOut)
	}
	for range 10 {
		wantValue("team-b", <-bOut)
	}
	if t.Failed() {
		t.Fatalf("team B was not answered while team A's backend hangs (A's reads in flight: %d)", hungA.inflight.Load())
	}
	if got := hungA.maxInflight.Load(); got != share {
		t.Fatalf("A's backend had %d reads in flight at most, want its share %d", got, share)
	}
	if got := f.gauge("keyrelay_lookup_loads_in_flight"); got != share {
		t.Fatalf("keyrelay_lookup_loads_in_flight = %v, want %d (A's hung reads)", got, share)
	}

	// A's misses beyond its share give up with a 503 naming the bound.
	refusedOut := make(chan lookupResult, 3)
	for _, key := range []string{"a6", "a7", "a8"} {
		ctx, cancel := context.WithTimeout(f.ctx, 300*time.Millisecond)
		defer cancel()
		go get(ctx, "team-a", key, refusedOut)
	}
	for range 3 {
		r := <-refusedOut
		if r.err == nil || r.err.Status != 503 || r.err.Code != "unavailable" ||
			!strings.Contains(r.err.Reason, "backend hang_a is busy") || !strings.Contains(r.err.Reason, "max_loads_per_backend") {
			t.Fatalf("A's %s beyond its share: %q, %v; want a 503 naming max_loads_per_backend", r.key, r.value, r.err)
		}
	}
	if got := f.counter("keyrelay_lookup_load_refusals_total", map[string]string{"limit": "max_loads_per_backend"}); got < 3 {
		t.Fatalf("refusals counted under max_loads_per_backend: %v, want at least 3", got)
	}

	// A second hung backend takes its share too: the pool is full, and B
	// is refused by max_concurrent_loads, the cap of every backend together.
	cOut := make(chan lookupResult, 3)
	for _, key := range []string{"c0", "c1", "c2"} {
		go get(f.ctx, "team-c", key, cOut)
	}
	waitFor(t, 10*time.Second, "C's reads to hang", func() bool { return hungC.inflight.Load() >= share })
	ctx, cancel := context.WithTimeout(f.ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := f.svc.Lookup(ctx, lookup.HTTP, lookup.Scope{Team: "team-b"}, "b9-new", nil); err == nil || err.Status != 503 ||
		!strings.Contains(err.Reason, "max_concurrent_loads") {
		t.Fatalf("B with the pool full: %v, want a 503 naming max_concurrent_loads", err)
	}
	if got := f.counter("keyrelay_lookup_load_refusals_total", map[string]string{"limit": "max_concurrent_loads"}); got != 1 {
		t.Fatalf("refusals counted under max_concurrent_loads: %v, want 1", got)
	}

	// The backends answer again: every waiting miss is answered.
	releaseAll()
	for range 7 {
		wantValue("team-a", <-hungOut)
	}
	for range 3 {
		wantValue("team-c", <-cOut)
	}
	if got := hungA.gets.Load(); got != 6 {
		t.Fatalf("A's backend read %d times, want 6 (a0's two misses share one load)", got)
	}
	waitFor(t, 5*time.Second, "the slots to drain", func() bool { return f.gauge("keyrelay_lookup_loads_in_flight") == 0 })
	for _, key := range []string{"a9", "b9"} {
		out := make(chan lookupResult, 1)
		team := map[byte]string{'a': "team-a", 'b': "team-b"}[key[0]]
		get(f.ctx, team, key, out)
		wantValue(team, <-out)
	}
	if strings.Contains(f.logs.String(), "sk-team-") {
		t.Fatal("a value reached the log")
	}
}
