// Command memory measures the resident memory of a `keyrelay serve`
// process on its embedded JetStream server (the `make run` shape): idle
// after start-up, and with the lookup cache holding N entries (100,000 by
// default, the cache's default max_entries).
//
// The process is the real binary (bin/keyrelay, as `make bench` builds
// it) with its own embedded nats-server; RSS is read from
// /proc/<pid>/status (VmRSS, and VmHWM for the peak), so everything the
// process maps counts: the Go heap and its unreturned spans, goroutine
// stacks, the embedded server's buffers and its store's caches.
//
// The entries are put there the way they get there in production: N
// key.created events (sealed values of realistic size) are published to
// the embedded server and confirmed by the worker, then one lookup per key
// through the HTTP lookup API fills the cache. RSS is read after the
// process has settled (the Go runtime returns freed spans to the OS in the
// background), the best of several samples over the settle period, and
// the cache's own gauge says how many entries it held at that moment.
//
// Targets (issue 14): idle ≤ 64 MiB; with 100,000 entries ≤ 256 MiB.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/bench/benchkit"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/lookup/lookupclient"
)

const (
	team  = "team-mem"
	token = "bench-memory-lookup-token-0123456789"
	mib   = 1 << 20
)

func main() {
	bin := flag.String("keyrelay", "bin/keyrelay", "keyrelay binary")
	keys := flag.Int("keys", 100_000, "keys to create and cache")
	settle := flag.Duration("settle", 20*time.Second, "how long to let the process settle before each reading")
	flag.StringVar(&heapDir, "heap-profiles", "", "directory to save a heap profile into at each reading (needs a build serving /debug/pprof/heap on the ops listener)")
	flag.Parse()
	if err := run(*bin, *keys, *settle); err != nil {
		fmt.Fprintln(os.Stderr, "bench/memory:", err)
		os.Exit(1)
	}
}

var heapDir string

// saveHeap saves the process's heap profile as <name>.pb.gz in heapDir.
func saveHeap(opsURL, name string) {
	if heapDir == "" {
		return
	}
	resp, err := http.Get(opsURL + "/debug/pprof/heap")
	if err != nil {
		fmt.Fprintln(os.Stderr, "heap profile:", err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, "heap profile:", resp.Status)
		return
	}
	_ = os.WriteFile(filepath.Join(heapDir, name+".pb.gz"), b, 0o600)
}

