package worker_test

import (
	"testing"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/worker"
)

// TestLedgerGetFromLeader: the leader's read gives what Get gives, on one
// server and on a 3-node cluster: nothing for a key never written or
// deleted, and the entry with its revision otherwise (so a Put at that
// revision succeeds).
func TestLedgerGetFromLeader(t *testing.T) {
	for _, cluster := range []bool{false, true} {
		name := "single"
		if cluster {
			name = "cluster"
		}
		t.Run(name, func(t *testing.T) {
			b := setup(t, setupOptions{cluster: cluster})
			kv, err := b.js.KeyValue(b.ctx, worker.LedgerBucket)
			if err != nil {
				t.Fatal(err)
			}
			l := worker.NewLedger(kv, b.nc)
			if e, rev, err := l.GetFromLeader(b.ctx, "team-l", "never"); err != nil || e != nil || rev != 0 {
				t.Fatalf("a key never written: %+v, %d, %v", e, rev, err)
			}
			want := &worker.LedgerEntry{Generation: 7, EventID: "ev-7", EventType: events.KeyCreated, Status: events.StatusStored,
				Provider: "local", SecretRef: "litellm/team-l/key-l", ProviderVersion: "3", Metadata: map[string]string{"k": "v"}}
			rev, err := l.Put(b.ctx, "team-l", "key-l", want, 0)
			if err != nil {
				t.Fatal(err)
			}
			got, grev, err := l.GetFromLeader(b.ctx, "team-l", "key-l")
			if err != nil || got == nil || grev != rev || got.Generation != 7 || got.EventID != "ev-7" || got.ProviderVersion != "3" || got.Metadata["k"] != "v" {
				t.Fatalf("a key written at revision %d: %+v at %d, %v", rev, got, grev, err)
			}
			_, drev, err := l.Get(b.ctx, "team-l", "key-l")
			if err != nil || drev != grev {
				t.Fatalf("Get: revision %d, %v; GetFromLeader %d", drev, err, grev)
			}
			got.Generation = 8
			if _, err := l.Put(b.ctx, "team-l", "key-l", got, grev); err != nil {
				t.Fatalf("Put at the leader's revision: %v", err)
			}
			if err := kv.Delete(b.ctx, worker.LedgerKey("team-l", "key-l")); err != nil {
				t.Fatal(err)
			}
			if e, rev, err := l.GetFromLeader(b.ctx, "team-l", "key-l"); err != nil || e != nil || rev != 0 {
				t.Fatalf("a deleted key: %+v, %d, %v", e, rev, err)
			}
		})
	}
}
