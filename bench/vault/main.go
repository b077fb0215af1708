// Command vault benchmarks keyrelay's writes into HashiCorp Vault: events/s
// through the whole pipeline (publish → worker → Vault KV v2 provider →
// ledger → confirmation) against direct vault/api KV v2 writes (one PUT of
// <mount>/data/<path> per write) at the same concurrency, in the same run,
// against the same Vault dev server. It prints both rates and their ratio,
// and per write the CPU time spent by Vault, nats-server and this process
// (all on the same CPUs, so the ratio follows it). -isolate-vault gives
// Vault the first CPU to itself and the rest to nats-server and this
// process, both sides alike: the shape of a deployment, where Vault runs
// on its own machines, so the ratio then follows Vault's work per event.
// -count-requests sends keyrelay's requests through a counting proxy and
// prints how many Vault requests an event costs.
//
// It starts a nats-server (bin/nats-server) and a Vault dev server
// (bin/vault, `make bin/vault`) on free loopback ports.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyrelay/keyrelay/bench/benchkit"

	"github.com/hashicorp/vault/api"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/vault"
	"github.com/keyrelay/keyrelay/settings"
	"github.com/keyrelay/keyrelay/worker"
)

func main() {
	n := flag.Int("events", 5000, "events (and direct writes) per run")
	keys := flag.Int("keys", 500, "distinct keys (secrets)")
	conc := flag.Int("concurrency", 32, "writes in flight (keyrelay worker handlers and direct writers alike)")
	runs := flag.Int("runs", 3, "runs of each kind (the median is reported)")
	warmup := flag.Int("warmup", 1, "uncounted runs of each kind before the counted ones (the first direct run against a fresh Vault is the slowest)")
	natsBin := flag.String("nats-server", "bin/nats-server", "nats-server binary")
	flag.StringVar(&ownershipMode, "ownership", worker.OwnershipClaims, "the worker's ownership mode: claims or exclusive (the writer lease, an intent per write instead of a claim)")
	flag.IntVar(&clusterNodes, "cluster", 0, "run keyrelay on a cluster of this many nats-server processes on loopback, every stream and bucket replicated to each (0: one server)")
	vaultBin := flag.String("vault", "bin/vault", "vault binary (make bin/vault)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of this process during the keyrelay runs to this file")
	countRequests := flag.Bool("count-requests", false, "send keyrelay's Vault requests through a counting proxy and print them per event (its throughput is then not comparable)")
	isolate := flag.Bool("isolate-vault", false, "give Vault a CPU of its own, as a deployment gives it its own machine: Vault on the first CPU, nats-server and this process on the others (both sides alike)")
	flag.Parse()
	app.TuneRuntime()
	var iso benchkit.Isolation
	if *isolate {
		var err error
		if iso, err = benchkit.IsolateFirstCPU(); errors.Is(err, benchkit.ErrTooFewCPUs) {
			fmt.Println("keyrelay Vault benchmark with -isolate-vault: skipped:", err)
			return
		} else if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
	if err := run(*n, *keys, *conc, *warmup, *runs, *natsBin, *vaultBin, *cpuprofile, *countRequests, iso); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// clusterNodes is the -cluster flag; replicas the replica count of
// keyrelay's streams and buckets.
var clusterNodes, replicas = 0, 1

// ownershipMode is the worker's ownership mode (-ownership).
var ownershipMode string

func run(n, keys, conc, warmup, runs int, natsBin, vaultBin, cpuprofile string, countRequests bool, iso benchkit.Isolation) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "keyrelay-bench-vault")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	vaultAddr, stopVault, err := benchkit.StartVault(vaultBin, dir, iso)
	if err != nil {
		return err
	}
	defer stopVault()
	srv, err := benchkit.StartServers(natsBin, dir, clusterNodes)
	if err != nil {
		return err
	}
	defer srv.Stop()
	js := srv.JS
	replicas = srv.Replicas

	direct, err := newDirect(vaultAddr, conc)
	if err != nil {
		return err
	}
	version := "?"
	if h, err := direct.client.Sys().HealthWithContext(ctx); err == nil {
		version = h.Version
	}
	fmt.Printf("keyrelay Vault benchmark: Vault %s dev server (in-memory storage, separate process), nats-server %s on %s, "+
		"%d writes over %d keys per run, concurrency %d, %d CPUs (%s)\n",
		version, js.Conn().ConnectedServerVersion(), srv.Shape, n, keys, conc, runtime.NumCPU(), strings.ReplaceAll(iso.String(), "the backend", "Vault"))
	fmt.Printf("worker ownership: %s\n", ownershipMode)

	kr, _ := events.NewKeyring("bench", map[string][]byte{"bench": make([]byte, 32)})
	pipeAddr := vaultAddr
	var counter *requestCounter
	if countRequests {
		if counter, err = startRequestCounter(vaultAddr); err != nil {
			return err
		}
		defer counter.close()
		pipeAddr = counter.addr
	}
	pipe, err := newPipeline(ctx, js, kr, conc, pipeAddr)
	if err != nil {
		return err
	}
	defer pipe.stop()

	var base, prov, full, ratios []float64
	// Runs below 0 warm both sides up and are printed, not counted.
	for r := -warmup; r < runs; r++ {
		label, i := fmt.Sprintf("run %d", r+1), r+warmup
		if r < 0 {
			label = "warm-up"
		}
		c0 := benchkit.ReadCPU()
		b, err := direct.throughput(ctx, n, keys, i)
		if err != nil {
			return err
		}
		c1 := benchkit.ReadCPU()
		pp, err := providerOnly(ctx, pipe.provider, n, keys, conc, i)
		if err != nil {
			return err
		}
		c1p := benchkit.ReadCPU()
		w0, h0 := pipe.writes.Load(), pipe.hinted.Load()
		stopProfile := func() {}
		if r == 0 {
			stopProfile = benchkit.StartCPUProfile(cpuprofile)
		}
		if counter != nil {
			counter.take(1) // the warm-up and the provider's own run
		}
		c2 := benchkit.ReadCPU()
		f, err := pipe.throughput(ctx, n, keys, i)
		stopProfile()
		if err != nil {
			return err
		}
		c3 := benchkit.ReadCPU()
		fmt.Printf("  %s: direct vault/api KV v2 puts %6.0f writes/s   provider Put alone %6.0f writes/s   keyrelay %6.0f events/s (%d versions for %d events, %d Puts with the ledger's version)   ratio %.2f\n",
			label, b, pp, f, pipe.writes.Load()-w0, n, pipe.hinted.Load()-h0, f/b)
		// Where the time goes: both sides share the machine's CPUs with
		// Vault (and keyrelay with nats-server too).
		fmt.Printf("         ms CPU per write: direct %s;  provider alone %s;  keyrelay %s\n", cpuPer(c0, c1, n), cpuPer(c1, c1p, n), cpuPer(c2, c3, n))
		if counter != nil {
			fmt.Printf("         keyrelay's Vault requests: %s\n", counter.take(n))
		}
		if r >= 0 {
			base, prov, full, ratios = append(base, b), append(prov, pp), append(full, f), append(ratios, f/b)
		}
	}
	if in, msgs := pipe.w.IntentStats(); msgs > 0 {
		fmt.Printf("intents: %d in %d stored messages (%.1f per message)\n", in, msgs, float64(in)/float64(msgs))
	}
	st := pipe.provider.AuthStats()
	fmt.Printf("throughput (median of %d runs): direct vault/api %.0f writes/s, keyrelay pipeline %.0f events/s, median ratio %.2f\n",
		runs, benchkit.Median(base), benchkit.Median(full), benchkit.Median(ratios))
	fmt.Printf("  for reference: the vault provider's Put alone (no NATS, passing the version it last wrote as the worker does) %.0f writes/s; "+
		"per event keyrelay makes 1 Vault request for a rotation (check-and-set write at the ledger's version, event id in the data), "+
		"2 for a create (first version with cas 0, owner's metadata); token logins %d, renewals %d\n",
		benchkit.Median(prov), st.Logins, st.Renewals)
	return nil
}

