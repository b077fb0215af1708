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

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/internal/natsconn"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/settings"
)

// runCommand runs one command with args, returning its output and error.
func runCommand(ctx context.Context, cmd *cobra.Command, args ...string) (string, error) {
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

// TestCommandsOnTheEmbeddedServer runs the commands of the README's
// "Trying it" against serve on its embedded server, with the same --config:
// before serve ever ran they name the token file they lack; once it runs
// they find the server's generated token and publish and list; and
// `lookup get --nats` says why nothing answers, NATS lookups being off on
// the embedded server by default.
func TestCommandsOnTheEmbeddedServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	const token = "cli-embedded-token-team-a"
	cfg := filepath.Join(dir, "keyrelay.yaml")
	yaml := fmt.Sprintf("general_settings:\n  key_management_system: local\nkeyrelay:\n"+
		"  nats:\n    embedded:\n      port: %d\n      store_dir: %s\n  sealing:\n    keyring_file: %s\n  log:\n    level: error\n"+
		"  http:\n    addr: 127.0.0.1:0\n  lookup:\n    addr: 127.0.0.1:0\n    clients:\n      team-a: {team: team-a, token: %s}\n"+
		"  providers:\n    local:\n      path: \":memory:\"\n",
		testenv.FreePort(t), filepath.Join(dir, "nats"), filepath.Join(dir, "keyring.json"), token)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _, err := settings.Load(cfg, os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := natsconn.TokenFile(c.Keyrelay.NATS.Embedded)
	g := &globals{configPath: cfg}

	if _, err := runCommand(ctx, dlqCmd(g), "list"); err == nil || !strings.Contains(err.Error(), tokenFile) ||
		!strings.Contains(err.Error(), "start keyrelay serve first, or set keyrelay.nats.token") {
		t.Fatalf("dlq list before serve ran: %v", err)
	}

	runCtx, stop := context.WithCancel(ctx)
	ready, done := make(chan struct{}, 1), make(chan error, 1)
	go func() {
		done <- app.Serve(runCtx, c, zap.NewNop(), app.ServeOptions{OnReady: func(string) { ready <- struct{}{} }})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	case <-ctx.Done():
		t.Fatal("serve not ready")
	}

	if out, err := runCommand(ctx, publishCmd(g), "delete", "--team", "team-a", "--key", "key-1"); err != nil {
		t.Fatalf("publish delete: %v\n%s", err, out)
	}
	if out, err := runCommand(ctx, dlqCmd(g), "list"); err != nil {
		t.Fatalf("dlq list: %v\n%s", err, out)
	}
	t.Setenv("KEYRELAY_TOKEN", token)
	if _, err := runCommand(ctx, lookupCmd(g), "get", "--nats", "--team", "team-a", "key-1"); err == nil ||
		!strings.Contains(err.Error(), "NATS lookups are off unless serve runs with keyrelay.lookup.nats: true") {
		t.Fatalf("lookup get --nats: %v", err)
	}
}

// TestCommandErrorsRedactNATSURL is the audit's reproduction: a command
// given a NATS URL with user information that it cannot reach reports the
// URL without it, whatever the URL's form.
func TestCommandErrorsRedactNATSURL(t *testing.T) {
	tests := map[string]struct{ url, shown string }{
		"no scheme, password": {"alice:S3cretPassw0rd@127.0.0.1:1", "redacted@127.0.0.1:1"},
		"no scheme, token":    {"S3cretToken0123@127.0.0.1:1", "redacted@127.0.0.1:1"},
		"password":            {"nats://alice:S3cretPassw0rd@127.0.0.1:1", "nats://redacted@127.0.0.1:1"},
		"list":                {"nats://127.0.0.1:1,alice:S3cretPassw0rd@127.0.0.1:2", "redacted@127.0.0.1:2"},
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kr := filepath.Join(t.TempDir(), "keyring.json")
	if err := events.GenerateKeyringFile(kr, "k1"); err != nil {
		t.Fatal(err)
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			out, err := runCommand(ctx, publishCmd(&globals{natsURL: tc.url, keyring: kr, logLevel: "error"}),
				"delete", "--team", "team-a", "--key", "key-1")
			if err == nil {
				t.Fatal("published to a closed port")
			}
			if strings.Contains(err.Error()+out, "S3cret") || !strings.Contains(err.Error(), tc.shown) {
				t.Fatalf("error %q (output %q), want it to show %q and no credential", err, out, tc.shown)
			}
		})
	}
}

// TestNATSURLFlagDecidesEmbeddedChecks: a file with nats_auth: permissions
// and no nats.url is refused on the embedded server, and accepted when
// --nats-url names an external NATS (as the README's several-workers
// example passes it).
func TestNATSURLFlagDecidesEmbeddedChecks(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "keyrelay.yaml")
	yaml := "general_settings:\n  key_management_system: local\nkeyrelay:\n  log:\n    level: error\n  lookup:\n    nats_auth: permissions\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		natsURL string
		err     string
	}{
		"embedded":           {err: "keyrelay.lookup.nats_auth: permissions needs an external NATS"},
		"--nats-url":         {natsURL: "nats://nats-1:4222"},
		"--nats-url, a list": {natsURL: "nats://nats-1:4222,nats://nats-2:4222"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, _, err := (&globals{configPath: cfg, natsURL: tc.natsURL}).load()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("load: %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !c.Keyrelay.Lookup.NATSPermissionsOnly() {
				t.Fatalf("load: %v", err)
			}
		})
	}
}
