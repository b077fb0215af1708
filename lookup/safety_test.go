package lookup_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/lookup"
	"github.com/keyrelay/keyrelay/lookup/lookupclient"
)

// TestSentinelNeverLeaks plants a value and drives every path a value
// could escape through (hits, misses, stale answers, failures, rotations,
// refusals, NATS errors), then searches logs, metrics and every non-200
// body for it.
func TestSentinelNeverLeaks(t *testing.T) {
	const sentinel = "SENTINEL-d41d8cd98f00b204"
	f := newFixture(t, fixtureOptions{cache: lookup.Config{TTL: 100 * time.Millisecond, TTLJitter: 0.01, StaleIfError: time.Hour}})
	f.write(events.KeyCreated, "team-a", "k", sentinel+"-1")
	var refusals strings.Builder
	record := func(code int, body map[string]any) {
		if code != 200 {
			refusals.WriteString(strings.TrimSpace(toJSON(body)))
		}
	}
	record(f.get(tokenA, "/v1/secrets/k"))
	record(f.get(tokenA, "/v1/secrets/k"))
	record(f.get(tokenB, "/v1/secrets/k"))
	record(f.get(tokenA, "/v1/secrets/k?team=team-b"))
	record(f.get("", "/v1/secrets/k"))
	record(f.get(sentinel, "/v1/secrets/k")) // a token that is the value
	f.gate.fail.Store(true)
	time.Sleep(150 * time.Millisecond)
	record(f.get(tokenA, "/v1/secrets/k"))
	f.gate.fail.Store(false)
	f.write(events.KeyRotated, "team-a", "k", sentinel+"-2")
	waitFor(t, 5*time.Second, "rotation", func() bool {
		_, b := f.get(tokenA, "/v1/secrets/k")
		return b["value"] == sentinel+"-2"
	})
	f.write(events.KeyCreated, "team-a", "k2", sentinel+"-3")
	f.gate.fail.Store(true)
	record(f.get(tokenA, "/v1/secrets/k2"))
	f.gate.fail.Store(false)
	nc := &lookupclient.NATS{Conn: f.nc, Team: "team-b", Token: tokenA, Timeout: 2 * time.Second}
	if _, err := nc.Get(context.Background(), "k"); err != nil {
		refusals.WriteString(err.Error())
	}
	f.write(events.KeyDeleted, "team-a", "k", "")

	rec := &respRecorder{h: http.Header{}}
	promhttp.HandlerFor(f.promReg, promhttp.HandlerOpts{}).ServeHTTP(rec, &http.Request{Method: "GET", Header: http.Header{}})
	for what, text := range map[string]string{"logs": f.logs.String(), "metrics": rec.b.String(), "refusals": refusals.String()} {
		if strings.Contains(text, "SENTINEL") {
			t.Fatalf("the value leaked into %s", what)
		}
		if text == "" {
			t.Fatalf("%s are empty: the test checked nothing", what)
		}
	}
	if !strings.Contains(refusals.String(), "unavailable") || !strings.Contains(f.logs.String(), "backend read failed") {
		t.Fatalf("failure paths not exercised: %s", refusals.String())
	}
}

type respRecorder struct {
	h    http.Header
	b    strings.Builder
	code int
}

func (r *respRecorder) Header() http.Header         { return r.h }
func (r *respRecorder) Write(p []byte) (int, error) { return r.b.Write(p) }
func (r *respRecorder) WriteHeader(c int)           { r.code = c }

var _ io.Writer = (*respRecorder)(nil)

// TestStreamLossRevalidates: while the confirmations stream cannot be
// followed (NATS down), a cached value is not trusted: it is revalidated,
// and served marked stale when that fails. When NATS is back the cache
// starts empty, since it may have missed confirmations.
func TestStreamLossRevalidates(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.write(events.KeyCreated, "team-a", "k", "sk-before-outage")
	if code, body := f.get(tokenA, "/v1/secrets/k"); code != 200 || body["stale"] != false {
		t.Fatalf("%d %v", code, body)
	}
	f.nats.Stop()
	waitFor(t, 5*time.Second, "stream down", func() bool { return f.gauge("keyrelay_lookup_invalidation_stream_up") == 0 })
	code, body := f.get(tokenA, "/v1/secrets/k")
	if code != 200 || body["stale"] != true || !strings.Contains(body["stale_reason"].(string), "ledger") {
		t.Fatalf("during the outage: %d %v", code, body)
	}
	f.nats.Restart()
	waitFor(t, 15*time.Second, "stream up", func() bool { return f.gauge("keyrelay_lookup_invalidation_stream_up") == 1 })
	if n := f.svc.Len(); n != 0 {
		t.Fatalf("%d entries survived the outage", n)
	}
	waitFor(t, 10*time.Second, "fresh answer", func() bool {
		code, body := f.get(tokenA, "/v1/secrets/k")
		return code == 200 && body["stale"] == false && body["value"] == "sk-before-outage"
	})
}
