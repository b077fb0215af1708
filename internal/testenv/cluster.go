package testenv

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ClusterName is the cluster name every node of a test cluster announces.
const ClusterName = "keyrelay-test"

// Cluster is a JetStream cluster of nats-server processes on loopback.
// Node i is named "n<i>" (its server_name, which stream and meta cluster
// info report), listens for clients, routes and monitoring on ports fixed
// for the cluster's life, and keeps its own store directory, so Restart
// brings back the same member with its data. Every method may be called
// from any goroutine; those that start a server fail the test (t.Fatal)
// when it cannot start, so call them from the test's goroutine.
type Cluster struct {
	t     testing.TB
	nodes []*clusterNode
}

type clusterNode struct {
	*NATS
	name      string
	routePort int
	httpPort  int
}

// StartCluster starts an n-node JetStream cluster and waits (up to a
// minute) until it is healthy: a meta leader elected and every node
// current with it. Every node is stopped at the end of the test.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	return StartClusterConfig(t, n, "")
}

// StartClusterConfig is StartCluster with extra configuration-file text
// (accounts, users, permissions) appended to every node's configuration.
func StartClusterConfig(t testing.TB, n int, extra string) *Cluster {
	t.Helper()
	c := NewCluster(t, n, extra)
	c.StartAll()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatalf("cluster: %v", err)
	}
	return c
}

// NewCluster configures an n-node cluster (ports, store directories,
// configuration files) without starting any server: tests that need a
// cluster to appear later (a client started before its servers) start the
// nodes with Start or StartAll. Nodes still running at the end of the test
// are stopped.
func NewCluster(t testing.TB, n int, extra string) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("NewCluster: %d nodes", n)
	}
	bin := NATSServerBinary(t)
	ports := freePorts(t, 3*n)
	c := &Cluster{t: t}
	routes := make([]string, n)
	for i := 0; i < n; i++ {
		routes[i] = fmt.Sprintf("%q", "nats-route://127.0.0.1:"+strconv.Itoa(ports[3*i+1]))
	}
	for i := 0; i < n; i++ {
		port, routePort, httpPort := ports[3*i], ports[3*i+1], ports[3*i+2]
		dir := t.TempDir()
		name := "n" + strconv.Itoa(i)
		conf := filepath.Join(dir, "nats.conf")
		text := fmt.Sprintf(`server_name: %q
listen: "127.0.0.1:%d"
http: "127.0.0.1:%d"
jetstream { store_dir: %q }
cluster {
  name: %q
  listen: "127.0.0.1:%d"
  routes: [%s]
}
%s
`, name, port, httpPort, filepath.Join(dir, "js"), ClusterName, routePort, strings.Join(routes, ", "), extra)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		node := &clusterNode{
			NATS: &NATS{Port: port, DataDir: dir, URL: "nats://127.0.0.1:" + strconv.Itoa(port), bin: bin, t: t,
				args: []string{"-c", conf}},
			name: name, routePort: routePort, httpPort: httpPort,
		}
		c.nodes = append(c.nodes, node)
		t.Cleanup(node.Stop)
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.logTails(40)
		}
	})
	return c
}

// freePorts returns n distinct loopback ports that were free a moment ago
// (all listeners are held until every port is chosen).
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for len(ports) < n {
		l := listenFree(t)
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// Size is the number of nodes.
func (c *Cluster) Size() int { return len(c.nodes) }

// Node returns node i's server (its URL, Port and DataDir).
func (c *Cluster) Node(i int) *NATS { return c.nodes[i].NATS }

// Name returns node i's server name ("n<i>").
func (c *Cluster) Name(i int) string { return c.nodes[i].name }

// URLs returns every node's client URL, in node order, whether the node is
// running or not.
func (c *Cluster) URLs() []string {
	urls := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		urls[i] = n.URL
	}
	return urls
}

// SeedURL returns the client URLs joined by commas, as nats.Connect and
// keyrelay's nats.url accept them.
func (c *Cluster) SeedURL() string { return strings.Join(c.URLs(), ",") }

