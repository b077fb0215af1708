package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault/kvfake"
)

// TestPipelineAzureKeyVault runs the end-to-end scenario (short load) with
// Azure Key Vault as the backend: the wire-faithful HTTPS fake (bearer
// challenge, token endpoint) in this test process, three `keyrelay serve`
// processes authenticating with azidentity's client-secret credential from
// LiteLLM's AZURE_* variables. Every event is confirmed once, every key
// holds its newest value, and no event wrote two versions.
func TestPipelineAzureKeyVault(t *testing.T) {
	t.Parallel() // no timing bound; its processes get their own variables (setenv)
	srv := kvfake.New()
	t.Cleanup(srv.Close)
	srv.ClientID = "11111111-2222-3333-4444-555555555555"
	srv.ClientSecret = "e2e-client-secret"
	ca, err := srv.WriteCABundle(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"AZURE_KEY_VAULT_URI": srv.URL, "AZURE_TENANT_ID": kvfake.DefaultTenant,
		"AZURE_CLIENT_ID": srv.ClientID, "AZURE_CLIENT_SECRET": srv.ClientSecret}
	for k, v := range env {
		setenv(t, k, v)
	}
	opts := map[string]string{"ca_bundle": ca, "authority_host": srv.URL,
		"disable_instance_discovery": "true", "disable_challenge_resource_verification": "true"}

	sc := scenario{keys: 60, teams: 3, fresh: 5, dupWindow: 2 * time.Second, seed: 9}
	e := newEnv(t, envOptions{system: keyvault.Name, dupWindow: sc.dupWindow, backendYML: `
    azure_key_vault:
      ca_bundle: ` + ca + `
      authority_host: ` + srv.URL + `
      disable_instance_discovery: "true"
      disable_challenge_resource_verification: "true"`})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	out := sc.run(ctx, t, e)

	opts["vault_url"] = srv.URL
	p, err := keyvault.Factory(ctx, providers.Config{Options: opts, Getenv: func(k string) string { return env[k] }})
	if err != nil {
		t.Fatal(err)
	}
	r := sc.check(ctx, t, out, backendCheck{store: p.(*keyvault.Provider)})
	sc.report(t, keyvault.Name, out, r)
	sc.checkLookups(ctx, t, out)
}
