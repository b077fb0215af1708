package testenv

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestCluster forms a 3-node cluster, creates an R3 stream, kills its
// leader, sees another node elected, and brings the killed node back as a
// current replica holding every message.
func TestCluster(t *testing.T) {
	c := StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	if got := len(c.URLs()); got != 3 {
		t.Fatalf("URLs: %d, want 3", got)
	}
	meta := -1
	for i := 0; i < 3; i++ {
		m, err := c.MetaLeader(ctx, i)
		if err != nil || m < 0 {
			t.Fatalf("node %d: meta leader %d, %v", i, m, err)
		}
		if meta >= 0 && m != meta {
			t.Fatalf("node %d sees meta leader %d, node 0 sees %d", i, m, meta)
		}
		meta = m
	}

	nc, err := c.Connect()
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			if _, err := js.Publish(ctx, fmt.Sprintf("t.%d", i), []byte("x"), jetstream.WithRetryAttempts(50), jetstream.WithRetryWait(200*time.Millisecond)); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
	}
	publish(0, 100)

	leader, err := c.LeaderOf(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.StreamInfo(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(info.Cluster.Replicas); n != 2 {
		t.Fatalf("stream T: %d replicas besides the leader, want 2", n)
	}

	c.Kill(leader)
	if c.Running(leader) {
		t.Fatalf("node %d still running after Kill", leader)
	}
	next, err := c.LeaderOf(ctx, "T")
	for err == nil && next == leader {
		time.Sleep(100 * time.Millisecond)
		next, err = c.LeaderOf(ctx, "T")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stream T: leader %s killed, %s elected", c.Name(leader), c.Name(next))
	publish(100, 200)

	c.Restart(leader)
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	// The restarted node is a current replica again with every message.
	for {
		info, err := c.StreamInfo(ctx, "T")
		if err != nil {
			t.Fatal(err)
		}
		current := info.Cluster.Leader == c.Name(leader)
		for _, r := range info.Cluster.Replicas {
			if r.Name == c.Name(leader) && r.Current && !r.Offline {
				current = true
			}
		}
		if current && info.State.Msgs == 200 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("node %s did not rejoin stream T: %+v, %d msgs", c.Name(leader), info.Cluster, info.State.Msgs)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Step-down moves leadership to another node.
	before, err := c.LeaderOf(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	after, err := c.StepDown(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	if after == before {
		t.Fatalf("step-down kept leader %d", before)
	}

	// A node stopped gracefully is no longer running, and comes back.
	c.Stop(after)
	if c.Running(after) {
		t.Fatalf("node %d running after Stop", after)
	}
	c.Start(after)
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
}
