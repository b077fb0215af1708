// Command lookup benchmarks the lookup API's cache hits against bare
// servers doing the least a server can do, in the same run on the same
// machine:
//
//   - HTTP: keyrelay's handler (bearer token check, name validation, cache
//     hit, JSON answer) against a bare net/http handler returning a
//     constant body of the same size;
//   - NATS: keyrelay's micro service (bearer token check in the request's
//     header, as by default) against a bare NATS responder returning the
//     same constant, on the same nats-server.
//
// For each it prints requests/s at a given concurrency (median of runs),
// the ratio keyrelay/bare, and p50/p99 latency of a single client's
// back-to-back hits (the unloaded latency of one hit).
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/bench/benchkit"
	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/lookup"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/local"
	"github.com/keyrelay/keyrelay/settings"
	"github.com/keyrelay/keyrelay/worker"
)

const (
	token      = "bench-lookup-token-0123456789"
	secretName = "OPENAI_API_KEY"
)

func main() {
	conc := flag.Int("concurrency", 16, "concurrent clients in the throughput runs")
	dur := flag.Duration("duration", 3*time.Second, "length of each throughput run")
	latN := flag.Int("latency-requests", 20000, "back-to-back requests of the single-client latency run")
	runs := flag.Int("runs", 3, "throughput runs of each kind (the median is reported)")
	serverBin := flag.String("nats-server", "bin/nats-server", "nats-server binary")
	flag.Parse()
	app.TuneRuntime()
	if err := run(*conc, *dur, *latN, *runs, *serverBin); err != nil {
		fmt.Fprintln(os.Stderr, "bench/lookup:", err)
		os.Exit(1)
	}
}

func run(conc int, dur time.Duration, latN, runs int, serverBin string) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "keyrelay-bench-lookup")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	js, stop, err := benchkit.StartNATS(serverBin, dir)
	if err != nil {
		return err
	}
	defer stop()
	if err := worker.EnsureTopology(ctx, js, worker.TopologyConfig{Replicas: 1, DuplicateWindow: time.Minute,
		AckWait: 30 * time.Second, MaxDeliver: 3, MaxAckPending: 100}); err != nil {
		return err
	}
	svc, srv, err := newLookup(ctx, js)
	if err != nil {
		return err
	}
	defer svc.Close()

	// The answer keyrelay gives, and a constant of the same size for the
	// bare servers.
	answer, lerr := svc.Lookup(ctx, lookup.HTTP, lookup.Scope{Global: true}, secretName, nil)
	if lerr != nil {
		return lerr
	}
	constant := bytes.Repeat([]byte("x"), len(answer))
	fmt.Printf("lookup benchmark: %d-byte answers, concurrency %d, %v per run, %d runs; GOMAXPROCS=%d\n",
		len(answer), conc, dur, runs, runtime.GOMAXPROCS(0))

	// HTTP.
	krAddr, closeKR, err := serve(srv)
	if err != nil {
		return err
	}
	defer closeKR()
	bareAddr, closeBare, err := serve(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", fmt.Sprint(len(constant)))
		_, _ = w.Write(constant)
	}))
	if err != nil {
		return err
	}
	defer closeBare()
	httpReq := func(addr string) func(*http.Client) error {
		url := "http://" + addr + "/v1/secrets/" + secretName
		return func(c *http.Client) error {
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := c.Do(req)
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			return nil
		}
	}
	// target returns one request of a fresh keep-alive client, against the
	// bare handler or keyrelay's, and the client's cleanup.
	target := func(bare bool) (func() error, func()) {
		addr := krAddr
		if bare {
			addr = bareAddr
		}
		c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc * 2, DisableCompression: true}}
		do := httpReq(addr)
		return func() error { return do(c) }, c.CloseIdleConnections
	}
	if err := compare("HTTP", runs, func(bare bool) (float64, error) {
		do, done := target(bare)
		defer done()
		return throughput(conc, dur, do)
	}, func(bare bool) ([]time.Duration, error) {
		do, done := target(bare)
		defer done()
		return latency(latN, do)
	}); err != nil {
		return err
	}

	// NATS: the service and the bare responder on one connection, the
	// clients on another.
	ms, err := srv.ServeNATS(js.Conn(), lookup.NATSOptions{})
	if err != nil {
		return err
	}
	defer ms.Stop() //nolint:errcheck
	bareSub, err := js.Conn().QueueSubscribe("bench.bare.lookup", "q", func(m *nats.Msg) { _ = m.Respond(constant) })
	if err != nil {
		return err
	}
	defer bareSub.Unsubscribe() //nolint:errcheck
	cnc, err := nats.Connect(js.Conn().ConnectedUrl())
	if err != nil {
		return err
	}
	defer cnc.Close()
	payload := []byte(`{"name":"` + secretName + `"}`)
	natsReq := func(subject string) func() error {
		return func() error {
			req := nats.NewMsg(subject)
			req.Data = payload
			req.Header.Set("Authorization", "Bearer "+token)
			m, err := cnc.RequestMsg(req, 5*time.Second)
			if err != nil {
				return err
			}
			if m.Header.Get("Nats-Service-Error-Code") != "" {
				return fmt.Errorf("service error %s", m.Header.Get("Nats-Service-Error"))
			}
			return nil
		}
	}
	subject := func(bare bool) string {
		if bare {
			return "bench.bare.lookup"
		}
		return lookup.GlobalSubject
	}
	return compare("NATS", runs, func(bare bool) (float64, error) {
		return throughput(conc, dur, natsReq(subject(bare)))
	}, func(bare bool) ([]time.Duration, error) {
		return latency(latN, natsReq(subject(bare)))
	})
}

