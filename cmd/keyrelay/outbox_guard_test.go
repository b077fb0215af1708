package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestOutboxStatusFiltersTerminalEscapes: `keyrelay outbox status` prints
// each failed row's reason as the database holds it; control sequences in
// it must not reach the terminal raw.
func TestOutboxStatusFiltersTerminalEscapes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn, conn := migratedOutbox(t, ctx)
	if _, err := conn.Exec(ctx, `INSERT INTO keyrelay.keyrelay_outbox (payload) VALUES ('{"id":"ev-1","team_id":"team-a","key_id":"key-1"}'::jsonb)`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `UPDATE keyrelay.keyrelay_outbox SET state = 'failed', last_error = $1`, "refused by the stream"+hostile); err != nil {
		t.Fatal(err)
	}
	out, err := runCommand(ctx, outboxCmd(&globals{}), "status", "--dsn", dsn)
	var ee *exitError // a failed row: exit status 3 after the report
	if !errors.As(err, &ee) || ee.code != OutboxFailedExitCode {
		t.Fatal(err)
	}
	if !strings.Contains(out, "refused by the stream") {
		t.Fatalf("the failed row is not listed:\n%q", out)
	}
	if hasControl(out) {
		t.Fatalf("outbox status printed control characters:\n%q", out)
	}
}
