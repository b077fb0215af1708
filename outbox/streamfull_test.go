package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/worker"
)

// TestFullStreamKeepsRowsPending: KEYRELAY_EVENTS at its events_max_bytes
// refuses publishes (it discards new messages, never accepted ones); the
// relay keeps the refused rows pending, marks none failed, and publishes
// them in order once the stream has room again (as the workers' trimming
// makes it).
func TestFullStreamKeepsRowsPending(t *testing.T) {
	t.Parallel()
	db := migratedDB(t)
	srv := testenv.StartNATS(t)
	_, js := testenv.ConnectJetStream(t, srv.URL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := worker.EnsureTopology(ctx, js, worker.TopologyConfig{DuplicateWindow: 2 * time.Minute,
		AckWait: 30 * time.Second, MaxAckPending: 100, EventsMaxBytes: 16 << 10}); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, dsnFor(db))
	const rows = 150
	for i := range rows {
		enqueue(t, conn, updated("t1", "k1", uint64(i+1), i))
	}
	startRelay(t, testConfig(dsnFor(db)), js, nil)
	s, err := js.Stream(ctx, worker.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	state := func() jetstream.StreamState {
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State
	}
	testenv.Eventually(t, time.Minute, "the stream full and the relay refused", func() bool {
		st := state()
		return st.Msgs > 0 && st.Bytes > 15<<10 && count(t, conn, "state = 'sent'") == int(st.Msgs)
	})
	// Several refused rounds (the relay's backoff is at most 300 ms here).
	time.Sleep(1500 * time.Millisecond)
	st := state()
	sent, pending, failed := count(t, conn, "state = 'sent'"), count(t, conn, "state = 'pending'"), count(t, conn, "state <> 'sent' AND state <> 'pending'")
	if failed != 0 || pending == 0 || sent != int(st.Msgs) || st.FirstSeq != 1 {
		t.Fatalf("stream full: %d sent, %d pending, %d otherwise; stream %d messages from %d: want the refused rows pending, none failed, none dropped",
			sent, pending, failed, st.Msgs, st.FirstSeq)
	}
	t.Logf("stream full after %d rows; %d pending", sent, pending)
	// Room again, a few times over: every row is published, in order.
	for count(t, conn, "state = 'pending'") > 0 {
		if err := s.Purge(ctx, jetstream.WithPurgeSequence(state().LastSeq+1)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		if ctx.Err() != nil {
			t.Fatal("rows still pending")
		}
	}
	if n := count(t, conn, "state = 'sent'"); n != rows {
		t.Fatalf("%d rows sent, want %d", n, rows)
	}
	if st := state(); st.LastSeq != rows {
		t.Fatalf("last stream sequence %d, want %d (each row stored once)", st.LastSeq, rows)
	}
}