// newLookup builds the lookup service over an in-memory local store
// holding the benchmark's secret, with its cache warm.
func newLookup(ctx context.Context, js jetstream.JetStream) (*lookup.Service, *lookup.Server, error) {
	store, err := local.New(local.Config{})
	if err != nil {
		return nil, nil, err
	}
	if _, err := store.Put(ctx, providers.PutRequest{Name: secretName, Value: []byte("sk-bench-0123456789abcdefghijklmnopqrstuvwxyz012345"), IdempotencyKey: "bench"}); err != nil {
		return nil, nil, err
	}
	reg := providers.NewRegistry()
	reg.Register("local", func(context.Context, providers.Config) (providers.Provider, error) { return store, nil })
	kv, err := js.KeyValue(ctx, worker.LedgerBucket)
	if err != nil {
		return nil, nil, err
	}
	cfg := settings.Default()
	backend := &lookup.Backend{Config: cfg, Registry: reg, Ledger: worker.NewLedger(kv)}
	svc, err := lookup.New(lookup.Config{TTL: time.Hour}, backend, lookup.NewMetrics(nil), nil)
	if err != nil {
		return nil, nil, err
	}
	auth, err := lookup.NewAuth(map[string]settings.LookupClient{"bench": {Global: true, Token: token}})
	if err != nil {
		return nil, nil, err
	}
	return svc, lookup.NewServer(svc, auth, nil), nil
}

func serve(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	s := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.Serve(ln) }()
	return ln.Addr().String(), func() { _ = s.Close() }, nil
}

// compare alternates bare and keyrelay throughput runs, then measures the
// single-client latency of each, and prints the figures and the ratio.
func compare(name string, runs int, tput func(bare bool) (float64, error), lat func(bare bool) ([]time.Duration, error)) error {
	var bare, kr []float64
	for range runs {
		for _, b := range []bool{true, false} {
			r, err := tput(b)
			if err != nil {
				return fmt.Errorf("%s throughput: %w", name, err)
			}
			if b {
				bare = append(bare, r)
			} else {
				kr = append(kr, r)
			}
		}
	}
	lb, err := lat(true)
	if err != nil {
		return err
	}
	lk, err := lat(false)
	if err != nil {
		return err
	}
	mb, mk := benchkit.Median(bare), benchkit.Median(kr)
	fmt.Printf("%-4s bare      %8.0f req/s (runs %s)   single client p50 %6.1fµs p99 %6.1fµs\n", name, mb, fmtRuns(bare), us(pct(lb, 0.5)), us(pct(lb, 0.99)))
	fmt.Printf("%-4s keyrelay  %8.0f req/s (runs %s)   single client p50 %6.1fµs p99 %6.1fµs\n", name, mk, fmtRuns(kr), us(pct(lk, 0.5)), us(pct(lk, 0.99)))
	fmt.Printf("%-4s ratio keyrelay/bare = %.2f (target >= 0.7); keyrelay hit p99 %s 1ms\n", name, mk/mb, map[bool]string{true: "<", false: ">="}[pct(lk, 0.99) < time.Millisecond])
	return nil
}

func throughput(conc int, dur time.Duration, do func() error) (float64, error) {
	var n atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if err := do(); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return 0, err
	}
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}

func latency(n int, do func() error) ([]time.Duration, error) {
	for range n / 10 { // warm-up
		if err := do(); err != nil {
			return nil, err
		}
	}
	out := make([]time.Duration, n)
	for i := range out {
		t0 := time.Now()
		if err := do(); err != nil {
			return nil, err
		}
		out[i] = time.Since(t0)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

func pct(s []time.Duration, p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func fmtRuns(v []float64) string {
	s := ""
	for i, x := range v {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%.0f", x)
	}
	return s
}
