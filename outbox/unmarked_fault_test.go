package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/internal/testenv"
)

// A relay that got the PubAck but could not mark the row (PostgreSQL
// down or stuck for longer than the marking allows) remembers it and
// marks it once PostgreSQL answers again, instead of publishing it again:
// after an outage longer than the stream's duplicate window the copy
// would be stored a second time. Not parallel: the row lock makes a
// writing transaction, which holds back every relay in the cluster (the
// xmin horizon).
func TestAckedRowNotRepublishedAfterMarkingFailed(t *testing.T) {
	db := migratedDB(t)
	_, js := startNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	shortDuplicateWindow(ctx, t, js)
	conn := connect(t, dsnFor(db))
	ev := updated("t1", "k1", 0, 1)
	enqueue(t, conn, ev)

	// The row cannot be marked (its lock is held) for longer than the
	// relay's marking waits; reading it is not blocked.
	locker := connect(t, dsnFor(db))
	tx, err := locker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1 FROM keyrelay.keyrelay_outbox FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	startRelay(t, testConfig(dsnFor(db)), js, nil)
	testenv.Eventually(t, 10*time.Second, "the row published", func() bool { return len(readStream(t, js)) > 0 })
	time.Sleep(13 * time.Second) // the marking gave up; the duplicate window is long past
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the row marked sent", func() bool { return count(t, conn, "state = 'sent'") == 1 })
	if got := readStream(t, js); len(got) != 1 {
		t.Fatalf("stream holds %d copies of the event, want 1", len(got))
	}
}
