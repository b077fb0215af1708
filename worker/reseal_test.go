package worker_test

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/worker"
)

// A keyring rewrap (`keyrelay keyring rewrap`) re-seals the ledger's
// values without claiming keys. A commit that loses its compare-and-set
// to it is written over it (Ledger.PutOver) instead of being handed back:
// the provider is written once for the event (a redelivery would write it
// again, a second version where there is no idempotency key, as on
// Conjur), and the re-sealed value is kept unless the event brought a
// value of its own.
func TestCommitOverAKeyringRewrap(t *testing.T) {
	for _, mode := range []string{worker.OwnershipClaims, worker.OwnershipExclusive} {
		t.Run(mode, func(t *testing.T) {
			pw := &putWindows{}
			b := setup(t, setupOptions{wrap: map[string]func(providers.Provider) providers.Provider{
				"local": func(p providers.Provider) providers.Provider { pw.Provider = p; return pw },
			}})
			if mode == worker.OwnershipExclusive {
				b.exclusiveWorker(nil)
			} else {
				b.startWorker(nil)
			}
			const team, key = "team-r", "key-r"
			b.publish(b.keyEvent(events.KeyCreated, team, key, 1, "sk-gen-1"))
			b.confirmations(1, 30*time.Second)

			kv, err := b.js.KeyValue(b.ctx, worker.LedgerBucket)
			if err != nil {
				t.Fatal(err)
			}
			ledger := worker.NewLedger(kv)
			// reseal does what the rewrap does to one entry: the value
			// opened and sealed again (a new nonce), compare-and-set.
			var resealed atomic.Pointer[events.SealedValue]
			reseal := func() {
				e, rev, err := ledger.Get(b.ctx, team, key)
				if err != nil || e == nil || e.Sealed == nil {
					t.Errorf("entry to re-seal: %v %v", e, err)
					return
				}
				bd := events.Binding{TeamID: team, KeyID: key, Generation: e.SealedGen}
				plain, err := b.kr.Open(b.ctx, e.Sealed, bd)
				if err != nil {
					t.Error(err)
					return
				}
				sv, err := b.kr.Seal(b.ctx, plain, bd)
				if err != nil {
					t.Error(err)
					return
				}
				e.Sealed = sv
				if _, err := ledger.Put(b.ctx, team, key, e, rev); err != nil {
					t.Errorf("re-seal: %v", err)
					return
				}
				resealed.Store(sv)
			}
			var target atomic.Value
			var hooked atomic.Int32
			restore := worker.SetCommitHook(func(id string) error {
				if id == target.Load() && hooked.Add(1) == 1 {
					reseal()
				}
				return nil
			})
			defer restore()

			// A rotation: its own value is committed over the re-sealed one.
			r2 := b.keyEvent(events.KeyRotated, team, key, 2, "sk-gen-2")
			target.Store(r2.ID)
			b.publish(r2)
			cs := byEventID(b.confirmations(2, 30*time.Second))
			if c := cs[r2.ID]; c == nil || c.Status != events.StatusRotated {
				t.Fatalf("rotation: %+v", c)
			}
			e := b.waitEntry(team, key, func(e *worker.LedgerEntry) bool { return e.Generation == 2 && e.Claim == nil })
			if hooked.Load() == 0 {
				t.Fatal("the commit hook never ran")
			}
			if n := len(pw.all()); n != 2 {
				t.Fatalf("%d Puts for a create and a rotation, want 2: the rotation was written again", n)
			}
			if e.SealedGen != 2 || bytes.Equal(e.Sealed.Ciphertext, resealed.Load().Ciphertext) {
				t.Fatalf("the rotation's value was not committed: sealed generation %d", e.SealedGen)
			}

			// A key.updated (tags only): the re-sealed value stays.
			hooked.Store(0)
			u3 := &events.Event{SpecVersion: events.SpecVersion, ID: "upd-3-" + mode, Type: events.KeyUpdated, Time: time.Now().UTC(),
				TeamID: team, KeyID: key, Generation: 3, Data: []byte(`{"metadata":{"owner":"ml"}}`)}
			target.Store(u3.ID)
			b.publish(u3)
			cs = byEventID(b.confirmations(3, 30*time.Second))
			if c := cs[u3.ID]; c == nil || c.Status != events.StatusStored {
				t.Fatalf("update: %+v", c)
			}
			e = b.waitEntry(team, key, func(e *worker.LedgerEntry) bool { return e.MetaGeneration == 3 && e.Claim == nil })
			if hooked.Load() == 0 {
				t.Fatal("the commit hook never ran for the update")
			}
			if e.SealedGen != 2 || !bytes.Equal(e.Sealed.Ciphertext, resealed.Load().Ciphertext) {
				t.Fatal("the update's commit put the value back as it was before the rewrap")
			}
			if got := b.value("local", name(team, key)); got != "sk-gen-2" {
				t.Fatalf("value %q, want sk-gen-2", got)
			}
			if n := len(pw.all()); n != 2 {
				t.Fatalf("%d Puts, want 2", n)
			}
		})
	}
}

// waitEntry waits for the key's ledger entry to satisfy ok and returns it.
func (b *bundle) waitEntry(team, key string, ok func(*worker.LedgerEntry) bool) *worker.LedgerEntry {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	for {
		e, _, err := b.ledgerGet(team, key)
		if err == nil && e != nil && ok(e) {
			return e
		}
		select {
		case <-ctx.Done():
			b.t.Fatalf("ledger entry %s/%s: %+v, %v", team, key, e, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
