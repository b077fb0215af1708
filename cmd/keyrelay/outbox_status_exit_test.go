package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestOutboxStatusExitsThreeOnFailedRows: a failed outbox row is an event
// the gateway believes sent that will never be published. `keyrelay outbox
// status` reads the outbox completely and prints its report either way,
// then exits 0 when no row failed and OutboxFailedExitCode (3, as drift's
// "found drift") when some did, so a cron job or a probe notices.
func TestOutboxStatusExitsThreeOnFailedRows(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn, conn := migratedOutbox(t, ctx)
	if _, err := conn.Exec(ctx, `INSERT INTO keyrelay.keyrelay_outbox (payload) VALUES
		('{"id":"ev-1","team_id":"team-a","key_id":"key-1"}'::jsonb),
		('{"id":"ev-2","team_id":"team-a","key_id":"key-2"}'::jsonb)`); err != nil {
		t.Fatal(err)
	}

	// Pending rows only: nothing was given up on.
	out, err := runCommand(ctx, outboxCmd(&globals{}), "status", "--dsn", dsn)
	if err != nil {
		t.Fatalf("pending rows only: %v\n%s", err, out)
	}
	if !strings.Contains(out, "pending 2") || !strings.Contains(out, "failed 0") {
		t.Fatalf("unexpected report:\n%s", out)
	}

	if _, err := conn.Exec(ctx, `UPDATE keyrelay.keyrelay_outbox SET state = 'failed', attempts = 1,
		last_error = 'payload rejected' WHERE payload->>'id' = 'ev-2'`); err != nil {
		t.Fatal(err)
	}
	out, err = runCommand(ctx, outboxCmd(&globals{}), "status", "--dsn", dsn)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != OutboxFailedExitCode || OutboxFailedExitCode != 3 {
		t.Fatalf("with a failed row: error %v (%T), want exit status 3\n%s", err, err, out)
	}
	if !strings.Contains(ee.msg, "1 failed rows") {
		t.Errorf("message %q does not count the failed rows", ee.msg)
	}
	// The report comes first, complete.
	if !strings.Contains(out, "pending 1") || !strings.Contains(out, "failed 1") ||
		!strings.Contains(out, "event_id=ev-2") || !strings.Contains(out, "reason=payload rejected") {
		t.Fatalf("the report is incomplete:\n%s", out)
	}

	if strings.Contains(out, "not listed") {
		t.Fatalf("every failed row is listed, yet the report says some are not:\n%s", out)
	}

	// More failed rows than the report lists: it says how many it left out.
	if _, err := conn.Exec(ctx, `INSERT INTO keyrelay.keyrelay_outbox (payload, state, attempts, last_error)
		SELECT jsonb_build_object('id', 'ev-x' || g, 'team_id', 'team-a', 'key_id', 'key-x' || g), 'failed', 1, 'payload rejected'
		FROM generate_series(1, $1) g`, failedRowsListed+1); err != nil {
		t.Fatal(err)
	}
	out, _ = runCommand(ctx, outboxCmd(&globals{}), "status", "--dsn", dsn)
	if !strings.Contains(out, "... and 2 older failed rows not listed") || strings.Count(out, "failed seq=") != failedRowsListed {
		t.Fatalf("%d failed rows, %d listed: the report does not say how many it left out:\n%s", failedRowsListed+2, failedRowsListed, out)
	}

	// An outbox that cannot be read is still 1, not 3.
	_, err = runCommand(ctx, outboxCmd(&globals{}), "status", "--dsn", dsn, "--schema", "no_such_schema")
	if err == nil || (errors.As(err, &ee) && ee.code != ExitFailed) {
		t.Fatalf("unreadable outbox: error %v, want exit status 1", err)
	}
}
