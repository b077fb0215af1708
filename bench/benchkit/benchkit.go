// Package benchkit holds what keyrelay's benchmark commands share: a
// nats-server process, sealed events built before timing starts, and the
// publish-then-await-confirmations measurement.
package benchkit

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/ctxtime"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/local"
	"github.com/keyrelay/keyrelay/settings"
	"github.com/keyrelay/keyrelay/worker"
)

// TracerProvider is the tracer provider `keyrelay serve` runs its worker
// with by default (tracing off: OTEL_TRACES_EXPORTER unset). A worker
// built without one falls back to OpenTelemetry's global provider, whose
// delegating tracer allocates a span per event that the product never
// makes.
func TracerProvider() trace.TracerProvider { return noop.NewTracerProvider() }

// Median of v (v is not modified).
func Median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// FreePort returns a free loopback port; with pair, port+1 is free too
// (Vault's dev cluster listener takes it).
func FreePort(pair bool) int {
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !pair {
			return p
		}
		if l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1)); err == nil {
			l2.Close()
			return p
		}
	}
}

// StartNATS starts a JetStream nats-server process with its store under
// dir, plus extra arguments, and connects to it.
func StartNATS(bin, dir string, extra ...string) (jetstream.JetStream, func(), error) {
	port := FreePort(false)
	args := append([]string{"-js", "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-sd", filepath.Join(dir, "js")}, extra...)
	srv := exec.Command(bin, args...)
	if err := srv.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s (run `make tools`): %w", bin, err)
	}
	var nc *nats.Conn
	var err error
	for i := 0; i < 100; i++ {
		if nc, err = nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", port)); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		_ = srv.Process.Kill()
		return nil, nil, err
	}
	js, _ := jetstream.New(nc)
	return js, func() { nc.Close(); _ = srv.Process.Kill(); _ = srv.Wait() }, nil
}

// SealedEvents builds n key events over keys keys of team (generation
// i/keys+1, so each key is created then rotated), sealed and encoded before
// timing starts: sealing is the gateway's cost, not keyrelay's.
func SealedEvents(ctx context.Context, s events.Sealer, n, keys int, team string, value func(i int) string) ([]*nats.Msg, []*events.Event, error) {
	msgs, evs := make([]*nats.Msg, n), make([]*events.Event, n)
	for i := 0; i < n; i++ {
		gen := uint64(i/keys) + 1
		typ := events.KeyRotated
		if gen == 1 {
			typ = events.KeyCreated
		}
		ev, err := events.NewKeyEvent(ctx, s, typ, team, "key-"+strconv.Itoa(i%keys), gen, []byte(value(i)), events.KeyData{})
		if err != nil {
			return nil, nil, err
		}
		b, err := ev.Encode()
		if err != nil {
			return nil, nil, err
		}
		evs[i] = ev
		msgs[i] = &nats.Msg{Subject: ev.Subject(), Data: b, Header: nats.Header{jetstream.MsgIDHeader: []string{ev.ID}}}
	}
	return msgs, evs, nil
}

