package kvlist_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/internal/kvlist"
	"github.com/keyrelay/keyrelay/internal/testenv"
)

// TestKeysWhileWritten: Keys lists every live key of the filter while
// keys are being rewritten, where nats.go's ListKeysFiltered alone can end
// without a key whose message was replaced before the watch delivered it.
// Deleted and purged keys, and keys outside the filter, are not listed.
func TestKeysWhileWritten(t *testing.T) {
	_, js := testenv.StartJetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "LIST", History: 1})
	if err != nil {
		t.Fatal(err)
	}
	const keys = 300
	var want []string
	for i := range keys {
		k := fmt.Sprintf("job.%03d", i)
		want = append(want, k)
		if _, err := kv.Put(ctx, k, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"other.a", "other.b"} {
		if _, err := kv.Put(ctx, k, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"job.gone", "job.purged"} {
		if _, err := kv.Put(ctx, k, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Delete(ctx, "job.gone"); err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, "job.purged"); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writes int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			// Newest first, so most writes replace a message the listing
			// has not reached yet.
			if _, err := kv.Put(ctx, want[keys-1-n%keys], []byte(fmt.Sprint(n))); err != nil {
				t.Errorf("put: %v", err)
				return
			}
			writes++
		}
	}()
	const listings = 60
	watchShort := 0
	for range listings {
		got, err := kvlist.Keys(ctx, js, kv, "job.*")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("a listing returned %d keys, want the %d live job keys", len(got), keys)
		}
		// The watch alone, for comparison (not asserted: it misses a key
		// only now and then).
		l, err := kv.ListKeysFiltered(ctx, "job.*")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for range l.Keys() {
			n++
		}
		if n < keys {
			watchShort++
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d listings of %d keys during %d writes; ListKeysFiltered alone was short %d times", listings, keys, writes, watchShort)

	// An empty bucket and a filter matching nothing list nothing.
	got, err := kvlist.Keys(ctx, js, kv, "none.*")
	if err != nil || len(got) != 0 {
		t.Fatalf("Keys(none.*) = %v, %v; want none", got, err)
	}
}
