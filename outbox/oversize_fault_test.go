package outbox_test

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/internal/testenv"
)

// An oversized row (a gateway bug, or hostile) is failed without being
// read into the relay's memory: rows hold up to 255 MB of jsonb, and a
// batch of them read whole would exhaust the relay's memory and crash it
// on every restart, blocking every row. Not parallel: it measures the
// process's allocations.
func TestOversizeRowFailedWithoutReadingIt(t *testing.T) {
	db := migratedDB(t)
	_, js := startNATS(t)
	conn := connect(t, dsnFor(db))
	ctx := context.Background()
	const big = 24 << 20
	var bigSeq int64
	if err := conn.QueryRow(ctx, `INSERT INTO keyrelay.keyrelay_outbox (payload) VALUES (jsonb_build_object(
		'spec_version', '1.0', 'id', gen_random_uuid()::text, 'type', 'key.updated',
		'time', to_char(now() AT TIME ZONE 'utc', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
		'team_id', 't1', 'key_id', 'k1', 'data', jsonb_build_object('metadata', jsonb_build_object('big', repeat('x', $1)))))
		RETURNING seq`, big).Scan(&bigSeq); err != nil {
		t.Fatal(err)
	}
	// A valid event with a huge tracestate (ignored, the row published).
	traced := updated("t1", "k2", 0, 1)
	tb, _ := traced.Encode()
	if _, err := conn.Exec(ctx, `INSERT INTO keyrelay.keyrelay_outbox (payload, traceparent, tracestate)
		VALUES ($1::jsonb, '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', repeat('x', $2))`, string(tb), big); err != nil {
		t.Fatal(err)
	}
	after := updated("t1", "k1", 0, 1)
	enqueue(t, conn, after)

	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	startRelay(t, testConfig(dsnFor(db)), js, nil)
	testenv.Eventually(t, 20*time.Second, "no pending rows", func() bool { return count(t, conn, "state = 'pending'") == 0 })
	var now runtime.MemStats
	runtime.ReadMemStats(&now)

	var state, reason string
	if err := conn.QueryRow(ctx, "SELECT state, coalesce(last_error, '') FROM keyrelay.keyrelay_outbox WHERE seq = $1", bigSeq).Scan(&state, &reason); err != nil {
		t.Fatal(err)
	}
	if state != "failed" || !strings.Contains(reason, "larger than") {
		t.Fatalf("oversized row: state %s, reason %q; want failed, larger than", state, reason)
	}
	if got := readStream(t, js); len(got) != 2 || got[0].ev.ID != traced.ID || got[1].ev.ID != after.ID {
		t.Fatalf("stream holds %d events, want the row with the huge tracestate and the row after the oversized one", len(got))
	}
	if alloc := now.TotalAlloc - before.TotalAlloc; alloc > big/2 {
		t.Fatalf("relaying allocated %d MB for two rows with a %d MB column each: oversized columns were read into memory", alloc>>20, big>>20)
	}
}
