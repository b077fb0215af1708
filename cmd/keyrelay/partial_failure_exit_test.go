package main

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/jobs"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/local"
	"github.com/keyrelay/keyrelay/worker"
)

// wantPartialFailure fails the test unless err is the exit status
// ExitFailed of a command that did part of its work.
func wantPartialFailure(t *testing.T, what string, err error, out string) {
	t.Helper()
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != ExitFailed {
		t.Fatalf("%s: %v, want exit status %d\n%s", what, err, ExitFailed, out)
	}
}

// TestStatusExitsNonZeroWhenAPartCannotBeRead: `keyrelay status` shows
// every part it can read and the error in place of the others; it used to
// exit 0 then, so a script took a partial report for a complete one.
func TestStatusExitsNonZeroWhenAPartCannotBeRead(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, _ := startTopology(ctx, t)
	cfg, _, _ := commandConfig(t, srv.URL, "")
	if out, err := runCommand(ctx, statusCmd(&globals{configPath: cfg})); err != nil {
		t.Fatalf("every part readable: %v\n%s", err, out)
	}
	// No PostgreSQL listens on port 1: the outbox part cannot be read.
	const dsn = "postgres://keyrelay:pw-not-shown@127.0.0.1:1/keyrelay?connect_timeout=2"
	out, err := runCommand(ctx, statusCmd(&globals{configPath: cfg}), "--outbox-dsn", dsn)
	wantPartialFailure(t, "status, outbox unreadable", err, out)
	if !strings.Contains(out, "OUTBOX: not read") || !strings.Contains(out, "STREAM") || !strings.Contains(err.Error(), "outbox") {
		t.Fatalf("the report or the error does not say what was not read: %v\n%s", err, out)
	}
	out, err = runCommand(ctx, statusCmd(&globals{configPath: cfg}), "--json", "--outbox-dsn", dsn)
	wantPartialFailure(t, "status --json, outbox unreadable", err, out)
	var r statusReport
	if jerr := json.Unmarshal([]byte(out), &r); jerr != nil || r.Errors["outbox"] == "" || len(r.Streams) == 0 {
		t.Fatalf("--json report: %v\n%s", jerr, out)
	}
	if strings.Contains(out+err.Error(), "pw-not-shown") {
		t.Fatal("the DSN's password was printed")
	}
}

