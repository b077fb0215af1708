// Command restore benchmarks `keyrelay restore` into HashiCorp Vault: the
// whole restore of keys that the ledger holds and Vault lost (the drift
// scan, which finds them missing from one listing of the team's folder,
// then per key a ledger claim at the revision the scan read, the Vault
// provider's Put and the claim's release, with the resume checkpoint kept
// as the CLI keeps it), against the Vault provider's own Put rate at the
// same concurrency, measured in the same run against the same Vault dev
// server, half before and half after the restore. It prints both rates
// and their ratio.
//
// It starts a nats-server (bin/nats-server) and a Vault dev server
// (bin/vault, `make bin/vault`) on free loopback ports.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/keyrelay/keyrelay/bench/benchkit"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/vault"
	"github.com/keyrelay/keyrelay/recovery"
	"github.com/keyrelay/keyrelay/settings"
	"github.com/keyrelay/keyrelay/worker"
)

func main() {
	keys := flag.Int("keys", 20000, "keys to restore per run (and provider Puts of the baseline)")
	conc := flag.Int("concurrency", 16, "writes in flight (restore and baseline alike)")
	runs := flag.Int("runs", 1, "runs of each kind (the median is reported)")
	natsBin := flag.String("nats-server", "bin/nats-server", "nats-server binary")
	vaultBin := flag.String("vault", "bin/vault", "vault binary (make bin/vault)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the benchmark process here")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	app.TuneRuntime()
	if err := run(*keys, *conc, *runs, *natsBin, *vaultBin); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(keys, conc, runs int, natsBin, vaultBin string) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "keyrelay-bench-restore")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	vaultAddr, stopVault, err := benchkit.StartVault(vaultBin, dir, benchkit.Isolation{})
	if err != nil {
		return err
	}
	defer stopVault()
	js, stopNATS, err := benchkit.StartNATS(natsBin, dir)
	if err != nil {
		return err
	}
	defer stopNATS()
	if err := worker.EnsureTopology(ctx, js, worker.TopologyConfig{DuplicateWindow: time.Minute, AckWait: 30 * time.Second, MaxAckPending: 1024}); err != nil {
		return err
	}
	lkv, err := js.KeyValue(ctx, worker.LedgerBucket)
	if err != nil {
		return err
	}
	ledger := worker.NewLedger(lkv, js.Conn())
	// The resume checkpoint, as `keyrelay restore` keeps it.
	rkv, err := js.KeyValue(ctx, worker.RecoveryBucket)
	if err != nil {
		return err
	}
	ros, err := js.ObjectStore(ctx, worker.RecoveryObjects)
	if err != nil {
		return err
	}
	cps := &recovery.Checkpoints{KV: rkv, OS: ros, JS: js}
	kr, _ := events.NewKeyring("bench", map[string][]byte{"bench": make([]byte, 32)})
	opts := map[string]string{vault.OptionAddr: vaultAddr, vault.OptionToken: "root"}
	prov, err := vault.Factory(ctx, providers.Config{Options: opts, Getenv: func(string) string { return "" }})
	if err != nil {
		return err
	}
	p := prov.(*vault.Provider)
	defer p.Close()
	reg := providers.NewRegistry()
	reg.Register(vault.Name, func(context.Context, providers.Config) (providers.Provider, error) { return p, nil })
	cfg := settings.Default()
	cfg.KeyManagementSystem = vault.Name
	fmt.Printf("keyrelay restore benchmark: Vault dev server (in-memory storage, separate process), nats-server %s (file storage), "+
		"%d keys per run, concurrency %d, %d CPUs\n", js.Conn().ConnectedServerVersion(), keys, conc, runtime.NumCPU())

	var base, rest, ratios []float64
	for r := 0; r < runs; r++ {
		// The baseline brackets the restore, half before and half after
		// it: Vault's write rate falls as it holds more secrets, so a
		// baseline measured only before (or after) the restore would flatter
		// (or handicap) it.
		before, err := providerPuts(ctx, p, keys/2, conc, fmt.Sprintf("%d-before", r))
		if err != nil {
			return err
		}
		// The ledger of a team whose secrets Vault lost: every key missing.
		team := fmt.Sprintf("team-r%d", r)
		if err := fillLedger(ctx, ledger, kr, team, keys, conc); err != nil {
			return err
		}
		deps := recovery.Deps{Ledger: ledger, Settings: cfg, Registry: reg, Opener: kr}
		ds := time.Now()
		if _, err := recovery.Drift(ctx, deps, recovery.Config{Teams: []string{team}, Concurrency: conc}); err != nil {
			return err
		}
		driftTook := time.Since(ds)
		start := time.Now()
		rep, err := recovery.Restore(ctx, recovery.Deps{Ledger: ledger, Settings: cfg, Registry: reg, Opener: kr},
			recovery.RestoreConfig{Config: recovery.Config{Teams: []string{team}, Concurrency: conc}, Lease: 30 * time.Second, Checkpoints: cps})
		if err != nil {
			return err
		}
		el := time.Since(start)
		if rep.Written != keys || rep.Failed != 0 {
			return fmt.Errorf("restore wrote %d of %d keys, %d failed", rep.Written, keys, rep.Failed)
		}
		after, err := providerPuts(ctx, p, keys-keys/2, conc, fmt.Sprintf("%d-after", r))
		if err != nil {
			return err
		}
		b := float64(keys) / (float64(keys/2)/before + float64(keys-keys/2)/after)
		f := float64(rep.Written) / el.Seconds()
		fmt.Printf("  run %d: vault provider Put %6.0f writes/s (%.0f before, %.0f after)   keyrelay restore %6.0f keys/s (%v, its drift scan included; "+
			"a full drift report with the orphan listing %v)   ratio %.2f\n",
			r+1, b, before, after, f, el.Round(10*time.Millisecond), driftTook.Round(10*time.Millisecond), f/b)
		base, rest, ratios = append(base, b), append(rest, f), append(ratios, f/b)
	}
	fmt.Printf("throughput (median of %d runs): vault provider Put %.0f writes/s, keyrelay restore %.0f keys/s, median ratio %.2f\n",
		runs, benchkit.Median(base), benchkit.Median(rest), benchkit.Median(ratios))
	return nil
}

