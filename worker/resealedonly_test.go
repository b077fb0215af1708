package worker

import (
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
)

// resealedOnly tells a keyring rewrap's change (the sealed value alone,
// same sealed generation) from every other change of an entry.
func TestResealedOnly(t *testing.T) {
	now := time.Date(2026, 12, 6, 21, 0, 0, 0, time.UTC)
	base := func() *LedgerEntry {
		return &LedgerEntry{Generation: 2, EventID: "ev-2", EventType: events.KeyRotated, Status: events.StatusRotated, StreamSeq: 9,
			Provider: "local", SecretRef: "litellm/t/k", ProviderVersion: "v2", Metadata: map[string]string{"a": "1", "b": "2"},
			Sealed:    &events.SealedValue{Alg: events.AlgA256GCM, KID: "k1", Nonce: []byte("nonce-1-----"), Ciphertext: []byte("ct-1")},
			SealedGen: 2, UpdatedAt: now, Claim: &Claim{EventID: "ev-3", Generation: 3, Worker: "w1", Until: now.Add(time.Minute)}}
	}
	cases := []struct {
		name   string
		change func(e *LedgerEntry)
		want   bool
	}{
		{"unchanged", func(*LedgerEntry) {}, true},
		{"re-sealed", func(e *LedgerEntry) {
			e.Sealed = &events.SealedValue{Alg: events.AlgA256GCM, KID: "k2", Nonce: []byte("nonce-2-----"), Ciphertext: []byte("ct-2")}
		}, true},
		{"metadata in another map order", func(e *LedgerEntry) { e.Metadata = map[string]string{"b": "2", "a": "1"} }, true},
		{"another sealed generation", func(e *LedgerEntry) { e.SealedGen = 3 }, false},
		{"sealed value dropped", func(e *LedgerEntry) { e.Sealed = nil }, false},
		{"claim taken over", func(e *LedgerEntry) { e.Claim = &Claim{EventID: "ev-4", Generation: 4, Worker: "w2", Until: now} }, false},
		{"claim released", func(e *LedgerEntry) { e.Claim = nil }, false},
		{"committed", func(e *LedgerEntry) { e.Generation, e.EventID = 3, "ev-3" }, false},
		{"retry recorded", func(e *LedgerEntry) { e.Retry = &RetryRecord{Failures: 1} }, false},
		{"alias", func(e *LedgerEntry) { e.Alias = "x" }, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := base()
			c.change(b)
			if got := resealedOnly(base(), b); got != c.want {
				t.Fatalf("resealedOnly = %v, want %v", got, c.want)
			}
		})
	}
}
