package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	gcpkms "github.com/keyrelay/keyrelay/providers/google/kms"
	"github.com/keyrelay/keyrelay/providers/google/kms/kmsfake"
	"github.com/keyrelay/keyrelay/worker"
)

// TestKeyringRewrapPartialRuns: `keyring rewrap` exited 0 after passing
// over a ledger entry it cannot use, whose value stays under the older key
// version; and an entry whose value cannot be opened stopped every run at
// it with no way past. Now: a run that leaves any value behind exits 1;
// the stop names --skip KEY, which leaves that entry as it is and rewraps
// the rest.
func TestKeyringRewrapPartialRuns(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
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
	sealer, err := gcpkms.New(ctx, map[string]string{"key_name": key, "endpoint": fake.Addr(), "insecure": "true"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	lkv, _ := js.KeyValue(ctx, worker.LedgerBucket)
	ledger := worker.NewLedger(lkv)
	put := func(k string, tamper bool) *events.SealedValue {
		b := events.Binding{TeamID: "team-a", KeyID: k, Generation: 1}
		sv, err := sealer.Seal(ctx, []byte("sk-rewrap-skip-"+k), b)
		if err != nil {
			t.Fatal(err)
		}
		if tamper { // its wrapped data key no longer decrypts
			sv.EDK = slices.Clone(sv.EDK)
			sv.EDK[len(sv.EDK)/2] ^= 0xff
		}
		_, rev, err := ledger.Get(ctx, "team-a", k)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ledger.Put(ctx, "team-a", k, &worker.LedgerEntry{Generation: 1, EventID: "e" + k, Status: events.StatusStored,
			Sealed: sv, SealedGen: 1}, rev); err != nil {
			t.Fatal(err)
		}
		return sv
	}
	old := map[string]*events.SealedValue{}
	for i := 1; i <= 4; i++ {
		k := fmt.Sprintf("key-%d", i)
		old[k] = put(k, false)
	}
	// An entry that cannot be used at all (not JSON).
	if _, err := lkv.Put(ctx, worker.LedgerKey("team-a", "key-0-corrupt"), []byte("{not json")); err != nil {
		t.Fatal(err)
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
	rewrap := func(args ...string) (string, error) {
		return runCommand(ctx, keyringCmd(&globals{configPath: cfg}), append([]string{"rewrap", "--cursor", cursor}, args...)...)
	}
	moved := func(k string) bool {
		e, _, err := ledger.Get(ctx, "team-a", k)
		if err != nil {
			t.Fatal(err)
		}
		return !bytes.Equal(e.Sealed.EDK, old[k].EDK)
	}

	// 1. The unusable entry is passed over, the others rewrapped: exit 1.
	out, err := rewrap()
	wantPartialFailure(t, "rewrap past an unusable entry", err, out)
	if !strings.Contains(err.Error(), "1 unusable ledger entries") {
		t.Fatalf("the error does not count the unusable entry: %v", err)
	}
	for i := 1; i <= 4; i++ {
		if k := fmt.Sprintf("key-%d", i); !moved(k) {
			t.Errorf("%s not rewrapped", k)
		}
	}

	// 2. An entry that does not open stops the run at it, naming the way past.
	if err := lkv.Purge(ctx, worker.LedgerKey("team-a", "key-0-corrupt")); err != nil {
		t.Fatal(err)
	}
	if _, err := fake.Rotate(key); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 4; i++ {
		k := fmt.Sprintf("key-%d", i)
		old[k] = put(k, k == "key-2")
	}
	bad := worker.LedgerKey("team-a", "key-2")
	for run := 0; run < 2; run++ { // a second run stops at it again
		out, err = rewrap()
		if err == nil || !strings.Contains(err.Error(), "--skip "+bad) {
			t.Fatalf("run %d: %v, want a stop naming --skip %s\n%s", run, err, bad, out)
		}
		if b, _ := os.ReadFile(cursor); strings.TrimSpace(string(b)) != worker.LedgerKey("team-a", "key-1") {
			t.Fatalf("run %d: cursor %q, want the key before %s", run, b, bad)
		}
	}
	if moved("key-3") || moved("key-4") {
		t.Fatal("keys after the stop were rewrapped")
	}

	// 3. --skip leaves it as it is and rewraps the rest; still exit 1.
	out, err = rewrap("--skip", bad)
	wantPartialFailure(t, "rewrap --skip", err, out)
	if !strings.Contains(err.Error(), "1 named by --skip") {
		t.Fatalf("the error does not count the skipped entry: %v", err)
	}
	// The summary and the skipped entry are written to the command's own
	// output (an embedding caller's writers), not the process's.
	if !strings.Contains(out, "rewrapped ") || !strings.Contains(out, "skipped "+bad+" (--skip)") {
		t.Fatalf("the command's output lacks the summary or the skipped entry:\n%s", out)
	}
	if moved("key-2") || !moved("key-3") || !moved("key-4") {
		t.Fatalf("after --skip: key-2 moved %v, key-3 %v, key-4 %v", moved("key-2"), moved("key-3"), moved("key-4"))
	}
	if _, err := os.Stat(cursor); !os.IsNotExist(err) {
		t.Errorf("cursor file left after a complete run: %v", err)
	}
	if strings.Contains(out+err.Error(), "sk-rewrap-skip") {
		t.Fatal("a value was printed")
	}

	// 4. A --skip run stopped past the skipped entry (here by the next
	// entry that does not open), then resumed without --skip once that
	// cause is fixed: the resumed run never meets the skipped entry, and
	// used to exit 0 with its value still under the older key version.
	if _, err := fake.Rotate(key); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 4; i++ {
		k := fmt.Sprintf("key-%d", i)
		old[k] = put(k, k == "key-2" || k == "key-3")
	}
	bad3 := worker.LedgerKey("team-a", "key-3")
	out, err = rewrap("--skip", bad)
	if err == nil || !strings.Contains(err.Error(), "--skip "+bad3) {
		t.Fatalf("--skip %s: %v, want a stop at %s\n%s", bad, err, bad3, out)
	}
	old["key-3"] = put("key-3", false) // the cause fixed
	out, err = rewrap()
	wantPartialFailure(t, "a resumed run after --skip", err, out)
	if !strings.Contains(err.Error(), "1 named by --skip") || !strings.Contains(out, "skipped "+bad+" (--skip)") {
		t.Fatalf("the resumed run does not report the entry its first part skipped: %v\n%s", err, out)
	}
	if moved("key-2") || !moved("key-3") || !moved("key-4") {
		t.Fatalf("resumed: key-2 moved %v, key-3 %v, key-4 %v", moved("key-2"), moved("key-3"), moved("key-4"))
	}
}

// TestRewrapCursorFile: the cursor file round-trips the keys passed over
// with --skip, reads a file written before those lines existed, and
// refuses a damaged one instead of resuming from a wrong place.
func TestRewrapCursorFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c")
	if err := writeCursor(path, "team-a.k5", []string{"team-a.k2", "team-a.k4"}); err != nil {
		t.Fatal(err)
	}
	cur, skipped, err := readCursor(path)
	if err != nil || cur != "team-a.k5" || !slices.Equal(skipped, []string{"team-a.k2", "team-a.k4"}) {
		t.Fatalf("readCursor = %q, %q, %v", cur, skipped, err)
	}
	tests := map[string]struct {
		file    string
		cur     string
		wantErr bool
	}{
		"one line, as before":      {file: "team-a.k5\n", cur: "team-a.k5"},
		"no file":                  {},
		"not a skipped line":       {file: "team-a.k5\ngarbage\n", wantErr: true},
		"skipped after the cursor": {file: "team-a.k5\nskipped team-a.k9\n", wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "c")
			if tc.file != "" {
				if err := os.WriteFile(p, []byte(tc.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cur, skipped, err := readCursor(p)
			if (err != nil) != tc.wantErr || cur != tc.cur || len(skipped) != 0 {
				t.Fatalf("readCursor = %q, %q, %v", cur, skipped, err)
			}
		})
	}
}