// providerOnly measures the provider's Put without the pipeline: n writes
// over keys secrets, conc at a time, each with its own idempotency key and,
// as the worker passes its ledger's, the version it last wrote as
// ExpectedVersion.
func providerOnly(ctx context.Context, p *vault.Provider, n, keys, conc, run int) (float64, error) {
	var done atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	gens := (n + keys - 1) / keys
	// Writer w owns the keys k ≡ w (mod conc), so writes to one secret
	// never race (as the worker's claims guarantee), and writes each of its
	// keys gens times.
	start := time.Now()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			last := map[int]string{} // key -> version written
			for g := 0; g < gens; g++ {
				for k := w; k < keys; k += conc {
					name := fmt.Sprintf("bench-provider-%d/key-%d", run, k)
					res, err := p.Put(ctx, providers.PutRequest{Name: name, Value: []byte(fmt.Sprintf("sk-bench-value-0123456789abcdef-%d-%d", k, g)),
						IdempotencyKey: fmt.Sprintf("ev-%d-%d-%d", run, k, g), Owner: providers.Owner{TeamID: "bench", KeyID: strconv.Itoa(k)},
						ExpectedVersion: last[k]})
					if err != nil {
						once.Do(func() { firstErr = err })
						return
					}
					last[k] = res.Version
					done.Add(1)
				}
			}
		}(w)
	}
	wg.Wait()
	if firstErr != nil {
		return 0, fmt.Errorf("provider Put: %w", firstErr)
	}
	return float64(done.Load()) / time.Since(start).Seconds(), nil
}

// direct writes straight to KV v2 with vault/api: what a client that does
// no checks, no ownership and no idempotency would do.
type direct struct {
	client *api.Client
	conc   int
}

