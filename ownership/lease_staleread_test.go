package ownership_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/internal/testenv"
)

// staleKV stands for a holder's view of a replicated bucket whose direct
// gets are answered by a replica that lags (a follower, or a leader that
// has not yet learned it was deposed: nats-server answers KV gets from any
// replica unless read-after-write is asked for). failUpdates makes its
// writes fail without being stored (NATS trouble on the holder's side).
type staleKV struct {
	jetstream.KeyValue
	frozen      atomic.Pointer[jetstream.KeyValueEntry]
	failUpdates atomic.Bool
}

func (k *staleKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	if e := k.frozen.Load(); e != nil {
		return *e, nil
	}
	return k.KeyValue.Get(ctx, key)
}

func (k *staleKV) Update(ctx context.Context, key string, value []byte, last uint64) (uint64, error) {
	if k.failUpdates.Load() {
		return 0, context.DeadlineExceeded
	}
	return k.KeyValue.Update(ctx, key, value, last)
}

// A holder whose renewals failed long enough for another process to take
// the lease over must not adopt its own old record, read from a lagging
// replica at the revision it last wrote, as a renewal of its own whose
// reply was lost: the compare-and-set's refusal says the record moved on.
// Before, it did, and acted for 0.9 TTL next to the new holder.
func TestLeaseStaleReadOfOwnRecordIsNotAdopted(t *testing.T) {
	_, js := testenv.StartJetStream(t)
	real := bucket(t, js, 1)
	kv := &staleKV{KeyValue: real}
	w := newWindows()
	a := start(t, kv, "a", w, testTTL)
	waitHeld(t, 10*testTTL, a)
	e, err := real.Get(context.Background(), "writer")
	if err != nil {
		t.Fatal(err)
	}
	kv.frozen.Store(&e)
	kv.failUpdates.Store(true)
	b := start(t, real, "b", w, testTTL)
	waitHeld(t, 10*testTTL, b)
	kv.failUpdates.Store(false)
	end := time.Now().Add(3 * testTTL)
	for time.Now().Before(end) {
		_, _, aok := a.lease.Held()
		_, _, bok := b.lease.Held()
		if aok && bok {
			t.Fatal("a holds the lease again next to b, from a stale read of its own old record")
		}
		time.Sleep(2 * time.Millisecond)
	}
	w.check(t)
}