// TestRestoreUntilIncompleteExitsNonZero: a point-in-time rebuild whose
// events the stream's retention dropped printed "INCOMPLETE: see the
// warnings" and exited 0.
func TestRestoreUntilIncompleteExitsNonZero(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, js := startTopology(ctx, t)
	cfg, _, kr := commandConfig(t, srv.URL, "")
	for _, key := range []string{"key-1", "key-2", "key-3"} {
		ev, err := events.NewKeyEvent(ctx, kr, events.KeyCreated, "team-a", key, 1, []byte("sk-pit-"+key), events.KeyData{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := client.NewPublisher(js).Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	target := filepath.Join(t.TempDir(), "rebuilt")
	args := []string{"--all", "--until", "0s", "--to", "local", "--option", "path=" + target}
	// The whole stream: complete, exit 0.
	if out, err := runCommand(ctx, restoreCmd(&globals{configPath: cfg}), append(args, "--dry-run")...); err != nil || strings.Contains(out, "INCOMPLETE") {
		t.Fatalf("complete rebuild: %v\n%s", err, out)
	}
	s, err := js.Stream(ctx, worker.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSequence(2)); err != nil { // what max_age would drop
		t.Fatal(err)
	}
	for _, extra := range [][]string{{"--dry-run"}, {"--dry-run", "--json"}, nil} {
		out, err := runCommand(ctx, restoreCmd(&globals{configPath: cfg}), append(args, extra...)...)
		wantPartialFailure(t, strings.Join(append([]string{"restore --until, event 1 gone"}, extra...), " "), err, out)
		if !strings.Contains(out, "incomplete") && !strings.Contains(out, "INCOMPLETE") {
			t.Fatalf("%v: the report does not say it is incomplete:\n%s", extra, out)
		}
		if strings.Contains(out, "sk-pit-") {
			t.Fatal("a value was printed")
		}
	}
}

// TestLedgerSkippedEntriesFailTheCommand: a ledger entry that cannot be
// used is printed and passed over, and its key is not handled; drift,
// restore and rotate then exited 0 when the other keys were fine.
func TestLedgerSkippedEntriesFailTheCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, js := startTopology(ctx, t)
	cfg, storeDir, kr := commandConfig(t, srv.URL, "")
	store, err := local.New(local.Config{Path: storeDir})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	lkv, _ := js.KeyValue(ctx, worker.LedgerBucket)
	const name = "litellm/team-a/key-1"
	if _, err := store.Put(ctx, providers.PutRequest{Name: name, Value: []byte("sk-cli-skipped"), IdempotencyKey: "e1",
		Owner: providers.Owner{TeamID: "team-a", KeyID: "key-1"}}); err != nil {
		t.Fatal(err)
	}
	sv, err := kr.Seal(ctx, []byte("sk-cli-skipped"), events.Binding{TeamID: "team-a", KeyID: "key-1", Generation: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := worker.NewLedger(lkv).Put(ctx, "team-a", "key-1", &worker.LedgerEntry{Generation: 1, EventID: "e1", EventType: events.KeyCreated,
		Status: events.StatusStored, Provider: "local", SecretRef: name, Sealed: sv, SealedGen: 1}, 0); err != nil {
		t.Fatal(err)
	}
	g := &globals{configPath: cfg}
	// The good key alone: drift is content.
	if out, err := runCommand(ctx, driftCmd(g), "--all"); err != nil || !strings.Contains(out, "no drift") {
		t.Fatalf("drift, clean: %v\n%s", err, out)
	}
	// A corrupt entry of the same team.
	if _, err := lkv.Put(ctx, worker.LedgerKey("team-a", "key-bad"), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what string
		run  func() (string, error)
	}{
		{"drift", func() (string, error) { return runCommand(ctx, driftCmd(g), "--all") }},
		{"drift --json", func() (string, error) { return runCommand(ctx, driftCmd(g), "--all", "--json") }},
		{"restore --dry-run", func() (string, error) { return runCommand(ctx, restoreCmd(g), "--all", "--dry-run") }},
		{"restore", func() (string, error) { return runCommand(ctx, restoreCmd(g), "--all") }},
		{"restore --to", func() (string, error) {
			return runCommand(ctx, restoreCmd(g), "--all", "--to", "local", "--option", "path="+filepath.Join(t.TempDir(), "copy"))
		}},
		{"rotate --dry-run", func() (string, error) { return runCommand(ctx, rotateCmd(g), "--team", "team-a", "--dry-run") }},
		{"migrate --dry-run", func() (string, error) {
			return runCommand(ctx, migrateCmd(g), "--team", "team-a", "--to", "local", "--dry-run")
		}},
		{"migrate --cleanup", func() (string, error) { return runCommand(ctx, migrateCmd(g), "--team", "team-a", "--cleanup") }},
		{"migrate --cleanup --json", func() (string, error) {
			return runCommand(ctx, migrateCmd(g), "--team", "team-a", "--cleanup", "--json")
		}},
	} {
		t.Run(c.what, func(t *testing.T) {
			out, err := c.run()
			wantPartialFailure(t, c.what+" with a corrupt ledger entry", err, out)
			if !strings.Contains(err.Error(), "1 unusable ledger entry was skipped") {
				t.Fatalf("the error does not say why: %v\n%s", err, out)
			}
			if strings.Contains(out, "sk-cli-skipped") {
				t.Fatal("a value was printed")
			}
		})
	}
	// --strict still refuses before any work.
	if out, err := runCommand(ctx, driftCmd(g), "--all", "--strict"); err == nil {
		t.Fatalf("drift --strict: no error\n%s", out)
	}
}

// TestRotateCancelledWhilePublishingExitsNonZero: a job cancelled (from
// elsewhere) while `rotate` publishes it leaves the rest of its keys not
// rotated; rotate said so on stderr and exited 0.
func TestRotateCancelledWhilePublishingExitsNonZero(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, js := startTopology(ctx, t)
	cfg, _, kr := commandConfig(t, srv.URL, "")
	lkv, _ := js.KeyValue(ctx, worker.LedgerBucket)
	ledger := worker.NewLedger(lkv)
	for i := 0; i < 20; i++ {
		k := "key-" + string(rune('a'+i))
		sv, err := kr.Seal(ctx, []byte("sk-cancel-"+k), events.Binding{TeamID: "team-a", KeyID: k, Generation: 1})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ledger.Put(ctx, "team-a", k, &worker.LedgerEntry{Generation: 1, EventID: "e" + k, EventType: events.KeyCreated,
			Status: events.StatusStored, Provider: "local", SecretRef: "litellm/team-a/" + k, Sealed: sv, SealedGen: 1}, 0); err != nil {
			t.Fatal(err)
		}
	}
	store, err := jobs.EnsureStore(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	// Cancel the job once it has published some of its events.
	go func() {
		for ctx.Err() == nil {
			time.Sleep(200 * time.Millisecond)
			all, _ := store.List(ctx)
			for _, j := range all {
				if j.State == jobs.StateRunning && j.Cursor > 0 {
					_, _ = store.Cancel(ctx, j.ID)
					return
				}
			}
		}
	}()
	out, err := runCommand(ctx, rotateCmd(&globals{configPath: cfg}), "--team", "team-a", "--rate", "4")
	wantPartialFailure(t, "rotate, cancelled while publishing", err, out)
	if !strings.Contains(err.Error(), "cancelled") {
		t.Fatalf("the error does not say the job was cancelled: %v\n%s", err, out)
	}
}
