package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/local"
	"github.com/keyrelay/keyrelay/recovery"
	"github.com/keyrelay/keyrelay/worker"
)

// TestDriftCommand runs `keyrelay --config X drift` against a real
// nats-server and a file-backed local store: exit 0 and "no drift" when the
// backend matches the ledger, exit 3 with the row when a value was changed
// by hand, --json for machines, and usage errors for a bad scope.
func TestDriftCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, js := startTopology(ctx, t)
	cfg, storeDir, kr := commandConfig(t, srv.URL, "")
	// The state a worker leaves: the value in the backend, the ledger entry
	// with the sealed value.
	store, err := local.New(local.Config{Path: storeDir})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	lkv, _ := js.KeyValue(ctx, worker.LedgerBucket)
	ledger := worker.NewLedger(lkv)
	owner := providers.Owner{TeamID: "team-a", KeyID: "key-1"}
	const name = "litellm/team-a/key-1"
	if _, err := store.Put(ctx, providers.PutRequest{Name: name, Value: []byte("sk-cli-drift"), IdempotencyKey: "e1", Owner: owner}); err != nil {
		t.Fatal(err)
	}
	sv, err := kr.Seal(ctx, []byte("sk-cli-drift"), events.Binding{TeamID: "team-a", KeyID: "key-1", Generation: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ledger.Put(ctx, "team-a", "key-1", &worker.LedgerEntry{Generation: 1, EventID: "e1", EventType: events.KeyCreated,
		Status: events.StatusStored, Provider: "local", SecretRef: name, Sealed: sv, SealedGen: 1}, 0); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		cmd := driftCmd(&globals{configPath: cfg})
		cmd.SilenceUsage, cmd.SilenceErrors = true, true
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(args)
		err := cmd.ExecuteContext(ctx)
		return out.String(), err
	}
	out, err := run("--all")
	if err != nil || !strings.Contains(out, "no drift") {
		t.Fatalf("clean: %v\n%s", err, out)
	}
	if _, err := store.Put(ctx, providers.PutRequest{Name: name, Value: []byte("sk-edited-by-hand"), IdempotencyKey: "hand", Owner: owner}); err != nil {
		t.Fatal(err)
	}
	out, err = run("--team", "team-a")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != DriftExitCode || !strings.Contains(out, "stale") || !strings.Contains(out, name) {
		t.Fatalf("after a hand edit: %v\n%s", err, out)
	}
	if strings.Contains(out, "sk-edited-by-hand") || strings.Contains(out, "sk-cli-drift") {
		t.Fatal("a value was printed")
	}
	out, err = run("--all", "--json")
	var rep recovery.Report
	if !errors.As(err, &ee) || json.Unmarshal([]byte(out), &rep) != nil || len(rep.Rows) != 1 || rep.Rows[0].Status != recovery.StatusStale {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	// restore --dry-run plans and writes nothing; restore fixes; drift is clean.
	var progress bytes.Buffer
	restore := func(args ...string) (string, error) {
		cmd := restoreCmd(&globals{configPath: cfg})
		cmd.SilenceUsage, cmd.SilenceErrors = true, true
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&progress)
		cmd.SetArgs(args)
		err := cmd.ExecuteContext(ctx)
		return out.String(), err
	}
	if out, err := restore("--all", "--dry-run"); err != nil || !strings.Contains(out, "1 keys would be restored") {
		t.Fatalf("restore --dry-run: %v\n%s", err, out)
	}
	if _, err := run("--all"); !errors.As(err, &ee) || ee.code != DriftExitCode {
		t.Fatalf("the dry run wrote: %v", err)
	}
	if out, err := restore("--all"); err != nil || !strings.Contains(out, "written 1, deleted 0, skipped 0, failed 0") {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	if out, err := run("--all"); err != nil || !strings.Contains(out, "no drift") {
		t.Fatalf("after the restore: %v\n%s", err, out)
	}
	// Not a terminal: progress as JSON lines, the last one complete.
	lines := strings.Split(strings.TrimSpace(progress.String()), "\n")
	var last map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || last["done"] != 1.0 || last["total"] != 1.0 || last["written"] != 1.0 {
		t.Fatalf("progress: %q (%v)", progress.String(), err)
	}
	if sec, err := store.Get(ctx, name, ""); err != nil || string(sec.Value) != "sk-cli-drift" {
		t.Fatalf("restored value: %v", err)
	}
	if out, err := restore("--all"); err != nil || !strings.Contains(out, "nothing to restore") {
		t.Fatalf("second restore: %v\n%s", err, out)
	}
	// --to: a copy into another store (another local directory here).
	rehearsal := filepath.Join(t.TempDir(), "rehearsal")
	if out, err := restore("--all", "--to", "local", "--option", "path="+rehearsal); err != nil || !strings.Contains(out, "written 1,") {
		t.Fatalf("restore --to: %v\n%s", err, out)
	}
	copyStore, err := local.New(local.Config{Path: rehearsal})
	if err != nil {
		t.Fatal(err)
	}
	defer copyStore.Close()
	if sec, err := copyStore.Get(ctx, name, ""); err != nil || string(sec.Value) != "sk-cli-drift" {
		t.Fatalf("copied value: %v", err)
	}
	if out, err := restore("--all", "--to", "local", "--option", "path="+rehearsal); err != nil || !strings.Contains(out, "written 0,") {
		t.Fatalf("second restore --to: %v\n%s", err, out)
	}
	for _, args := range [][]string{{}, {"--all", "--team", "team-a"}, {"--team", "bad.team"}} {
		if _, err := run(args...); err == nil || errors.As(err, &ee) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
}

// startTopology starts a nats-server for the test with keyrelay's streams
// and buckets, and connects to it (closed at the end of the test).
func startTopology(ctx context.Context, t *testing.T) (*testenv.NATS, jetstream.JetStream) {
	t.Helper()
	srv, js := testenv.StartJetStream(t)
	if err := worker.EnsureTopology(ctx, js, worker.TopologyConfig{DuplicateWindow: time.Minute, AckWait: 5 * time.Second, MaxAckPending: 64}); err != nil {
		t.Fatal(err)
	}
	return srv, js
}
