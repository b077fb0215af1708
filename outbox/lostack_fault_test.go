package outbox_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/worker"
)

// PubAcks that never arrive (a stream leader election, a network blip
// without a reconnect) stay pending in the JetStream client, which
// refuses new async publishes once 4,000 are pending. The relay must not
// stay stuck on those forever once the stream answers again.
func TestLostPubAcksDoNotStallTheRelay(t *testing.T) {
	t.Parallel()
	db := migratedDB(t)
	srv := testenv.StartNATS(t)
	nc, js := testenv.ConnectJetStream(t, srv.URL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	// No stream yet: something takes the messages and never answers.
	sink, err := nc.Subscribe("keyrelay.events.>", func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	conn := connect(t, dsnFor(db))
	const n = 1500
	rows := make([][]any, n)
	for i := range n {
		b, err := updated("t1", fmt.Sprintf("k%d", i), 0, i).Encode()
		if err != nil {
			t.Fatal(err)
		}
		rows[i] = []any{string(b)}
	}
	if _, err := conn.CopyFrom(context.Background(), pgx.Identifier{"keyrelay", "keyrelay_outbox"}, []string{"payload"}, pgx.CopyFromRows(rows)); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(dsnFor(db))
	cfg.BatchSize, cfg.PublishTimeout = 2000, 100*time.Millisecond
	startRelay(t, cfg, js, nil)
	testenv.Eventually(t, 30*time.Second, "the client's pending acks at its limit", func() bool { return js.PublishAsyncPending() >= 4000 })

	// The stream is back (and nothing swallows its messages any more).
	if err := sink.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := worker.EnsureTopology(ctx, js, worker.TopologyConfig{DuplicateWindow: 2 * time.Minute,
		AckWait: 30 * time.Second, MaxDeliver: 5, MaxAckPending: 100}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "every row sent", func() bool { return count(t, conn, "state = 'pending'") == 0 })
	if got := readStream(t, js); len(got) != n {
		t.Fatalf("stream holds %d events, want %d", len(got), n)
	}
}
