package benchkit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Servers is where StartServers started JetStream: one process, or a
// cluster of them on loopback.
type Servers struct {
	// JS is a connection to the servers (to any node of a cluster, failing
	// over to the others).
	JS jetstream.JetStream
	// Replicas is the replica count streams and buckets should use: the
	// cluster's size, or 1.
	Replicas int
	// Shape describes the servers for a benchmark's header line.
	Shape string
	stop  func()
}

// Stop closes the connection and kills the servers.
func (s *Servers) Stop() { s.stop() }

// StartServers starts one JetStream nats-server (nodes ≤ 1) or a cluster
// of nodes processes on loopback, each with its own store under dir, and
// connects to it. On a cluster it returns once JetStream answers (the
// meta leader is elected).
func StartServers(bin, dir string, nodes int, extra ...string) (*Servers, error) {
	if nodes <= 1 {
		js, stop, err := StartNATS(bin, dir, extra...)
		if err != nil {
			return nil, err
		}
		return &Servers{JS: js, Replicas: 1, Shape: "one nats-server (separate process, file storage)", stop: stop}, nil
	}
	ports, routes := make([]int, nodes), make([]string, nodes)
	for i := range ports {
		ports[i] = FreePort(false)
		routes[i] = "nats://127.0.0.1:" + strconv.Itoa(FreePort(false))
	}
	var procs []*exec.Cmd
	kill := func() {
		for _, p := range procs {
			_ = p.Process.Kill()
			_ = p.Wait()
		}
	}
	for i := range nodes {
		args := append([]string{"-js", "-a", "127.0.0.1", "-p", strconv.Itoa(ports[i]), "-n", "n" + strconv.Itoa(i+1),
			"-sd", filepath.Join(dir, "js"+strconv.Itoa(i+1)), "--cluster_name", "bench",
			"--cluster", routes[i], "--routes", strings.Join(routes, ",")}, extra...)
		srv := exec.Command(bin, args...)
		srv.Stdout, srv.Stderr = os.Stderr, os.Stderr
		if err := srv.Start(); err != nil {
			kill()
			return nil, fmt.Errorf("start %s (run `make tools`): %w", bin, err)
		}
		procs = append(procs, srv)
	}
	urls := make([]string, nodes)
	for i, p := range ports {
		urls[i] = "nats://127.0.0.1:" + strconv.Itoa(p)
	}
	var nc *nats.Conn
	var err error
	for range 100 {
		if nc, err = nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1)); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		kill()
		return nil, err
	}
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = js.AccountInfo(actx)
		acancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			nc.Close()
			kill()
			return nil, errors.Join(errors.New("the cluster's JetStream did not answer within a minute"), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return &Servers{JS: js, Replicas: nodes, Shape: fmt.Sprintf("a %d-node nats-server cluster on loopback (separate processes, file storage, every stream and bucket at replicas %d)", nodes, nodes),
		stop: func() { nc.Close(); kill() }}, nil
}