// providerPuts is the baseline: keys first writes (creates) through the
// Vault provider, conc at a time, under bench-base-<run>/.
func providerPuts(ctx context.Context, p *vault.Provider, keys, conc int, run string) (float64, error) {
	var done atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for k := w; k < keys; k += conc {
				_, err := p.Put(ctx, providers.PutRequest{Name: fmt.Sprintf("bench-base-%s/key-%d", run, k),
					Value: []byte(fmt.Sprintf("sk-bench-value-0123456789abcdef-%d", k)), IdempotencyKey: uuid.NewString(),
					Owner: providers.Owner{TeamID: "bench", KeyID: strconv.Itoa(k)}})
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				done.Add(1)
			}
		}(w)
	}
	wg.Wait()
	if firstErr != nil {
		return 0, fmt.Errorf("provider Put: %w", firstErr)
	}
	return float64(done.Load()) / time.Since(start).Seconds(), nil
}

// fillLedger writes ledger entries as workers leave them (value sealed,
// stored in Vault under the default name), without the secrets.
func fillLedger(ctx context.Context, l *worker.Ledger, kr *events.Keyring, team string, keys, conc int) error {
	var wg sync.WaitGroup
	errs := make(chan error, conc)
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for k := w; k < keys; k += conc {
				key := fmt.Sprintf("key-%05d", k)
				sv, err := kr.Seal(ctx, []byte(fmt.Sprintf("sk-bench-value-0123456789abcdef-%d", k)), events.Binding{TeamID: team, KeyID: key, Generation: 1})
				if err != nil {
					errs <- err
					return
				}
				e := &worker.LedgerEntry{Generation: 1, EventID: uuid.NewString(), EventType: events.KeyCreated, Status: events.StatusStored,
					Provider: vault.Name, SecretRef: "litellm/" + team + "/" + key, Sealed: sv, SealedGen: 1, UpdatedAt: time.Now().UTC()}
				if _, err := l.Put(ctx, team, key, e, 0); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	return <-errs
}
