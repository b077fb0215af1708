package worker_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/worker"
)

// TestLedgerAllWhileWritten: Ledger.All lists every key while other keys
// are being written. A KV watch alone can end its listing without a key
// whose message was replaced between the start of the watch and its
// delivery (the replacement counts as a new message, after the listing);
// the tools that scan the ledger (drift, restore, migrate) then skipped
// that key.
func TestLedgerAllWhileWritten(t *testing.T) {
	_, js := testenv.StartJetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: worker.LedgerBucket, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	ledger := worker.NewLedger(kv, js.Conn())
	const keys = 300
	for i := range keys {
		if _, err := ledger.Put(ctx, "team", fmt.Sprintf("key-%03d", i), &worker.LedgerEntry{Generation: 1, EventID: "ev"}, 0); err != nil {
			t.Fatal(err)
		}
	}
	// Rewrite the keys until the listings are done.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writes int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ; n++ {
			// Backwards through the keys: the newest message first, so
			// most writes replace a message the listing has not reached.
			i := keys - 1 - n%keys
			select {
			case <-stop:
				return
			default:
			}
			k := fmt.Sprintf("key-%03d", i)
			e, rev, err := ledger.Get(ctx, "team", k)
			if err != nil || e == nil {
				t.Errorf("get %s: %v", k, err)
				return
			}
			e.Generation++
			if _, err := ledger.Put(ctx, "team", k, e, rev); err != nil {
				t.Errorf("put %s: %v", k, err)
				return
			}
			writes++
		}
	}()
	const listings = 100
	short := 0
	for i := range listings {
		got := map[string]bool{}
		visit := func(key string, _ *worker.LedgerEntry, _ uint64) error {
			got[key] = true
			return nil
		}
		// Every other listing is of the team's keys (migrate, restore,
		// drift, a bulk job's selection): the filtered watch, whose
		// filters nats.go rewrites in place, once left every key it missed
		// out of the listing.
		var err error
		if i%2 == 0 {
			err = ledger.All(ctx, visit)
		} else {
			err = ledger.AllWith(ctx, worker.AllOptions{Teams: []string{"team"}}, visit)
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != keys {
			short++
			t.Errorf("listing %d (team filter %v) returned %d of %d keys", i, i%2 == 1, len(got), keys)
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d listings of %d keys during %d writes; %d short", listings, keys, writes, short)
}
