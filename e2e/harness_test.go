package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/testenv"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// keyrelayBinary builds the current tree's keyrelay once per test binary.
func keyrelayBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "keyrelay-e2e-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "keyrelay")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/keyrelay")
		cmd.Dir = testenv.RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build keyrelay: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// env is one end-to-end environment: a nats-server (or a cluster), a
// config, a keyring and a shared local-provider directory.
type env struct {
	t *testing.T
	// nats is the environment's single server; nil when it runs on a
	// cluster (envOptions.cluster).
	nats *testenv.NATS
	// cluster is the cluster given by envOptions.cluster, or nil.
	cluster  *testenv.Cluster
	dir      string
	keyring  *events.Keyring
	nc       *nats.Conn
	js       jetstream.JetStream
	storeDir string
	keyFile  string
	config   string
	// configText is the configuration as newEnv wrote it.
	configText string
}

type envOptions struct {
	// system is general_settings.key_management_system. Default: local.
	system     string
	extraYAML  string
	worker     string
	dupWindow  time.Duration
	backendYML string
	// cluster, when set, is the NATS the environment uses instead of a
	// single server of its own: keyrelay.nats.url is the cluster's seed
	// list and keyrelay.streams.replicas its size.
	cluster *testenv.Cluster
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	e := &env{t: t, cluster: o.cluster, dir: t.TempDir()}
	var natsURL, streamsYAML string
	if o.cluster != nil {
		natsURL = o.cluster.SeedURL()
		streamsYAML = fmt.Sprintf("\n    replicas: %d", o.cluster.Size())
	} else {
		e.nats = testenv.StartNATS(t)
		natsURL = e.nats.URL
	}
	e.storeDir = filepath.Join(e.dir, "secrets")
	krPath := filepath.Join(e.dir, "keyring.json")
	if err := events.GenerateKeyringFile(krPath, "e2e1"); err != nil {
		t.Fatal(err)
	}
	kr, err := events.LoadKeyring(krPath)
	if err != nil {
		t.Fatal(err)
	}
	e.keyring = kr
	if o.dupWindow == 0 {
		o.dupWindow = 2 * time.Minute
	}
	if o.worker == "" {
		o.worker = `
    concurrency: 16
    ack_wait: 6s
    claim_lease: 4s
    call_timeout: 2s
    retry_initial: 20ms
    retry_max: 500ms
    max_deliver: 6
    shutdown_grace: 3s`
	}
	backend := o.backendYML
	if backend == "" {
		backend = fmt.Sprintf(`
    local:
      path: %s`, e.storeDir)
	}
	if o.system == "" {
		o.system = "local"
	}
	e.config = filepath.Join(e.dir, "config.yaml")
	cfg := fmt.Sprintf(`
model_list: []
general_settings:
  key_management_system: %s
  key_management_settings:
    store_virtual_keys: true
    prefix_for_stored_virtual_keys: "litellm/"
keyrelay:
  nats:
    url: %s
  streams:
    duplicate_window: %s%s
  worker:%s
  sealing:
    keyring_file: %s
  log:
    level: %s
  providers:%s
%s`, o.system, natsURL, o.dupWindow, streamsYAML, o.worker, krPath, logLevel(), backend, o.extraYAML)
	e.configText = cfg
	if err := os.WriteFile(e.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var nc *nats.Conn
	if o.cluster != nil {
		nc, err = o.cluster.Connect() // fails over between the nodes; closed by the cluster harness
	} else {
		nc, err = nats.Connect(e.nats.URL)
		if err == nil {
			t.Cleanup(nc.Close)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	e.nc = nc
	e.js, _ = jetstream.New(nc)
	return e
}

// proc is one `keyrelay serve` process.
type proc struct {
	name    string
	cmd     *exec.Cmd
	opsPort int
	// lookupPort is the lookup API listener (GET /v1/secrets/{name}).
	lookupPort int
	logPath    string
	exited     chan struct{}
}

// lookupToken is the e2e lookup token of team.
func lookupToken(team string) string { return "e2e-lookup-token-" + team }

// setLookupTeams gives each team a lookup client (token lookupToken(team))
// in the configuration of the processes started from now on.
func (e *env) setLookupTeams(teams []string) {
	e.t.Helper()
	if strings.Contains(e.configText, "\n  lookup:") {
		e.t.Fatal("the test's extraYAML already has a lookup section")
	}
	var b strings.Builder
	b.WriteString(e.configText + "\n  lookup:\n    clients:\n")
	for _, team := range teams {
		fmt.Fprintf(&b, "      %s: {team: %s, token: %s}\n", team, team, lookupToken(team))
	}
	if err := os.WriteFile(e.config, []byte(b.String()), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) startWorker(name string) *proc {
	e.t.Helper()
	p := e.spawnWorker(name)
	e.waitReady(p, 30*time.Second)
	return p
}

// spawnWorker starts a `keyrelay serve` process without waiting for it to
// be ready (see waitReady); it is stopped at the end of the test.
func (e *env) spawnWorker(name string) *proc {
	e.t.Helper()
	p := &proc{name: name, opsPort: testenv.FreePort(e.t), lookupPort: testenv.FreePort(e.t), logPath: filepath.Join(e.dir, name+"-"+strconv.FormatInt(time.Now().UnixNano(), 10)+".log")}
	logf, err := os.Create(p.logPath)
	if err != nil {
		e.t.Fatal(err)
	}
	p.cmd = exec.Command(keyrelayBinary(e.t), "serve", "--config", e.config, "--http", "127.0.0.1:"+strconv.Itoa(p.opsPort),
		"--lookup-addr", "127.0.0.1:"+strconv.Itoa(p.lookupPort))
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.Env = environ(e.t)
	if err := p.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	p.exited = make(chan struct{})
	go func() { _ = p.cmd.Wait(); logf.Close(); close(p.exited) }()
	e.t.Cleanup(func() {
		p.stop(syscall.SIGTERM)
		if e.t.Failed() && os.Getenv("KEYRELAY_E2E_KEEP_LOGS") != "" {
			b, _ := os.ReadFile(p.logPath)
			_ = os.WriteFile(filepath.Join(os.Getenv("KEYRELAY_E2E_KEEP_LOGS"), filepath.Base(p.logPath)), b, 0o600)
		}
	})
	return p
}

// waitReady waits until p's /readyz answers 200, failing the test when p
// exits first or timeout passes.
func (e *env) waitReady(p *proc, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", p.opsPort))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-p.exited:
			b, _ := os.ReadFile(p.logPath)
			e.t.Fatalf("%s exited before ready:\n%s", p.name, b)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(p.logPath)
			e.t.Fatalf("%s not ready after %v:\n%s", p.name, timeout, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *proc) stop(sig syscall.Signal) {
	if p.cmd.Process == nil {
		return
	}
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// confirmations reads every confirmation in the stream.
func (e *env) confirmations(ctx context.Context) []*events.Confirmation {
	e.t.Helper()
	return readConfirmations(ctx, e.t, e.js)
}

// waitQuiet waits until the shared consumer has nothing pending or
// unacknowledged and the confirmation count is at least want.
func (e *env) waitQuiet(ctx context.Context, want int, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		// The deadline holds on every path: when JetStream keeps failing
		// (a connection that never came back, a consumer that is gone) this
		// fails with the last error instead of polling forever. An earlier
		// version checked it only after a successful poll, and hung a
		// whole-cluster outage test for over 8 minutes.
		if time.Now().After(deadline) || ctx.Err() != nil {
			if lastErr != nil {
				e.t.Fatalf("not quiet after %v: JetStream kept failing: %v", timeout, lastErr)
			}
		}
		pending, ackPending, redelivered, ok := 0, 0, 0, true
		// Both lanes: the gateway's events and bulk jobs'.
		for _, c := range [][2]string{{"KEYRELAY_EVENTS", "keyrelay-workers"}, {"KEYRELAY_BULK", "keyrelay-bulk"}} {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			cons, err := e.js.Consumer(cctx, c[0], c[1])
			var info *jetstream.ConsumerInfo
			if err == nil {
				info, err = cons.Info(cctx)
			}
			cancel()
			if err != nil {
				lastErr, ok = fmt.Errorf("consumer %s: %w", c[1], err), false
				break
			}
			pending, ackPending, redelivered = pending+int(info.NumPending), ackPending+info.NumAckPending, redelivered+info.NumRedelivered
		}
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, serr := e.js.Stream(sctx, "KEYRELAY_CONFIRMATIONS")
		var sinfo *jetstream.StreamInfo
		if serr == nil {
			sinfo, serr = s.Info(sctx)
		}
		cancel()
		if ok && serr != nil {
			lastErr, ok = fmt.Errorf("confirmations stream: %w", serr), false
		}
		if ok {
			lastErr = nil
			if pending == 0 && ackPending == 0 && sinfo != nil && int(sinfo.State.Msgs) >= want {
				return
			}
			if time.Now().After(deadline) {
				msgs := uint64(0)
				if sinfo != nil {
					msgs = sinfo.State.Msgs
				}
				e.t.Fatalf("not quiet after %v: pending=%d ack_pending=%d redelivered=%d confirmations=%d want=%d",
					timeout, pending, ackPending, redelivered, msgs, want)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func logLevel() string {
	if l := os.Getenv("KEYRELAY_E2E_LOG_LEVEL"); l != "" {
		return l
	}
	return "info"
}