// Running reports whether node i's process is running (started and not
// stopped or killed by the harness).
func (c *Cluster) Running(i int) bool {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// Start starts node i if it is not running (same ports and store
// directory as before).
func (c *Cluster) Start(i int) {
	c.t.Helper()
	if c.Running(i) {
		return
	}
	c.nodes[i].Stop() // reap a process that exited on its own
	c.nodes[i].start()
}

// StartAll starts every node that is not running.
func (c *Cluster) StartAll() {
	c.t.Helper()
	for i := range c.nodes {
		c.Start(i)
	}
}

// Stop stops node i gracefully (SIGTERM, then SIGKILL after 5 s).
func (c *Cluster) Stop(i int) { c.nodes[i].Stop() }

// Kill kills node i at once (SIGKILL): no shutdown, no leadership
// handover, as in a machine loss.
func (c *Cluster) Kill(i int) { c.nodes[i].Kill() }

// Restart stops node i (SIGTERM) if it is running and starts it again on
// the same ports and store directory.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.nodes[i].Stop()
	c.nodes[i].start()
}

// Kill kills the server at once (SIGKILL) and waits for it to exit.
func (n *NATS) Kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.exited
	n.cmd = nil
}

// Connect connects to the running nodes (any of them, failing over to
// the others) with the options given after the harness's own; the
// connection is closed at the end of the test.
func (c *Cluster) Connect(opts ...nats.Option) (*nats.Conn, error) {
	base := []nats.Option{nats.Timeout(2 * time.Second), nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}
	nc, err := nats.Connect(c.SeedURL(), append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to cluster: %w", err)
	}
	c.t.Cleanup(nc.Close)
	return nc, nil
}

