package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyrelay/keyrelay/providers/google/kms/kmsfake"
	"github.com/keyrelay/keyrelay/worker"
)

// TestLedgerSkippedWarningOnCommandStderr: the warning printed for a
// ledger entry a command passes over (printSkipped) went to os.Stderr, so
// a caller embedding the command, or a test, that set the command's error
// writer never saw it. It goes to cmd.ErrOrStderr(), and not to its
// standard output, which may be a JSON report.
func TestLedgerSkippedWarningOnCommandStderr(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, js := startTopology(ctx, t)
	cfg, _, _ := commandConfig(t, srv.URL, "")
	lkv, _ := js.KeyValue(ctx, worker.LedgerBucket)
	bad := worker.LedgerKey("team-a", "key-bad")
	if _, err := lkv.Put(ctx, bad, []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	g := &globals{configPath: cfg}
	// keyring rewrap needs a key wrapper that seals: the Cloud KMS fake.
	fake, err := kmsfake.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	const kmsKey = "projects/p/locations/global/keyRings/r/cryptoKeys/keyrelay"
	if _, err := fake.CreateKey(kmsKey); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kmsCfg := filepath.Join(dir, "keyrelay-kms.yaml")
	yaml := "keyrelay:\n  nats:\n    url: " + srv.URL + "\n  sealing:\n    keyring_file: " + filepath.Join(dir, "none.json") +
		"\n    gcp_kms:\n      key_name: " + kmsKey + "\n      endpoint: " + fake.Addr() + "\n      insecure: \"true\"\n  log:\n    level: error\n"
	if err := os.WriteFile(kmsCfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(cmd *cobra.Command, args ...string) (stdout, stderr string, err error) {
		cmd.SilenceUsage, cmd.SilenceErrors = true, true
		var out, errw bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&errw)
		cmd.SetArgs(args)
		err = cmd.ExecuteContext(ctx)
		return out.String(), errw.String(), err
	}
	for _, c := range []struct {
		what string
		cmd  func() *cobra.Command
		args []string
	}{
		{"drift --json", func() *cobra.Command { return driftCmd(g) }, []string{"--all", "--json"}},
		{"restore --dry-run", func() *cobra.Command { return restoreCmd(g) }, []string{"--all", "--dry-run"}},
		{"rotate --dry-run", func() *cobra.Command { return rotateCmd(g) }, []string{"--team", "team-a", "--dry-run"}},
		{"keyring rewrap", func() *cobra.Command { return keyringCmd(&globals{configPath: kmsCfg}) },
			[]string{"rewrap", "--cursor", filepath.Join(dir, "rewrap.cursor")}},
	} {
		t.Run(c.what, func(t *testing.T) {
			stdout, stderr, err := run(c.cmd(), c.args...)
			if err == nil {
				t.Fatalf("no error with an unusable ledger entry\nstdout:\n%s\nstderr:\n%s", stdout, stderr)
			}
			want := "WARNING: ledger entry " + bad + " skipped"
			if !strings.Contains(stderr, want) {
				t.Errorf("the command's stderr lacks %q (err %v):\n%s", want, err, stderr)
			}
			if strings.Contains(stdout, "WARNING") {
				t.Errorf("the warning went to stdout:\n%s", stdout)
			}
		})
	}
}
