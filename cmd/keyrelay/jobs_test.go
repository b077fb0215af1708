package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/jobs"
)

// TestJobsListReportsCorruptRecords: `keyrelay jobs list` prints the good
// jobs and then fails naming the record it could not use, never its bytes.
func TestJobsListReportsCorruptRecords(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, js := startTopology(ctx, t)
	cfg, _, _ := commandConfig(t, srv.URL, "")
	store, err := jobs.EnsureStore(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	good := &jobs.Job{ID: jobs.NewID(time.Now()), Total: 1, Cursor: 1, State: jobs.StatePublished, Created: time.Now().UTC(), Updated: time.Now().UTC()}
	if err := store.Create(ctx, good, nil); err != nil {
		t.Fatal(err)
	}
	const planted = "sk-planted-in-a-job-record"
	if _, err := store.KV.Put(ctx, "job.broken", []byte(`{"id":"broken","total":"`+planted+`"`)); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"list"}, {"list", "--json"}} {
		out, err := runCommand(ctx, jobsCmd(&globals{configPath: cfg}), args...)
		if !errors.Is(err, jobs.ErrCorrupt) || !strings.Contains(err.Error(), "job.broken") {
			t.Fatalf("%v: err = %v, want one naming job.broken\n%s", args, err, out)
		}
		if !strings.Contains(out, good.ID) {
			t.Errorf("%v: the good job is not listed:\n%s", args, out)
		}
		if strings.Contains(out+err.Error(), planted) {
			t.Errorf("%v: the record's bytes were printed", args)
		}
	}
}

// commandConfig writes a configuration for the commands: srvURL's NATS,
// a new keyring (returned, loaded), a local store in storeDir, and extra
// (YAML lines under keyrelay:, indented two spaces). It returns the
// configuration's path.
func commandConfig(t *testing.T, srvURL, extra string) (cfg, storeDir string, kr *events.Keyring) {
	t.Helper()
	dir := t.TempDir()
	krPath := filepath.Join(dir, "keyring.json")
	if err := events.GenerateKeyringFile(krPath, "k1"); err != nil {
		t.Fatal(err)
	}
	kr, err := events.LoadKeyring(krPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg, storeDir = filepath.Join(dir, "keyrelay.yaml"), filepath.Join(dir, "secrets")
	yaml := "general_settings:\n  key_management_system: local\nkeyrelay:\n  nats:\n    url: " + srvURL +
		"\n  sealing:\n    keyring_file: " + krPath + "\n  log:\n    level: error\n  providers:\n    local:\n      path: " + storeDir + "\n" + extra
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg, storeDir, kr
}
