package worker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/worker"
)

// TestLedgerAllSkipsUnusableEntries: an entry that does not decode and a
// KV key that is not <team>.<key> no longer stop Ledger.All: every good
// entry is visited, and the others are reported with a reason that never
// quotes the value. With Teams, other teams' entries are not decoded (nor
// reported); without a Skipped callback All returns a
// *SkippedEntriesError after the walk.
func TestLedgerAllSkipsUnusableEntries(t *testing.T) {
	_, js := testenv.StartJetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: worker.LedgerBucket, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	ledger := worker.NewLedger(kv, js.Conn())
	for _, tk := range [][2]string{{"team-a", "key-1"}, {"team-a", "key-2"}, {"team-x", "key-1"}} {
		if _, err := ledger.Put(ctx, tk[0], tk[1], &worker.LedgerEntry{Generation: 1, EventID: "ev"}, 0); err != nil {
			t.Fatal(err)
		}
	}
	const secret = "SENTINEL-not-json"
	if _, err := kv.Put(ctx, worker.LedgerKey("team-x", "key-bad"), []byte(`{"generation":"`+secret)); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "no-dot", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}

	var seen []string
	var skipped []worker.SkippedEntry
	err = ledger.AllWith(ctx, worker.AllOptions{Skipped: func(s worker.SkippedEntry) { skipped = append(skipped, s) }},
		func(k string, _ *worker.LedgerEntry, _ uint64) error { seen = append(seen, k); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 3 || len(skipped) != 2 {
		t.Fatalf("visited %v, skipped %+v", seen, skipped)
	}
	for _, s := range skipped {
		if strings.Contains(s.Reason, "SENTINEL") || s.Reason == "" {
			t.Errorf("reason %q", s.Reason)
		}
	}

	// Scoped to team-a: the corrupt team-x entry is never decoded.
	seen, skipped = nil, nil
	err = ledger.AllWith(ctx, worker.AllOptions{Teams: []string{"team-a"}, Skipped: func(s worker.SkippedEntry) { skipped = append(skipped, s) }},
		func(k string, _ *worker.LedgerEntry, _ uint64) error { seen = append(seen, k); return nil })
	if err != nil || len(seen) != 2 || len(skipped) != 0 {
		t.Fatalf("team-a: visited %v, skipped %+v, %v", seen, skipped, err)
	}

	// All without a callback: every good entry, then the error.
	seen = nil
	err = ledger.All(ctx, func(k string, _ *worker.LedgerEntry, _ uint64) error { seen = append(seen, k); return nil })
	var se *worker.SkippedEntriesError
	if len(seen) != 3 || !errors.As(err, &se) || len(se.Entries) != 2 || !errors.Is(err, worker.ErrEntriesSkipped) || strings.Contains(err.Error(), "SENTINEL") {
		t.Fatalf("All: visited %v, err %v", seen, err)
	}
}
