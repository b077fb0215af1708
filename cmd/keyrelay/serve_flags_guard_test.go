package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestServeValidatesItsFlags: serve's flags change the configuration
// after it was validated. A --concurrency below the configured
// worker.backend_slots (a configuration the file alone may not hold) or a
// negative one must be refused, not run as given or silently ignored.
func TestServeValidatesItsFlags(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"concurrency below backend_slots": {[]string{"--concurrency", "4"}, "backend_slots"},
		"negative concurrency":            {[]string{"--concurrency", "-3"}, "concurrency"},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			srv, _ := startTopology(ctx, t)
			cfg, _, _ := commandConfig(t, srv.URL, "  worker:\n    backend_slots: 8\n")
			rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
			defer rcancel()
			_, err := runCommand(rctx, serveCmd(&globals{configPath: cfg}), append([]string{"--http", "off", "--no-lookup"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) || rctx.Err() != nil {
				t.Fatalf("serve %v: %v (ran until its context ended: %v)", tc.args, err, rctx.Err() != nil)
			}
		})
	}
}
