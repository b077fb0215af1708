package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	gcpkms "github.com/keyrelay/keyrelay/providers/google/kms"
	"github.com/keyrelay/keyrelay/providers/google/kms/kmsfake"
	"github.com/keyrelay/keyrelay/worker"
)

// TestKeyringRewrap: `keyrelay keyring rewrap` moves the data keys of the
// ledger's sealed values to the newest Cloud KMS key version (the fake),
// leaving their ciphertext as it was, resumes from its cursor, and never
// prints a value.
func TestKeyringRewrap(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, js := startTopology(ctx, t)
	fake, err := kmsfake.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	const key = "projects/p/locations/global/keyRings/r/cryptoKeys/keyrelay"
	if _, err := fake.CreateKey(key); err != nil {
		t.Fatal(err)
	}
	opts := map[string]string{"key_name": key, "endpoint": fake.Addr(), "insecure": "true"}
	sealer, err := gcpkms.New(ctx, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	lkv, _ := js.KeyValue(ctx, worker.LedgerBucket)
	ledger := worker.NewLedger(lkv)
	old := map[string]*events.SealedValue{}
	for i := 0; i < 5; i++ {
		team, k := fmt.Sprintf("team-%d", i%2), fmt.Sprintf("key-%d", i)
		b := events.Binding{TeamID: team, KeyID: k, Generation: uint64(i + 1)}
		sv, err := sealer.Seal(ctx, []byte("sk-rewrap-secret-"+k), b)
		if err != nil {
			t.Fatal(err)
		}
		old[worker.LedgerKey(team, k)] = sv
		if _, err := ledger.Put(ctx, team, k, &worker.LedgerEntry{Generation: b.Generation, EventID: "e" + k, Status: events.StatusStored,
			Sealed: sv, SealedGen: b.Generation, Alias: "alias-" + k}, 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := fake.Rotate(key); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg, cursor := filepath.Join(dir, "keyrelay.yaml"), filepath.Join(dir, "rewrap.cursor")
	yaml := "keyrelay:\n  nats:\n    url: " + srv.URL + "\n  sealing:\n    keyring_file: " + filepath.Join(dir, "none.json") +
		"\n    gcp_kms:\n      key_name: " + key + "\n      endpoint: " + fake.Addr() + "\n      insecure: \"true\"\n  log:\n    level: error\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	// A cursor left by an interrupted run: the first two keys are done.
	if err := os.WriteFile(cursor, []byte(worker.LedgerKey("team-0", "key-2")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := keyringCmd(&globals{configPath: cfg})
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs([]string{"rewrap", "--cursor", cursor})
	if err := cmd.ExecuteContext(ctx); err != nil {
		t.Fatalf("rewrap: %v\n%s", err, out.String())
	}
	if strings.Contains(out.String(), "sk-rewrap-secret") {
		t.Fatal("a value was printed")
	}
	if _, err := os.Stat(cursor); !os.IsNotExist(err) {
		t.Errorf("cursor file left after a complete run: %v", err)
	}
	moved := 0
	for k, sv := range old {
		team, kk, _ := worker.ParseLedgerKey(k)
		e, _, err := ledger.Get(ctx, team, kk)
		if err != nil {
			t.Fatal(err)
		}
		if e.Alias != "alias-"+kk || e.EventID != "e"+kk {
			t.Errorf("%s: the entry's other fields changed: %+v", k, e)
		}
		if !bytes.Equal(e.Sealed.Ciphertext, sv.Ciphertext) || e.Sealed.KID != sv.KID {
			t.Errorf("%s: ciphertext or kid changed", k)
		}
		if !bytes.Equal(e.Sealed.EDK, sv.EDK) {
			moved++
		}
		pt, err := sealer.Open(ctx, e.Sealed, events.Binding{TeamID: team, KeyID: kk, Generation: e.SealedGen})
		if err != nil || string(pt) != "sk-rewrap-secret-"+kk {
			t.Errorf("%s: %v", k, err)
		}
	}
	// Keys after team-0.key-2 in byte order: team-0.key-4, team-1.key-1, team-1.key-3.
	if moved != 3 {
		t.Errorf("%d values rewrapped, want the 3 after the cursor", moved)
	}
}