func newDirect(addr string, conc int) (*direct, error) {
	tr := &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second}
	c, err := api.NewClient(&api.Config{Address: addr, HttpClient: &http.Client{Transport: tr}, MaxRetries: 0, Timeout: 30 * time.Second})
	if err != nil {
		return nil, err
	}
	c.ClearNamespace()
	c.SetToken("root")
	return &direct{client: c, conc: conc}, nil
}

func (d *direct) throughput(ctx context.Context, n, keys, run int) (float64, error) {
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < d.conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				path := fmt.Sprintf("secret/data/bench-direct-%d/key-%d", run, i%keys)
				_, err := d.client.Logical().WriteWithContext(ctx, path, map[string]any{"data": map[string]any{"key": "sk-bench-value-0123456789abcdef-" + strconv.Itoa(i)}})
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return 0, fmt.Errorf("direct write: %w", firstErr)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// pipeline is a keyrelay worker in this process writing to Vault.
type pipeline struct {
	w        *worker.Worker
	js       jetstream.JetStream
	kr       *events.Keyring
	provider *vault.Provider
	writes   atomic.Int64
	hinted   atomic.Int64
	cancel   context.CancelFunc
	done     chan error
}

func newPipeline(ctx context.Context, js jetstream.JetStream, kr *events.Keyring, conc int, vaultAddr string) (*pipeline, error) {
	topo := worker.TopologyConfig{Replicas: replicas, DuplicateWindow: 2 * time.Minute, AckWait: 30 * time.Second, MaxDeliver: 5, MaxAckPending: 4 * conc}
	if err := worker.EnsureTopology(ctx, js, topo); err != nil {
		return nil, err
	}
	opts := map[string]string{vault.OptionAddr: vaultAddr, vault.OptionToken: "root"}
	p := &pipeline{js: js, kr: kr, done: make(chan error, 1)}
	reg := providers.NewRegistry()
	reg.Register(vault.Name, func(ctx context.Context, cfg providers.Config) (providers.Provider, error) {
		prov, err := vault.Factory(ctx, cfg)
		if err == nil {
			p.provider = prov.(*vault.Provider)
		}
		return prov, err
	})
	reg.Wrap(func(_ string, prov providers.Provider) providers.Provider {
		return counting{prov, &p.writes, &p.hinted}
	})
	cfg := settings.Default()
	cfg.KeyManagementSystem = vault.Name
	cfg.Keyrelay.Providers = map[string]map[string]string{vault.Name: opts}
	w, err := worker.New(ctx, worker.Config{Concurrency: conc, AckWait: topo.AckWait, ClaimLease: 20 * time.Second, CallTimeout: 10 * time.Second,
		Ownership: ownershipMode},
		worker.Deps{JS: js, Settings: cfg, Registry: reg, Opener: kr, Getenv: func(string) string { return "" },
			TracerProvider: benchkit.TracerProvider()})
	if err != nil {
		return nil, err
	}
	p.w = w
	rctx, cancel := context.WithCancel(ctx)
	p.cancel = cancel
	go func() { p.done <- w.Run(rctx) }()
	for !w.Ready() || (ownershipMode == worker.OwnershipExclusive && !w.HoldsLease()) {
		time.Sleep(5 * time.Millisecond)
	}
	// Open the provider once (and log in) before timing.
	prov, err := reg.Open(ctx, vault.Name, providers.Config{Options: opts, Getenv: func(string) string { return "" }})
	if err != nil {
		return nil, err
	}
	if _, err := prov.Get(ctx, "bench-warmup", ""); err != nil && !isNotFound(err) {
		return nil, err
	}
	return p, nil
}

func isNotFound(err error) bool { return errors.Is(err, providers.ErrNotFound) }

// counting counts the Puts that wrote a version, and those the worker
// gave its ledger's version (ExpectedVersion: the one-request path).
type counting struct {
	providers.Provider
	writes, hinted *atomic.Int64
}

func (c counting) Put(ctx context.Context, req providers.PutRequest) (providers.PutResult, error) {
	if req.ExpectedVersion != "" {
		c.hinted.Add(1)
	}
	res, err := c.Provider.Put(ctx, req)
	if err == nil && !res.Duplicate {
		c.writes.Add(1)
	}
	return res, err
}

func (p *pipeline) stop() { p.cancel(); <-p.done }

// throughput publishes n events (n/keys generations of each key, sealed
// before timing starts) and waits for n confirmations.
func (p *pipeline) throughput(ctx context.Context, n, keys, run int) (float64, error) {
	msgs, _, err := benchkit.SealedEvents(ctx, p.kr, n, keys, "bench-"+strconv.Itoa(run),
		func(i int) string { return "sk-bench-value-0123456789abcdef-" + strconv.Itoa(i) })
	if err != nil {
		return 0, err
	}
	return benchkit.Throughput(ctx, p.js, msgs)
}

// cpuPer is the CPU per write of Vault, nats-server and this process.
func cpuPer(a, b benchkit.CPUUse, n int) string {
	return benchkit.PerOp(a, b, n, "vault", "nats-server", "bench")
}