func run(bin string, keys int, settle time.Duration) error {
	dir, err := os.MkdirTemp("", "keyrelay-bench-memory-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	krPath := filepath.Join(dir, "keyring.json")
	if err := events.GenerateKeyringFile(krPath, "mem1"); err != nil {
		return err
	}
	kr, err := events.LoadKeyring(krPath)
	if err != nil {
		return err
	}
	natsPort, opsPort, lookupPort := benchkit.FreePort(false), benchkit.FreePort(false), benchkit.FreePort(false)
	// The embedded server requires a token from every client (serve would
	// generate one in its store directory; the bench sets its own).
	natsToken := "bench-nats-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	cfgPath := filepath.Join(dir, "config.yaml")
	cfg := fmt.Sprintf(`
model_list: []
general_settings:
  key_management_system: local
  key_management_settings:
    store_virtual_keys: true
keyrelay:
  nats:
    token: %s
    embedded:
      port: %d
      store_dir: %s
  sealing:
    keyring_file: %s
  log:
    level: warn
  providers:
    local:
      path: %s
      fsync: false
  lookup:
    ttl: 1h
    clients:
      bench: {team: %s, token: %s}
`, natsToken, natsPort, filepath.Join(dir, "nats"), krPath, filepath.Join(dir, "secrets"), team, token)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	logPath := filepath.Join(dir, "serve.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "serve", "--config", cfgPath,
		"--http", "127.0.0.1:"+strconv.Itoa(opsPort), "--lookup-addr", "127.0.0.1:"+strconv.Itoa(lookupPort))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	failed := func(err error) error {
		b, _ := os.ReadFile(logPath)
		return fmt.Errorf("%w\nserve log:\n%s", err, b)
	}
	opsURL := "http://127.0.0.1:" + strconv.Itoa(opsPort)
	if err := waitReady(opsURL, exited, time.Minute); err != nil {
		return failed(err)
	}
	pid := cmd.Process.Pid

	fmt.Printf("keyrelay memory benchmark: `keyrelay serve` on its embedded JetStream server (local provider, file store without fsync), %d keys, RSS from /proc/%s/status after settling %v\n",
		keys, "<pid>", settle)
	idle, err := settledRSS(pid, settle)
	if err != nil {
		return failed(err)
	}
	saveHeap(opsURL, "idle")
	fmt.Printf("  idle:                 RSS %6.1f MiB   (target ≤ 64 MiB; %s; %s)\n", float64(idle)/mib, goMemory(opsURL), rssParts(pid))

	// N keys created through the pipeline.
	nc, err := nats.Connect("nats://127.0.0.1:"+strconv.Itoa(natsPort), nats.Token(natsToken))
	if err != nil {
		return failed(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return failed(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	value := func(i int) string { return fmt.Sprintf("sk-bench-%040d", i) } // a virtual key's size
	msgs, _, err := benchkit.SealedEvents(ctx, kr, keys, keys, team, value)
	if err != nil {
		return failed(err)
	}
	start := time.Now()
	if err := benchkit.PublishAsync(js, msgs); err != nil {
		return failed(err)
	}
	msgs = nil
	for {
		c, err := benchkit.Confirmed(ctx, js)
		if err != nil {
			return failed(err)
		}
		if c >= uint64(keys) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	rate := float64(keys) / time.Since(start).Seconds()
	fmt.Printf("  %d keys created:  %.1fs (%.0f events/s)\n", keys, time.Since(start).Seconds(), rate)
	afterWrites, err := settledRSS(pid, settle)
	if err != nil {
		return failed(err)
	}
	saveHeap(opsURL, "writes")
	fmt.Printf("  after the writes:     RSS %6.1f MiB   (nothing cached yet; %s)\n", float64(afterWrites)/mib, goMemory(opsURL))

	// One lookup per key fills the cache.
	lc := &lookupclient.HTTP{BaseURL: "http://127.0.0.1:" + strconv.Itoa(lookupPort), Token: token,
		Client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
	start = time.Now()
	if err := lookupAll(ctx, lc, keys, value); err != nil {
		return failed(err)
	}
	fmt.Printf("  %d lookups (cache misses): %.1fs\n", keys, time.Since(start).Seconds())
	cached, err := settledRSS(pid, settle)
	if err != nil {
		return failed(err)
	}
	saveHeap(opsURL, "cached")
	entries, err := metric(opsURL, "keyrelay_lookup_cache_entries")
	if err != nil {
		return failed(err)
	}
	hwm, err := procStatus(pid, "VmHWM")
	if err != nil {
		return failed(err)
	}
	fmt.Printf("  %6.0f cache entries: RSS %6.1f MiB   (target ≤ 256 MiB; %s; %s; peak RSS over the whole run %.1f MiB)\n",
		entries, float64(cached)/mib, goMemory(opsURL), rssParts(pid), float64(hwm)/mib)
	if int(entries) < keys {
		return fmt.Errorf("the cache holds %.0f entries, not %d: the measurement is not of a full cache", entries, keys)
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	fmt.Printf("memory: idle %.1f MiB (target 64: %s), %d keys written and cached %.1f MiB (target 256: %s), %.0f bytes per key over idle\n",
		float64(idle)/mib, verdict(idle <= 64*mib), keys, float64(cached)/mib, verdict(cached <= 256*mib),
		(float64(cached)-float64(idle))/float64(keys))
	return nil
}

// lookupAll reads every key once through the lookup API, 16 at a time,
// checking each value.
func lookupAll(ctx context.Context, lc *lookupclient.HTTP, keys int, value func(int) string) error {
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		first error
		once  sync.Once
	)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= keys {
					return
				}
				s, err := lc.Get(ctx, "key-"+strconv.Itoa(i))
				if err == nil && s.Value != value(i) {
					err = fmt.Errorf("key-%d: wrong value", i) // the value itself is not printed
				}
				if err != nil {
					once.Do(func() { first = err })
					next.Store(int64(keys))
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

func waitReady(opsURL string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(opsURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("keyrelay serve exited before it was ready")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("keyrelay serve not ready after %v", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// settledRSS waits d, sampling VmRSS every half second, and returns the
// lowest sample of the last half of the period: the settled footprint,
// without a transient allocation burst that the collector is about to
// return.
func settledRSS(pid int, d time.Duration) (uint64, error) {
	var low uint64
	start := time.Now()
	for time.Since(start) < d {
		time.Sleep(500 * time.Millisecond)
		if time.Since(start) < d/2 {
			continue
		}
		v, err := procStatus(pid, "VmRSS")
		if err != nil {
			return 0, err
		}
		if low == 0 || v < low {
			low = v
		}
	}
	if low == 0 {
		return procStatus(pid, "VmRSS")
	}
	return low, nil
}

// rssParts says what RSS is made of: anonymous memory (the heap, stacks,
// the runtime's) and the pages of the binary mapped from its file. The
// second varies by a few MiB between runs of the same binary, with what
// the page cache holds of it (the kernel maps cached neighbours of a
// faulted page too), so an idle figure that moves with no change to the
// heap is read here.
func rssParts(pid int) string {
	anon, err1 := procStatus(pid, "RssAnon")
	file, err2 := procStatus(pid, "RssFile")
	if err1 != nil || err2 != nil {
		return "RSS parts not readable"
	}
	return fmt.Sprintf("anonymous %.1f MiB, mapped from files %.1f MiB", float64(anon)/mib, float64(file)/mib)
}

// procStatus reads one "<field>: N kB" line of /proc/<pid>/status, in bytes.
func procStatus(pid int, field string) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read process status: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != field {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", field, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// goMemory describes the Go runtime's view of the process's memory, read
// from the ops listener's Go collector: what the heap holds, what it keeps
// mapped without using, and the goroutine stacks.
func goMemory(opsURL string) string {
	vals, err := metrics(opsURL, "go_memstats_heap_inuse_bytes", "go_memstats_heap_idle_bytes", "go_memstats_heap_released_bytes", "go_memstats_stack_inuse_bytes")
	if err != nil {
		return "Go memory: " + err.Error()
	}
	return fmt.Sprintf("Go heap in use %.1f MiB, idle not yet returned %.1f MiB, stacks %.1f MiB", vals[0]/mib, (vals[1]-vals[2])/mib, vals[3]/mib)
}

// metric reads one unlabelled gauge from the ops listener's /metrics.
func metric(opsURL, name string) (float64, error) {
	v, err := metrics(opsURL, name)
	if err != nil {
		return 0, err
	}
	return v[0], nil
}

// metrics reads unlabelled gauges from one scrape of /metrics.
func metrics(opsURL string, names ...string) ([]float64, error) {
	resp, err := http.Get(opsURL + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(names))
	for i, name := range names {
		found := false
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, name+" "); ok {
				if out[i], err = strconv.ParseFloat(strings.TrimSpace(rest), 64); err != nil {
					return nil, fmt.Errorf("%s: %w", name, err)
				}
				found = true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("%s not exported", name)
		}
	}
	return out, nil
}
