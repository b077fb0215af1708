package e2e

import (
	"context"
	"testing"
	"time"

	gsm "github.com/keyrelay/keyrelay/providers/google/secretmanager"
	"github.com/keyrelay/keyrelay/providers/google/secretmanager/smfake"
)

// TestPipelineGoogleSecretManager runs the end-to-end scenario (short load)
// with Google Secret Manager as the backend: the wire-faithful gRPC fake in
// this test process, three `keyrelay serve` processes with LiteLLM's
// GOOGLE_SECRET_MANAGER_PROJECT_ID and the fake as endpoint (plaintext gRPC,
// set explicitly). Every event is confirmed once, every key holds its
// newest value, and no event wrote two versions.
func TestPipelineGoogleSecretManager(t *testing.T) {
	t.Parallel() // no timing bound; its processes get their own variables (setenv)
	fake := smfake.Start(t)
	const project = "keyrelay-e2e"
	setenv(t, "GOOGLE_SECRET_MANAGER_PROJECT_ID", project)

	sc := scenario{keys: 60, teams: 3, fresh: 5, dupWindow: 2 * time.Second, seed: 11}
	e := newEnv(t, envOptions{system: gsm.Name, dupWindow: sc.dupWindow, backendYML: `
    google_secret_manager:
      endpoint: ` + fake.Addr() + `
      insecure: "true"
      superseded_grace: "0"
      secret_writes_per_second: "1000"
      project_writes_per_minute: "600000"
      project_reads_per_minute: "600000"
      project_access_per_minute: "6000000"`})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	out := sc.run(ctx, t, e)

	// The check reads every version of every key: with the default
	// client-side quotas (600 reads a minute) that alone took over a
	// minute, so the checker gets the workers' generous ones.
	store, err := gsm.New(ctx, gsm.Config{Project: project, Endpoint: fake.Addr(), Insecure: true,
		ProjectWritesPerMinute: 600_000, ReadsPerMinute: 600_000, AccessPerMinute: 6_000_000}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	r := sc.check(ctx, t, out, backendCheck{store: store})
	sc.report(t, gsm.Name, out, r)
	sc.checkLookups(ctx, t, out)
}
