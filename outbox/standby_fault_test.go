package outbox_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/outbox"
)

// A relay whose NATS connection is down must not publish into the
// client's reconnect buffer: those copies reach the stream whenever the
// connection comes back, possibly long after another relay published the
// rows (and newer rows of the same keys), and after the duplicate window
// they are stored again, out of per-key order.
func TestDisconnectedRelayDoesNotBufferStaleCopies(t *testing.T) {
	t.Parallel()
	db := migratedDB(t)
	srv, js := startNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	shortDuplicateWindow(ctx, t, js)
	conn := connect(t, dsnFor(db))
	px := testenv.NewTCPProxy(t, fmt.Sprintf("127.0.0.1:%d", srv.Port))
	ncA, err := nats.Connect("nats://"+px.Addr, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ncA.Close)
	jsA, _ := jetstream.New(ncA)
	cfgA := testConfig(dsnFor(db))
	cfgA.PublishTimeout, cfgA.StandbyAfter = 300*time.Millisecond, 3*time.Second
	a := startRelay(t, cfgA, jsA, nil)
	b := startRelay(t, testConfig(dsnFor(db)), js, nil)
	testenv.Eventually(t, 10*time.Second, "partitions split", func() bool {
		return a.Partitions() == outbox.Partitions/2 && b.Partitions() == outbox.Partitions/2
	})

	px.Down()
	testenv.Eventually(t, 5*time.Second, "a sees its connection down", func() bool { return !ncA.IsConnected() })
	const n = 40
	for i := range n {
		enqueue(t, conn, updated("t1", fmt.Sprintf("k%d", i), 0, i))
	}
	testenv.Eventually(t, 20*time.Second, "b publishes every row after a stood by", func() bool {
		return count(t, conn, "state = 'pending'") == 0
	})
	if got := readStream(t, js); len(got) != n {
		t.Fatalf("stream holds %d events before a reconnects, want %d", len(got), n)
	}
	time.Sleep(1500 * time.Millisecond) // past the duplicate window
	px.Up(t)
	testenv.Eventually(t, 10*time.Second, "a reconnects", func() bool { return ncA.IsConnected() })
	time.Sleep(time.Second)
	got := readStream(t, js)
	ids := map[string]int{}
	for _, s := range got {
		ids[s.ev.ID]++
	}
	if len(got) != n || len(ids) != n {
		t.Fatalf("stream holds %d events (%d distinct) after a reconnected, want %d: a's stale copies from its reconnect buffer were stored", len(got), len(ids), n)
	}
}