// StreamInfo asks the cluster for a stream's info (with its cluster
// section: leader and replicas), retrying through elections until ctx
// ends.
func (c *Cluster) StreamInfo(ctx context.Context, stream string) (*jetstream.StreamInfo, error) {
	var last error
	for {
		info, err := c.streamInfoOnce(ctx, stream)
		if err == nil {
			return info, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("stream %s info: %w (last error: %v)", stream, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *Cluster) streamInfoOnce(ctx context.Context, stream string) (*jetstream.StreamInfo, error) {
	nc, err := nats.Connect(c.SeedURL(), nats.Timeout(time.Second), nats.NoReconnect())
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := js.Stream(rctx, stream)
	if err != nil {
		return nil, err
	}
	return s.CachedInfo(), nil
}

// LeaderOf returns the index of the node leading stream, waiting (through
// an election) until the stream has a leader or ctx ends.
func (c *Cluster) LeaderOf(ctx context.Context, stream string) (int, error) {
	for {
		info, err := c.StreamInfo(ctx, stream)
		if err != nil {
			return -1, err
		}
		if info.Cluster != nil && info.Cluster.Leader != "" {
			if i := c.index(info.Cluster.Leader); i >= 0 {
				return i, nil
			}
			return -1, fmt.Errorf("stream %s: leader %q is not a node of this cluster", stream, info.Cluster.Leader)
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("stream %s has no leader: %w", stream, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// StepDown asks the leader of stream to step down
// ($JS.API.STREAM.LEADER.STEPDOWN) and returns once another node leads
// it, with that node's index.
func (c *Cluster) StepDown(ctx context.Context, stream string) (int, error) {
	old, err := c.LeaderOf(ctx, stream)
	if err != nil {
		return -1, err
	}
	nc, err := nats.Connect(c.SeedURL(), nats.Timeout(time.Second), nats.NoReconnect())
	if err != nil {
		return -1, fmt.Errorf("step down %s: %w", stream, err)
	}
	defer nc.Close()
	for {
		msg, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.LEADER.STEPDOWN."+stream, nil)
		if err == nil {
			var resp struct {
				Success bool `json:"success"`
				Error   *struct {
					Description string `json:"description"`
				} `json:"error"`
			}
			if jerr := json.Unmarshal(msg.Data, &resp); jerr != nil {
				return -1, fmt.Errorf("step down %s: %w", stream, jerr)
			}
			if resp.Success {
				break
			}
			if resp.Error != nil {
				err = errors.New(resp.Error.Description)
			}
		}
		if ctx.Err() != nil {
			return -1, fmt.Errorf("step down %s: %w (last error: %v)", stream, ctx.Err(), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for {
		i, err := c.LeaderOf(ctx, stream)
		if err != nil {
			return -1, err
		}
		if i != old {
			return i, nil
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("stream %s: leader n%d did not change: %w", stream, old, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *Cluster) index(name string) int {
	for i, n := range c.nodes {
		if n.name == name {
			return i
		}
	}
	return -1
}

// jsz is the part of a node's /jsz monitoring answer the harness reads.
type jsz struct {
	Meta *struct {
		Leader      string `json:"leader"`
		ClusterSize int    `json:"cluster_size"`
	} `json:"meta_cluster"`
}

// MetaLeader returns the index of the meta leader as node i sees it
// (-1 when it knows none).
func (c *Cluster) MetaLeader(ctx context.Context, i int) (int, error) {
	var j jsz
	if err := c.monitor(ctx, i, "/jsz", &j); err != nil {
		return -1, err
	}
	if j.Meta == nil || j.Meta.Leader == "" {
		return -1, nil
	}
	return c.index(j.Meta.Leader), nil
}

// WaitHealthy waits until every running node answers its /healthz with
// 200 (JetStream enabled and current with the meta leader and its assets)
// and all of them see the same meta leader. Stopped or killed nodes are
// not waited for. It returns ctx's error wrapped with the last reason.
func (c *Cluster) WaitHealthy(ctx context.Context) error {
	var last error
	for {
		last = c.healthy(ctx)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not healthy: %w (last: %v)", ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *Cluster) healthy(ctx context.Context) error {
	leader := ""
	running := 0
	for i := range c.nodes {
		if !c.Running(i) {
			continue
		}
		running++
		var h struct {
			Status string `json:"status"`
			Error  string `json:"error"`
		}
		if err := c.monitor(ctx, i, "/healthz", &h); err != nil {
			return fmt.Errorf("%s: %w", c.nodes[i].name, err)
		}
		var j jsz
		if err := c.monitor(ctx, i, "/jsz", &j); err != nil {
			return fmt.Errorf("%s: %w", c.nodes[i].name, err)
		}
		if j.Meta == nil || j.Meta.Leader == "" {
			return fmt.Errorf("%s: no meta leader", c.nodes[i].name)
		}
		if leader != "" && j.Meta.Leader != leader {
			return fmt.Errorf("%s sees meta leader %s, others %s", c.nodes[i].name, j.Meta.Leader, leader)
		}
		leader = j.Meta.Leader
	}
	if running == 0 {
		return errors.New("no node running")
	}
	return nil
}

// monitor GETs path on node i's monitoring port and decodes the JSON
// answer into v; a status other than 200 is an error with the body.
func (c *Cluster) monitor(ctx context.Context, i int, path string, v any) error {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(c.nodes[i].httpPort)+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	return json.Unmarshal(body, v)
}

// logTails writes the last lines of every node's newest log to the test
// log (called when the test failed).
func (c *Cluster) logTails(lines int) {
	for _, n := range c.nodes {
		logs, _ := filepath.Glob(filepath.Join(n.DataDir, "server-*.log"))
		if len(logs) == 0 {
			continue
		}
		sort.Strings(logs)
		f, err := os.Open(logs[len(logs)-1])
		if err != nil {
			continue
		}
		var tail []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			tail = append(tail, sc.Text())
			if len(tail) > lines {
				tail = tail[1:]
			}
		}
		f.Close()
		c.t.Logf("--- %s (%s), last %d lines:\n%s", n.name, filepath.Base(logs[len(logs)-1]), len(tail), strings.Join(tail, "\n"))
	}
}