// PublishAsync publishes msgs, waiting for PubAcks in batches of 1024.
func PublishAsync(js jetstream.JetStream, msgs []*nats.Msg) error {
	futs := make([]jetstream.PubAckFuture, 0, 1024)
	flush := func() error {
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return err
			}
		}
		futs = futs[:0]
		return nil
	}
	for _, m := range msgs {
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			return err
		}
		if futs = append(futs, f); len(futs) == cap(futs) {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// Confirmed is the number of confirmations stored.
func Confirmed(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	s, err := js.Stream(ctx, worker.ConfirmationsStream)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}

// Throughput publishes msgs and returns events per second from the first
// publish to the last of their confirmations (3 minutes at most).
func Throughput(ctx context.Context, js jetstream.JetStream, msgs []*nats.Msg) (float64, error) {
	before, err := Confirmed(ctx, js)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if err := PublishAsync(js, msgs); err != nil {
		return 0, err
	}
	deadline := start.Add(3 * time.Minute)
	for {
		c, err := Confirmed(ctx, js)
		if err != nil {
			return 0, err
		}
		if c >= before+uint64(len(msgs)) {
			return float64(len(msgs)) / time.Since(start).Seconds(), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("only %d of %d events confirmed after 3 minutes", c-before, len(msgs))
		}
		// Every 10 ms: each poll is a stream-info request the server
		// answers on the cores it shares with the pipeline (every 2 ms was
		// 4% of its CPU); 10 ms is a quarter of a percent of a run.
		time.Sleep(10 * time.Millisecond)
	}
}

// StartCPUProfile writes a CPU profile to path until the returned stop is
// called; with path empty it does nothing. It exits the program when the
// file cannot be created.
func StartCPUProfile(path string) (stop func()) {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	_ = pprof.StartCPUProfile(f)
	return func() { pprof.StopCPUProfile(); _ = f.Close() }
}

// WriteHeapProfile writes the allocation profile (every allocation since
// start: go tool pprof -sample_index=alloc_space) to path; with path empty
// it does nothing.
func WriteHeapProfile(path string) {
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer f.Close()
	_ = pprof.Lookup("allocs").WriteTo(f, 0)
}

// StartVault starts `vault server -dev` (root token "root") with a clean
// environment on a free loopback port, bound to iso's backend CPU when
// iso splits the CPUs.
func StartVault(bin, dir string, iso Isolation) (addr string, stop func(), err error) {
	port := FreePort(true)
	addr = fmt.Sprintf("http://127.0.0.1:%d", port)
	home := filepath.Join(dir, "vault-home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return "", nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "vault.log"))
	if err != nil {
		return "", nil, err
	}
	cmd, err := iso.Command(bin, "server", "-dev", "-dev-root-token-id=root", "-dev-no-store-token",
		fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", port))
	if err != nil {
		return "", nil, err
	}
	cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH"), "TMPDIR=" + dir}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start %s (run `make bin/vault`): %w", bin, err)
	}
	stop = func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait(); logf.Close() }
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12}}}
	for i := 0; i < 300; i++ {
		resp, err := hc.Get(addr + "/v1/sys/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return addr, stop, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	b, _ := os.ReadFile(filepath.Join(dir, "vault.log"))
	return "", nil, fmt.Errorf("vault did not become healthy:\n%s", b)
}

// Slow delays every call that reaches the backend by Latency: a remote
// secret manager's round trip in front of the in-memory store.
type Slow struct {
	providers.Provider
	Latency time.Duration
}

func (s *Slow) wait(ctx context.Context) error {
	return ctxtime.Sleep(ctx, s.Latency)
}

func (s *Slow) Put(ctx context.Context, req providers.PutRequest) (providers.PutResult, error) {
	if err := s.wait(ctx); err != nil {
		return providers.PutResult{}, err
	}
	return s.Provider.Put(ctx, req)
}

func (s *Slow) Get(ctx context.Context, name, version string) (*providers.Secret, error) {
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	return s.Provider.Get(ctx, name, version)
}

func (s *Slow) Delete(ctx context.Context, req providers.DeleteRequest) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	return s.Provider.Delete(ctx, req)
}

func (s *Slow) Unwrap() providers.Provider { return s.Provider }

// SlowWorker creates keyrelay's topology on js and runs one worker at
// concurrency conc (each lane) against the in-memory `local` provider
// behind a latency of lat per call, until stop is called. It returns the
// keyring the worker opens values with.
func SlowWorker(ctx context.Context, js jetstream.JetStream, lat time.Duration, conc int) (kr *events.Keyring, stop func(), err error) {
	topo := worker.TopologyConfig{Replicas: 1, DuplicateWindow: 2 * time.Minute, AckWait: 30 * time.Second, MaxAckPending: 4 * conc}
	if err := worker.EnsureTopology(ctx, js, topo); err != nil {
		return nil, nil, err
	}
	store, err := local.New(local.Config{})
	if err != nil {
		return nil, nil, err
	}
	p := &Slow{Provider: store, Latency: lat}
	reg := providers.NewRegistry()
	reg.Register("local", func(context.Context, providers.Config) (providers.Provider, error) { return p, nil })
	kr, err = events.NewKeyring("bench", map[string][]byte{"bench": make([]byte, 32)})
	if err != nil {
		return nil, nil, err
	}
	w, err := worker.New(ctx, worker.Config{Concurrency: conc, AckWait: topo.AckWait, ClaimLease: 20 * time.Second, CallTimeout: 10 * time.Second},
		worker.Deps{JS: js, Settings: settings.Default(), Registry: reg, Opener: kr, TracerProvider: TracerProvider()})
	if err != nil {
		return nil, nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	for !w.Ready() {
		select {
		case err := <-done:
			cancel()
			return nil, nil, fmt.Errorf("worker stopped: %w", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	return kr, func() { cancel(); <-done }, nil
}
