package lookup_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/lookup"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/worker"
)

// TestGracePeriodEndsByEitherClock: a rotation's grace period ends at the
// Until the worker wrote from its clock, and serving the previous value is
// a security bound: a lookup process serves it only while both its own
// clock and the server's time (the ledger's stored times) are before
// Until. One whose clock is ten minutes behind no longer serves the old
// value after the grace ended by the server's time, and while the grace
// runs it caches the answer no longer than the server's time has left of
// it (RecheckIn); before, it served the old value for ten minutes more.
// One whose clock is ahead stops early, by its skew: only the old value's
// availability suffers.
func TestGracePeriodEndsByEitherClock(t *testing.T) {
	const team, key, ref = "team-a", "g", "litellm/team-a/g"
	f := newFixture(t, fixtureOptions{noWorker: true})
	old, cur := f.rotated(team, key, ref)
	var rev uint64
	for name, tc := range map[string]struct {
		skew, left time.Duration // the lookup's clock; the grace left by the server's time
		served     bool
		recheck    bool // RecheckIn must end the cached answer when the server's grace does
	}{
		"clocks agree":                   {left: time.Minute, served: true},
		"10m behind, grace over by 1m":   {skew: -10 * time.Minute, left: -time.Minute},
		"10m behind, grace runs 1m more": {skew: -10 * time.Minute, left: time.Minute, served: true, recheck: true},
		"10m ahead, grace runs 1m more":  {skew: 10 * time.Minute, left: time.Minute},
		"10m ahead, grace runs 11m more": {skew: 10 * time.Minute, left: 11 * time.Minute, served: true},
		"clocks agree, grace over by 1s": {left: -time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			until := time.Now().Add(tc.left)
			e := &worker.LedgerEntry{Generation: 2, EventID: "ev-2", EventType: events.KeyRotated, Status: events.StatusRotated,
				Provider: "local", SecretRef: ref, ProviderVersion: cur.Version, UpdatedAt: time.Now().UTC(),
				Previous: &worker.PreviousVersion{Version: old.Version, SecretRef: ref, Until: until}}
			var err error
			if rev, err = f.ledger.Put(f.ctx, team, key, e, rev); err != nil {
				t.Fatal(err)
			}
			f.backend.SetClock(func() time.Time { return time.Now().Add(tc.skew) })
			sec, err := f.backend.Load(f.ctx, lookup.Scope{Team: team}, key)
			if err != nil {
				t.Fatal(err)
			}
			if string(sec.Value) != "sk-new" {
				t.Fatalf("current value %q, want the new one", sec.Value)
			}
			if served := sec.Previous != nil; served != tc.served {
				t.Fatalf("previous value served %v, want %v (grace left by the server's time %v, lookup clock off by %v)",
					served, tc.served, tc.left, tc.skew)
			}
			if !tc.served {
				return
			}
			if string(sec.Previous.Value) != "sk-old" || !sec.Previous.Until.Equal(until) {
				t.Fatalf("previous value %q until %v, want the old one until %v", sec.Previous.Value, sec.Previous.Until, until)
			}
			// The server's time known here lags it by how old the entry's
			// stored time was when read (milliseconds): a minute's slack
			// still tells it from this clock's end, ten minutes later.
			switch left := time.Until(until); {
			case tc.recheck && (sec.RecheckIn <= 0 || sec.RecheckIn > left+time.Minute):
				t.Errorf("recheck in %v: the answer may be cached past the grace's end by the server's time, %v from now", sec.RecheckIn, left)
			case !tc.recheck && sec.RecheckIn != 0:
				t.Errorf("recheck in %v, want none: this clock is not behind the server's", sec.RecheckIn)
			}
		})
	}
}

// TestStalePreviousValueEndsByTheServersTime: the lookup process's clock
// runs ten minutes behind the server's, and its backend goes down during a
// rotation's grace period. The cached answer, previous value included, is
// served stale while the backend is down, but no longer than the grace
// period by the server's time: after it, the previous value is not served,
// fresh or stale. (By Until alone, against this clock, it was served ten
// minutes more.)
func TestStalePreviousValueEndsByTheServersTime(t *testing.T) {
	const team, key, ref = "team-a", "g", "litellm/team-a/g"
	f := newFixture(t, fixtureOptions{noWorker: true, cache: lookup.Config{TTL: 100 * time.Millisecond, TTLJitter: 0.01, StaleIfError: time.Hour}})
	behind := func() time.Time { return time.Now().Add(-10 * time.Minute) }
	f.backend.SetClock(behind)
	f.svc.SetClock(behind)
	old, cur := f.rotated(team, key, ref)
	until := time.Now().Add(1500 * time.Millisecond)
	e := &worker.LedgerEntry{Generation: 2, EventID: "ev-2", EventType: events.KeyRotated, Status: events.StatusRotated,
		Provider: "local", SecretRef: ref, ProviderVersion: cur.Version, UpdatedAt: time.Now().UTC(),
		Previous: &worker.PreviousVersion{Version: old.Version, SecretRef: ref, Until: until}}
	if _, err := f.ledger.Put(f.ctx, team, key, e, 0); err != nil {
		t.Fatal(err)
	}
	code, body := f.get(tokenA, "/v1/secrets/"+key)
	if prev, _ := body["previous"].(map[string]any); code != 200 || body["value"] != "sk-new" || prev == nil || prev["value"] != "sk-old" {
		t.Fatalf("during the grace period: %d %v", code, body)
	}
	f.gate.fail.Store(true)
	time.Sleep(200 * time.Millisecond)
	if code, body := f.get(tokenA, "/v1/secrets/"+key); code != 200 || body["stale"] != true || body["previous"] == nil {
		t.Fatalf("stale during the grace period: %d %v", code, body)
	}
	time.Sleep(time.Until(until) + 300*time.Millisecond)
	code, body = f.get(tokenA, "/v1/secrets/"+key)
	if body["previous"] != nil {
		t.Fatalf("after the grace period by the server's time, the previous value is still served: %d %v", code, body)
	}
}

// rotated writes two versions of team's key under ref, "sk-old" (event
// ev-1) then "sk-new" (ev-2), straight to the store, and returns them.
func (f *fixture) rotated(team, key, ref string) (old, cur providers.PutResult) {
	f.t.Helper()
	owner := providers.Owner{TeamID: team, KeyID: key}
	for i, v := range []string{"sk-old", "sk-new"} {
		r, err := f.store.Put(f.ctx, providers.PutRequest{Name: ref, Value: []byte(v), IdempotencyKey: fmt.Sprintf("ev-%d", i+1), Owner: owner})
		if err != nil {
			f.t.Fatal(err)
		}
		old, cur = cur, r
	}
	return old, cur
}
