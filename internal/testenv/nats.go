package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSServerVersion is the nats-server the tests pin (built from the module).
const NATSServerVersion = "v2.15.2"

// RepoRoot returns the repository root (the directory holding go.mod).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

var buildMu sync.Mutex

// Binary returns the path of a tool in bin/, building it with `go build`
// from pkg when it is missing.
func Binary(t testing.TB, name, pkg string) string {
	t.Helper()
	return ensureTool(t, name, func(bin string) *exec.Cmd {
		t.Logf("building %s from %s", name, pkg)
		cmd := exec.Command("go", "build", "-o", bin+".tmp", pkg)
		cmd.Dir = RepoRoot()
		return cmd
	}, true)
}

// MakeTool returns bin/<name>, running `make <repo>/bin/<name>` when it is
// missing (the Makefile builds test servers into a cache outside the tree
// and links them; its targets are absolute paths).
func MakeTool(t testing.TB, name string) string {
	t.Helper()
	return ensureTool(t, name, func(bin string) *exec.Cmd {
		t.Logf("building %s with make (the first build of Vault takes 15-20 minutes)", name)
		return exec.Command("make", "-C", RepoRoot(), bin)
	}, false)
}

// ensureTool returns bin/<name>, running build when it is missing. Builds
// are serialized across the test binaries of one `go test ./...` run by a
// lock file. With rename, build writes <bin>.tmp, moved into place after.
func ensureTool(t testing.TB, name string, build func(bin string) *exec.Cmd, rename bool) string {
	t.Helper()
	bin := filepath.Join(RepoRoot(), "bin", name)
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(bin+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if out, err := build(bin).CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, out)
	}
	if rename {
		if err := os.Rename(bin+".tmp", bin); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("building %s did not produce %s: %v", name, bin, err)
	}
	return bin
}

// NATSServerBinary returns the pinned nats-server binary.
func NATSServerBinary(t testing.TB) string {
	return Binary(t, "nats-server", "github.com/nats-io/nats-server/v2")
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l := listenFree(t)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// NATS is a running nats-server process.
type NATS struct {
	URL     string
	Port    int
	DataDir string
	args    []string
	bin     string
	cmd     *exec.Cmd
	exited  chan struct{}
	t       testing.TB
	mu      sync.Mutex
}

// StartJetStream starts a server as StartNATS does and connects to it; the
// connection is closed at the end of the test. js is nc's JetStream
// context.
func StartJetStream(t testing.TB) (srv *NATS, js jetstream.JetStream) {
	t.Helper()
	srv = StartNATS(t)
	_, js = ConnectJetStream(t, srv.URL)
	return srv, js
}

// ConnectJetStream connects to url with opts and returns the connection
// and its JetStream context; the connection is closed at the end of the
// test.
func ConnectJetStream(t testing.TB, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// StartClusterJetStream starts an n-node cluster as StartCluster does and
// connects to it through its seed list; the connection is closed at the
// end of the test. js is that connection's JetStream context.
func StartClusterJetStream(t testing.TB, n int) (*Cluster, jetstream.JetStream) {
	t.Helper()
	c := StartCluster(t, n)
	nc, err := c.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return c, js
}

// StartNATS starts a single JetStream-enabled nats-server on a free port
// with a fresh store directory. It is stopped at the end of the test.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	port := FreePort(t)
	dir := t.TempDir()
	n := &NATS{Port: port, DataDir: dir, URL: "nats://127.0.0.1:" + strconv.Itoa(port), bin: NATSServerBinary(t), t: t,
		args: []string{"-js", "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-sd", dir}}
	n.start()
	t.Cleanup(n.Stop)
	return n
}

// StartNATSConfig starts a JetStream-enabled nats-server like StartNATS,
// with extra configuration-file text (accounts, users, permissions)
// appended to the listen and store settings.
func StartNATSConfig(t testing.TB, extra string) *NATS {
	t.Helper()
	port := FreePort(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	text := fmt.Sprintf("listen: \"127.0.0.1:%d\"\njetstream { store_dir: %q }\n%s\n", port, filepath.Join(dir, "js"), extra)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	n := &NATS{Port: port, DataDir: dir, URL: "nats://127.0.0.1:" + strconv.Itoa(port), bin: NATSServerBinary(t), t: t,
		args: []string{"-c", conf}}
	n.start()
	t.Cleanup(n.Stop)
	return n
}

func (n *NATS) start() {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	cmd := exec.Command(n.bin, n.args...)
	log, err := os.Create(filepath.Join(n.DataDir, fmt.Sprintf("server-%d.log", time.Now().UnixNano())))
	if err != nil {
		n.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		n.t.Fatalf("start nats-server: %v", err)
	}
	n.cmd = cmd
	exited := make(chan struct{})
	n.exited = exited
	go func() { _ = cmd.Wait(); log.Close(); close(exited) }()
	waitTCP(n.t, "127.0.0.1:"+strconv.Itoa(n.Port), 10*time.Second)
}

// Stop terminates the server (SIGTERM, then SIGKILL after 5 s).
func (n *NATS) Stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	terminate(n.cmd, n.exited)
	n.cmd = nil
}

// Restart stops and starts the server on the same port and store.
func (n *NATS) Restart() {
	n.Stop()
	n.start()
}

func waitTCP(t testing.TB, addr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not start listening within %v", addr, timeout)
}

// terminate stops a process this package started: SIGTERM, then SIGKILL
// after 5 s. exited is closed by the goroutine that waits for it.
func terminate(cmd *exec.Cmd, exited <-chan struct{}) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}
