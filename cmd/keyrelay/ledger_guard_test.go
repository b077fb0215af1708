package main

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/worker"
)

// TestLedgerShowHidesPlaintextValue: with allow_plaintext_values on, the
// ledger keeps a plaintext value as published (its "ct" is the value in
// base64). `keyrelay ledger show` must not print it; a sealed value is
// shown sealed.
func TestLedgerShowHidesPlaintextValue(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, js := startTopology(ctx, t)
	cfg, _, _ := commandConfig(t, srv.URL, "")
	const sentinel = "sk-SENTINEL-ledger-show-plain"
	kv, err := js.KeyValue(ctx, worker.LedgerBucket)
	if err != nil {
		t.Fatal(err)
	}
	e := &worker.LedgerEntry{Generation: 1, EventID: "ev-1", EventType: events.KeyCreated, Status: events.StatusStored,
		Provider: "local", SecretRef: "litellm/team-a/key-1", ProviderVersion: "1",
		Sealed: &events.SealedValue{Alg: events.AlgPlaintext, Ciphertext: []byte(sentinel)}, SealedGen: 1, UpdatedAt: time.Now().UTC()}
	if _, err := worker.NewLedger(kv).Put(ctx, "team-a", "key-1", e, 0); err != nil {
		t.Fatal(err)
	}
	out, err := runCommand(ctx, ledgerCmd(&globals{configPath: cfg}), "show", "--team", "team-a", "--key", "key-1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "litellm/team-a/key-1") {
		t.Fatalf("the entry is not shown:\n%s", out)
	}
	if strings.Contains(out, sentinel) || strings.Contains(out, base64.StdEncoding.EncodeToString([]byte(sentinel))) {
		t.Fatalf("ledger show printed the plaintext value:\n%s", out)
	}
}
