package app_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/settings"
	"github.com/keyrelay/keyrelay/worker"
)

// clusterConfig is a serve configuration against the cluster's seeds
// with R3 streams, the local provider in memory and the lookup off.
func clusterConfig(t *testing.T, seeds string) *settings.Config {
	t.Helper()
	dir := t.TempDir()
	c := settings.Default()
	c.Keyrelay.NATS.URL = seeds
	c.Keyrelay.Streams.Replicas = 3
	c.Keyrelay.Sealing.KeyringFile = filepath.Join(dir, "keyring.json")
	if err := events.GenerateKeyringFile(c.Keyrelay.Sealing.KeyringFile, "k1"); err != nil {
		t.Fatal(err)
	}
	c.Keyrelay.HTTP.Addr = "127.0.0.1:0"
	c.Keyrelay.Lookup.Addr = settings.LookupOff
	f := false
	c.Keyrelay.Lookup.NATS = &f
	c.Keyrelay.Providers = map[string]map[string]string{"local": {"path": ":memory:"}}
	return c
}

// served is one in-process `keyrelay serve`.
type served struct {
	ops   chan string
	ready chan string
	// done receives Serve's result once; ended is closed when it returned.
	done  chan error
	ended chan struct{}
	stop  context.CancelFunc
}

func serve(t *testing.T, c *settings.Config, log *zap.Logger) *served {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	s := &served{ops: make(chan string, 1), ready: make(chan string, 1), done: make(chan error, 1), ended: make(chan struct{}), stop: stop}
	go func() {
		defer close(s.ended)
		s.done <- app.Serve(ctx, c, log, app.ServeOptions{
			OnListen: func(a string) { s.ops <- a },
			OnReady:  func(a string) { s.ready <- a }})
	}()
	t.Cleanup(func() {
		stop()
		select {
		case <-s.ended:
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop within 30 s")
		}
	})
	return s
}

func readyz(t *testing.T, ops string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + ops + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestServeWaitsForCluster starts serve before any NATS server exists,
// then brings up one node of three (no JetStream quorum), then the
// others: serve keeps running with /readyz 503 and its reason while it
// waits, and becomes ready once the cluster is.
func TestServeWaitsForCluster(t *testing.T) {
	cl := testenv.NewCluster(t, 3, "")
	var logs testenv.SyncBuffer
	s := serve(t, clusterConfig(t, cl.SeedURL()), startLogger(&logs))
	var ops string
	select {
	case ops = <-s.ops:
	case err := <-s.done:
		t.Fatalf("serve ended with no NATS server: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("operations listener not up")
	}
	// Wait (generously) until start-up has failed and retried; serve must
	// still be running, not ready, and say why.
	waitReadyz := func(what string, cond func(code int, body string) bool) (int, string) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			select {
			case err := <-s.done:
				t.Fatalf("serve ended while %s: %v\n%s", what, err, logs.String())
			default:
			}
			code, body := readyz(t, ops)
			if cond(code, body) {
				return code, body
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: /readyz %d %q", what, code, body)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	retried := func(code int, body string) bool {
		return code == http.StatusServiceUnavailable && strings.Contains(body, "attempt 2 failed")
	}
	_, body := waitReadyz("no server is up", retried)
	t.Logf("no server: /readyz 503 %q", strings.SplitN(body, "\n", 2)[0])

	// One node of three: no meta leader, no quorum.
	cl.Start(1)
	start := time.Now()
	_, body = waitReadyz("one node of three is up", func(code int, body string) bool {
		return code == http.StatusServiceUnavailable && time.Since(start) > 5*time.Second && strings.Contains(body, "attempt") &&
			!strings.Contains(body, "no server reachable")
	})
	t.Logf("one node: /readyz 503 %q", strings.SplitN(body, "\n", 2)[0])

	cl.Start(0)
	cl.Start(2)
	select {
	case <-s.ready:
	case err := <-s.done:
		t.Fatalf("serve ended: %v\n%s", err, logs.String())
	case <-time.After(3 * time.Minute):
		code, body := readyz(t, ops)
		t.Fatalf("not ready 3 minutes after the cluster came up: %d %q", code, body)
	}
	if code, body := readyz(t, ops); code != http.StatusOK {
		t.Fatalf("ready, but /readyz %d %q", code, body)
	}
}

// TestServeClusterSeeds: three processes create the topology at once on
// a 3-node cluster (each through a different node), then serve starts
// with the seed list's first server dead and becomes ready through the
// others.
func TestServeClusterSeeds(t *testing.T) {
	cl := testenv.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := clusterConfig(t, cl.SeedURL())

	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := 0; i < 3; i++ {
		pc := *c
		pc.Keyrelay.NATS.URL = cl.Node(i).URL
		conn, err := app.Connect(&pc, fmt.Sprintf("process-%d", i), false, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = app.EnsureTopology(ctx, conn, app.Topology(c), zap.NewNop())
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("process %d: %v", i, err)
		}
	}
	for _, name := range []string{worker.EventsStream, worker.ConfirmationsStream, worker.DLQStream} {
		info, err := cl.StreamInfo(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.Replicas != 3 {
			t.Fatalf("%s: %d replicas", name, info.Config.Replicas)
		}
	}

	cl.Kill(0)
	var logs testenv.SyncBuffer
	s := serve(t, c, startLogger(&logs))
	select {
	case ops := <-s.ready:
		if code, body := readyz(t, ops); code != http.StatusOK {
			t.Fatalf("/readyz %d %q", code, body)
		}
	case err := <-s.done:
		t.Fatalf("serve with the first seed down: %v\n%s", err, logs.String())
	case <-ctx.Done():
		t.Fatalf("not ready with the first seed down\n%s", logs.String())
	}
	// The consumer the workers share exists once, with the configured
	// bounds.
	nc, err := cl.Connect()
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	cons, err := js.Consumer(ctx, worker.EventsStream, worker.ConsumerName)
	if err != nil {
		t.Fatal(err)
	}
	if got := cons.CachedInfo().Config.AckWait; got != c.Keyrelay.Worker.AckWait {
		t.Fatalf("consumer AckWait %v, want %v", got, c.Keyrelay.Worker.AckWait)
	}
}

// startLogger logs JSON lines into buf (to show on failure and to check).
func startLogger(buf *testenv.SyncBuffer) *zap.Logger {
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(buf), zapcore.DebugLevel))
}
