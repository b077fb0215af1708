package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestMigrateCleanupRefusesDryRun: `keyrelay migrate --cleanup` deletes
// the old copies (recovery.Cleanup has no dry run). With --dry-run, which
// every other mode of migrate honours, an operator expects nothing to be
// deleted: the command must refuse rather than ignore the flag and delete.
func TestMigrateCleanupRefusesDryRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, _ := startTopology(ctx, t)
	cfg, _, _ := commandConfig(t, srv.URL, "")
	for _, args := range [][]string{{"--cleanup", "--dry-run"}, {"--cleanup", "--dry-run", "--delete-source"}} {
		out, err := runCommand(ctx, migrateCmd(&globals{configPath: cfg}), append([]string{"--team", "team-a"}, args...)...)
		if err == nil || !strings.Contains(err.Error(), "--dry-run") {
			t.Errorf("migrate %v: %v (want refused, naming --dry-run)\n%s", args, err, out)
		}
	}
}
