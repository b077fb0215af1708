package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/providers/vault"
)

// TestPipelineVault is the core end-to-end flow with HashiCorp Vault as the
// backend: a real Vault dev server, AppRole credentials given to three
// `keyrelay serve` processes through LiteLLM's environment variables, 2,000
// events over 200 keys (eight generations each, then exact duplicates
// re-published after the dedupe window and older generations under new
// ids), one worker SIGKILLed midway and restarted. Afterwards every key's
// current Vault version holds its newest value, no event id wrote two
// versions, every stored/rotated confirmation names a version that exists,
// and every event id has exactly one confirmation.
func TestPipelineVault(t *testing.T) {
	t.Parallel() // no timing bound; its processes get their own variables (setenv)
	if !slices.Contains(app.Registry().Names(), vault.Name) {
		t.Skipf("provider %q is not registered in internal/app.Registry(): add vault.Register(r) there", vault.Name)
	}
	const (
		keys      = 200
		fresh     = 8 // per key: key.created then 7 key.rotated
		dupWindow = 2 * time.Second
		history   = 32
	)
	v := testenv.StartVault(t, testenv.VaultOptions{})
	v.WritePolicy(t, "keyrelay", testenv.KVPolicy("secret"))
	roleID, secretID := v.EnableAppRole(t, testenv.AppRoleOptions{Policies: []string{"keyrelay"}})
	// The workers inherit LiteLLM's variables, as a LiteLLM deployment
	// would pass them.
	for _, k := range []string{"VAULT_ADDR", "VAULT_TOKEN", "VAULT_NAMESPACE", "HCP_VAULT_TOKEN", "HCP_VAULT_NAMESPACE"} {
		setenv(t, k, "")
	}
	setenv(t, vault.EnvAddr, v.Addr)
	setenv(t, vault.EnvAppRoleRoleID, roleID)
	setenv(t, vault.EnvAppRoleSecretID, secretID)

	sc := scenario{keys: keys, teams: 5, fresh: fresh, dupWindow: dupWindow, seed: 3}
	e := newEnv(t, envOptions{system: vault.Name, dupWindow: dupWindow, backendYML: fmt.Sprintf(`
    hashicorp_vault:
      max_versions: "%d"
      event_history: "%d"`, 2*history, history)})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	out := sc.run(ctx, t, e)

	// Read Vault back through the provider, with the root token.
	store, err := vault.New(ctx, vault.Config{Addr: v.Addr, Token: v.Token}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	r := sc.check(ctx, t, out, backendCheck{store: store})
	sc.report(t, vault.Name, out, r)
	sc.checkLookups(ctx, t, out)
	// Every version holds a distinct value: no event, nor a stale copy of
	// one under a new id, was written twice (also for unrecorded versions).
	for k := 0; k < keys; k++ {
		name := sc.secretName(k)
		vs, err := store.Versions(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		values := map[string]string{}
		for _, ver := range vs {
			s, err := store.Get(ctx, name, ver.Version)
			if err != nil {
				t.Errorf("%s: version %s: %v", name, ver.Version, err)
				continue
			}
			if prev, dup := values[string(s.Value)]; dup {
				t.Errorf("%s: versions %s and %s hold the same value", name, prev, ver.Version)
			}
			values[string(s.Value)] = ver.Version
		}
	}
}
