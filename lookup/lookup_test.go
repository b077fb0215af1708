package lookup_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/lookup"
	"github.com/keyrelay/keyrelay/providers"
)

func TestHitMissAndAnswer(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	c := f.write(events.KeyCreated, "team-a", "k1", "sk-value-one")
	if c.Status != events.StatusStored {
		t.Fatalf("confirmation %+v", c)
	}
	code, body := f.get(tokenA, "/v1/secrets/k1")
	if code != 200 {
		t.Fatalf("status %d %v", code, body)
	}
	if body["value"] != "sk-value-one" || body["version"] != c.ProviderVersion || body["team_id"] != "team-a" || body["stale"] != false {
		t.Fatalf("body %v (confirmation %+v)", body, c)
	}
	if _, ok := body["age_seconds"].(float64); !ok {
		t.Fatalf("no age_seconds in %v", body)
	}
	for range 5 {
		if code, _ := f.get(tokenA, "/v1/secrets/k1"); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	if got := f.gate.gets.Load(); got != 1 {
		t.Fatalf("backend reads = %d, want 1 (one miss, five hits)", got)
	}
	if hits, misses := f.counter("keyrelay_lookup_requests_total", map[string]string{"outcome": "hit"}),
		f.counter("keyrelay_lookup_requests_total", map[string]string{"outcome": "miss"}); hits != 5 || misses != 1 {
		t.Fatalf("hits %v misses %v", hits, misses)
	}
	if got := f.counter("keyrelay_lookup_backend_loads_total", map[string]string{"result": "ok"}); got != 1 {
		t.Fatalf("backend loads ok = %v", got)
	}
	if fromCache, fromBackend := f.counter("keyrelay_lookup_duration_seconds", map[string]string{"transport": "http", "source": "cache"}),
		f.counter("keyrelay_lookup_duration_seconds", map[string]string{"transport": "http", "source": "backend"}); fromCache != 5 || fromBackend != 1 {
		t.Fatalf("lookup durations observed: %v from the cache, %v from the backend; want 5 and 1", fromCache, fromBackend)
	}
	// HEAD answers like GET without a body; other methods are refused.
	resp, err := http.Post(f.http.URL+"/v1/secrets/k1", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
}

func TestConcurrentMissesShareOneBackendCall(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.write(events.KeyCreated, "team-a", "hot", "sk-hot")
	f.gate.delay.Store(int64(300 * time.Millisecond))
	const n = 1000
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			body, err := f.svc.Lookup(context.Background(), lookup.HTTP, lookup.Scope{Team: "team-a"}, "hot", nil)
			if err != nil {
				errs <- err
				return
			}
			if !strings.Contains(string(body), `"value":"sk-hot"`) {
				errs <- fmt.Errorf("body %q", body)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := f.gate.gets.Load(); got != 1 {
		t.Fatalf("%d concurrent misses made %d backend calls, want 1", n, got)
	}
	t.Logf("%d concurrent misses -> %d backend call", n, f.gate.gets.Load())
}

func TestNegativeEntries(t *testing.T) {
	f := newFixture(t, fixtureOptions{cache: lookup.Config{NegativeTTL: 300 * time.Millisecond}})
	f.write(events.KeyCreated, "team-a", "present", "sk-present")
	ledgerBefore := f.counter("keyrelay_lookup_backend_loads_total", nil)
	for range 3 {
		code, body := f.get(tokenA, "/v1/secrets/absent")
		if code != 404 || body["error"] != "not_found" || body["reason"] == "" {
			t.Fatalf("status %d %v", code, body)
		}
	}
	if got := f.counter("keyrelay_lookup_backend_loads_total", map[string]string{"result": "not_found"}) - 0; got != 1 {
		t.Fatalf("not-found loads = %v after 3 lookups, want 1 (then negative hits)", got)
	}
	if got := f.counter("keyrelay_lookup_requests_total", map[string]string{"outcome": "negative_hit"}); got != 2 {
		t.Fatalf("negative hits = %v", got)
	}
	time.Sleep(400 * time.Millisecond)
	f.get(tokenA, "/v1/secrets/absent")
	if got := f.counter("keyrelay_lookup_backend_loads_total", nil) - ledgerBefore; got != 2 {
		t.Fatalf("loads after the negative TTL = %v, want 2", got)
	}
}

// TestConfirmationDropsNegativeEntry: a key created after a 404 was cached
// is served as soon as its confirmation is applied, long before the
// negative entry would expire.
func TestConfirmationDropsNegativeEntry(t *testing.T) {
	f := newFixture(t, fixtureOptions{cache: lookup.Config{NegativeTTL: time.Hour}})
	if code, _ := f.get(tokenA, "/v1/secrets/later"); code != 404 {
		t.Fatalf("before: %d", code)
	}
	if code, _ := f.get(tokenA, "/v1/secrets/later"); code != 404 {
		t.Fatalf("before, cached: %d", code)
	}
	f.write(events.KeyCreated, "team-a", "later", "sk-later")
	waitFor(t, 5*time.Second, "stored confirmation applied", func() bool {
		code, body := f.get(tokenA, "/v1/secrets/later")
		return code == 200 && body["value"] == "sk-later"
	})
}

func TestStaleIfError(t *testing.T) {
	f := newFixture(t, fixtureOptions{cache: lookup.Config{TTL: 200 * time.Millisecond, TTLJitter: 0.01, StaleIfError: time.Hour}})
	f.write(events.KeyCreated, "team-a", "k", "sk-stale-ok")
	if code, body := f.get(tokenA, "/v1/secrets/k"); code != 200 || body["stale"] != false {
		t.Fatalf("%d %v", code, body)
	}
	f.gate.fail.Store(true)
	time.Sleep(250 * time.Millisecond)
	code, body := f.get(tokenA, "/v1/secrets/k")
	if code != 200 || body["value"] != "sk-stale-ok" || body["stale"] != true || !strings.Contains(body["stale_reason"].(string), "unavailable") {
		t.Fatalf("with the backend down: %d %v", code, body)
	}
	if got := f.counter("keyrelay_lookup_requests_total", map[string]string{"outcome": "stale"}); got != 1 {
		t.Fatalf("stale answers = %v", got)
	}
	// No value to fall back on: 503 with a reason.
	f.gate.fail.Store(false)
	f.write(events.KeyCreated, "team-a", "other", "sk-other")
	f.gate.fail.Store(true)
	code, body = f.get(tokenA, "/v1/secrets/other")
	if code != 503 || body["error"] != "unavailable" || !strings.Contains(body["reason"].(string), "connection refused") {
		t.Fatalf("uncached with the backend down: %d %v", code, body)
	}
	// Backend back: fresh again.
	f.gate.fail.Store(false)
	code, body = f.get(tokenA, "/v1/secrets/k")
	if code != 200 || body["stale"] != false {
		t.Fatalf("after recovery: %d %v", code, body)
	}
}

func TestStaleWindowIsBounded(t *testing.T) {
	f := newFixture(t, fixtureOptions{cache: lookup.Config{TTL: 100 * time.Millisecond, TTLJitter: 0.01, StaleIfError: time.Second}})
	f.write(events.KeyCreated, "team-a", "k", "sk-bounded")
	f.get(tokenA, "/v1/secrets/k")
	f.gate.fail.Store(true)
	time.Sleep(150 * time.Millisecond)
	if code, body := f.get(tokenA, "/v1/secrets/k"); code != 200 || body["stale"] != true {
		t.Fatalf("inside the window: %d %v", code, body)
	}
	time.Sleep(time.Second)
	if code, body := f.get(tokenA, "/v1/secrets/k"); code != 503 {
		t.Fatalf("past the window: %d %v", code, body)
	}
}

func TestConfirmationsReplaceAndDrop(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.write(events.KeyCreated, "team-a", "rot", "sk-gen-1")
	if _, body := f.get(tokenA, "/v1/secrets/rot"); body["value"] != "sk-gen-1" {
		t.Fatalf("%v", body)
	}
	for i := 2; i <= 4; i++ {
		want := fmt.Sprintf("sk-gen-%d", i)
		f.write(events.KeyRotated, "team-a", "rot", want)
		waitFor(t, 5*time.Second, "rotation visible", func() bool {
			_, body := f.get(tokenA, "/v1/secrets/rot")
			return body["value"] == want
		})
	}
	f.write(events.KeyDeleted, "team-a", "rot", "")
	waitFor(t, 5*time.Second, "delete visible", func() bool {
		code, _ := f.get(tokenA, "/v1/secrets/rot")
		return code == 404
	})
	if got := f.counter("keyrelay_lookup_invalidations_total", map[string]string{"status": "rotated"}); got < 3 {
		t.Fatalf("rotated invalidations = %v", got)
	}
}

func TestTeamIsolationHTTP(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.write(events.KeyCreated, "team-b", "b-key", "sk-team-b")
	f.write(events.KeyCreated, "team-a", "a-key", "sk-team-a")
	cases := []struct {
		name, token, path string
		code              int
		errCode           string
	}{
		{"own key", tokenB, "/v1/secrets/b-key", 200, ""},
		{"other team's key id", tokenA, "/v1/secrets/b-key", 404, "not_found"},
		{"other team by parameter", tokenA, "/v1/secrets/b-key?team=team-b", 403, "forbidden"},
		{"own team by parameter", tokenA, "/v1/secrets/a-key?team=team-a", 200, ""},
		{"global token on team", tokenGlobal, "/v1/secrets/b-key?team=team-b", 403, "forbidden"},
		{"global token, team key name", tokenGlobal, "/v1/secrets/b-key", 404, "not_found"},
		{"no token", "", "/v1/secrets/a-key", 401, "unauthorized"},
		{"wrong token", "token-team-a-0123456788", "/v1/secrets/a-key", 401, "unauthorized"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := f.get(tc.token, tc.path)
			if code != tc.code || (tc.errCode != "" && body["error"] != tc.errCode) {
				t.Fatalf("%d %v, want %d %s", code, body, tc.code, tc.errCode)
			}
			if tc.code != 200 && strings.Contains(fmt.Sprint(body), "sk-team") {
				t.Fatalf("refusal carries a value: %v", body)
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	f := newFixture(t, fixtureOptions{noWorker: true})
	long := strings.Repeat("a", 10<<10)
	cases := []struct {
		name, token, path, reason string
	}{
		{"dot-dot team", tokenA, "/v1/secrets/..", `".."`},
		{"dot-dot inside", tokenA, "/v1/secrets/a..b", `".."`},
		{"dot-dot segment", tokenGlobal, "/v1/secrets/litellm/../etc", `".." path segment`},
		{"encoded dot-dot", tokenGlobal, "/v1/secrets/litellm/%2e%2e/x", `".." path segment`},
		{"control character", tokenA, "/v1/secrets/a%01b", "control character"},
		{"NUL", tokenGlobal, "/v1/secrets/a%00b", "control character"},
		{"10 KB name", tokenA, "/v1/secrets/" + long, "longer than 512"},
		{"10 KB global name", tokenGlobal, "/v1/secrets/" + long, "longer than 512"},
		{"slash in a key id", tokenA, "/v1/secrets/a/b", "path separator"},
		{"empty", tokenA, "/v1/secrets/", "empty"},
		{"empty segment", tokenGlobal, "/v1/secrets/a//b", "empty path segment"},
		{"non-ASCII", tokenGlobal, "/v1/secrets/caf%C3%A9", "non-ASCII"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := rawGet(t, f.http.Listener.Addr().String(), tc.path, tc.token)
			if code != 400 || body["error"] != "bad_request" || !strings.Contains(fmt.Sprint(body["reason"]), tc.reason) {
				t.Fatalf("%s: %d %v, want 400 mentioning %s", tc.path[:min(len(tc.path), 60)], code, body, tc.reason)
			}
		})
	}
	// A malformed escape is refused by net/http itself, before keyrelay.
	conn, err := net.Dial("tcp", f.http.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET /v1/secrets/a%%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	conn.Close()
	if err != nil || resp.StatusCode != 400 {
		t.Fatalf("bad escape: %v %v", resp, err)
	}
	if f.gate.gets.Load() != 0 {
		t.Fatal("bad input reached the backend")
	}
}

// rawGet sends a request line exactly as given (no client-side cleaning).
func rawGet(t *testing.T, addr, path, token string) (int, map[string]any) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n", path, token)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := jsonUnmarshal(b, &m); err != nil {
		t.Fatalf("%d %q", resp.StatusCode, b)
	}
	return resp.StatusCode, m
}

func TestCacheBounds(t *testing.T) {
	cases := []struct {
		name                 string
		maxEntries, maxBytes int
		valueSize, names     int
		wantMax              int
	}{
		{"entries bound", 20, 64 << 20, 16, 200, 20},
		{"bytes bound", 10000, 64 << 10, 8 << 10, 50, 8},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, fixtureOptions{noWorker: true, cache: lookup.Config{MaxEntries: tc.maxEntries, MaxBytes: tc.maxBytes}})
			val := strings.Repeat("v", tc.valueSize)
			for i := range tc.names {
				name := fmt.Sprintf("global/n%d", i)
				if _, err := f.store.Put(f.ctx, putReq(name, val)); err != nil {
					t.Fatal(err)
				}
				if _, err := f.svc.Lookup(f.ctx, lookup.HTTP, lookup.Scope{Global: true}, name, nil); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, 5*time.Second, "eviction", func() bool { return f.svc.Len() <= tc.wantMax })
			if w := f.gauge("keyrelay_lookup_cache_weight_bytes"); w > float64(tc.maxBytes) {
				t.Fatalf("weight %v over max_bytes %d", w, tc.maxBytes)
			}
			if ev := f.counter("keyrelay_lookup_cache_evictions_total", map[string]string{"cause": "size"}); ev == 0 {
				t.Fatal("no size evictions counted")
			}
			t.Logf("%d names loaded, %d cached (bound %d)", tc.names, f.svc.Len(), tc.wantMax)
		})
	}
}

// TestLoadsAreBounded: misses of many distinct names never have more than
// max_concurrent_loads backend reads in flight; the others wait their turn.
func TestLoadsAreBounded(t *testing.T) {
	f := newFixture(t, fixtureOptions{noWorker: true, cache: lookup.Config{MaxLoads: 3}})
	const names = 30
	for i := range names {
		if _, err := f.store.Put(f.ctx, putReq(fmt.Sprintf("bounded/n%d", i), "v")); err != nil {
			t.Fatal(err)
		}
	}
	f.gate.delay.Store(int64(20 * time.Millisecond))
	var wg sync.WaitGroup
	for i := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := f.svc.Lookup(f.ctx, lookup.HTTP, lookup.Scope{Global: true}, fmt.Sprintf("bounded/n%d", i), nil); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got, most := f.gate.gets.Load(), f.gate.maxInflight.Load(); got != names || most > 3 || most < 2 {
		t.Fatalf("%d reads, at most %d at once; want %d reads, at most 3 at once", got, most, names)
	}
	// A miss that cannot get a slot before its deadline answers 503.
	f.gate.delay.Store(int64(time.Second))
	for i := range 3 {
		go func() {
			_, _ = f.svc.Lookup(f.ctx, lookup.HTTP, lookup.Scope{Global: true}, fmt.Sprintf("bounded/slow%d", i), nil)
		}()
	}
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(f.ctx, 100*time.Millisecond)
	defer cancel()
	// With one backend its share (max_loads_per_backend, here capped at
	// max_concurrent_loads) is the bound met first.
	if _, err := f.svc.Lookup(ctx, lookup.HTTP, lookup.Scope{Global: true}, "bounded/n0-other", nil); err == nil || err.Status != 503 || !strings.Contains(err.Reason, "max_loads_per_backend") {
		t.Fatalf("no slot: %v", err)
	}
}

// TestDuplicateConfirmationApplies: when a worker dies between the ledger
// commit and the confirmation, the event's only confirmation is the one its
// redelivery publishes, marked duplicate. The cache must act on it: here the
// secret is deleted behind the cache's back and the only word of it is a
// duplicate key.deleted confirmation.
func TestDuplicateConfirmationApplies(t *testing.T) {
	f := newFixture(t, fixtureOptions{cache: lookup.Config{TTL: time.Hour}})
	created := f.write(events.KeyCreated, "team-a", "dup", "sk-dup")
	if code, body := f.get(tokenA, "/v1/secrets/dup"); code != 200 || body["value"] != "sk-dup" {
		t.Fatalf("before: %d %v", code, body)
	}
	if err := f.store.Delete(f.ctx, providers.DeleteRequest{Name: created.SecretRef, Owner: providers.Owner{TeamID: "team-a", KeyID: "dup"}}); err != nil {
		t.Fatal(err)
	}
	if code, _ := f.get(tokenA, "/v1/secrets/dup"); code != 200 {
		t.Fatalf("the cache should still hold the value before any confirmation: %d", code)
	}
	f.svc.Apply(&events.Confirmation{SpecVersion: events.SpecVersion, EventID: "ev-dup-delete", EventType: events.KeyDeleted,
		TeamID: "team-a", KeyID: "dup", Generation: created.Generation + 1, Status: events.StatusDeleted, Duplicate: true,
		Provider: created.Provider, SecretRef: created.SecretRef, Time: time.Now().UTC()})
	if code, body := f.get(tokenA, "/v1/secrets/dup"); code != 404 {
		t.Fatalf("after a duplicate key.deleted confirmation the deleted key is still served: %d %v", code, body)
	}
}

// TestUndecodableConfirmationDropsItsKey: a confirmation the follower
// cannot decode is not skipped as if nothing had changed. The entry of the
// key its subject names is dropped, other teams' and keys' stay cached,
// and its bytes go nowhere near the log.
func TestUndecodableConfirmationDropsItsKey(t *testing.T) {
	f := newFixture(t, fixtureOptions{cache: lookup.Config{TTL: time.Hour}})
	und := f.write(events.KeyCreated, "team-a", "und", "sk-und")
	other := f.write(events.KeyCreated, "team-a", "other", "sk-other")
	for _, k := range []string{"und", "other"} {
		if code, _ := f.get(tokenA, "/v1/secrets/"+k); code != 200 {
			t.Fatalf("%s: %d", k, code)
		}
	}
	// Both gone from the backend behind the cache's back: only what the
	// cache drops is read again.
	for _, c := range []*events.Confirmation{und, other} {
		if err := f.store.Delete(f.ctx, providers.DeleteRequest{Name: c.SecretRef, Owner: providers.Owner{TeamID: "team-a", KeyID: c.KeyID}}); err != nil {
			t.Fatal(err)
		}
	}
	const sentinel = "sk-SENTINEL-undecodable"
	if _, err := f.js.Publish(f.ctx, events.ConfirmationSubject("team-a", "und", "ev-garbage"), []byte(`{"status":"deleted","value":"`+sentinel+`"`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the undecodable confirmation counted", func() bool {
		return f.counter("keyrelay_lookup_invalidations_total", map[string]string{"status": "undecodable"}) == 1
	})
	if code, body := f.get(tokenA, "/v1/secrets/und"); code != 404 {
		t.Fatalf("und after an undecodable confirmation on its subject: %d %v, want 404 (dropped and read again)", code, body)
	}
	if code, _ := f.get(tokenA, "/v1/secrets/other"); code != 200 {
		t.Fatalf("other: %d, want 200 from the cache (its entry concerns another subject)", code)
	}
	if strings.Contains(f.logs.String(), sentinel) {
		t.Fatal("the undecodable confirmation's bytes reached the log")
	}
	if !strings.Contains(f.logs.String(), "could not be decoded") {
		t.Fatal("the undecodable confirmation was not logged")
	}
}
