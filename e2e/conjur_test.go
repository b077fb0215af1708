package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/cyberark/conjur"
	"github.com/keyrelay/keyrelay/providers/cyberark/conjur/conjurfake"
)

// TestPipelineConjur runs the end-to-end scenario (short load) with CyberArk
// Conjur as the backend: the wire-faithful v5 fake over HTTPS in this test
// process, three `keyrelay serve` processes configured through LiteLLM's
// CYBERARK_* variables and a CA bundle. Every event is confirmed once,
// every key holds its newest value, and no event wrote two versions.
func TestPipelineConjur(t *testing.T) {
	t.Parallel() // no timing bound; its processes get their own variables (setenv)
	const account, login, apiKey = "keyrelay", "host/keyrelay", "e2e-api-key"
	srv := conjurfake.New(account)
	t.Cleanup(srv.Close)
	srv.AddBranch("keyrelay")
	srv.AddUser(login, apiKey, "keyrelay")
	ca := filepath.Join(t.TempDir(), "conjur-ca.pem")
	if err := os.WriteFile(ca, srv.CACertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	setenv(t, conjur.EnvAPIBase, srv.URL)
	setenv(t, conjur.EnvAccount, account)
	setenv(t, conjur.EnvUsername, login)
	setenv(t, conjur.EnvAPIKey, apiKey)
	setenv(t, conjur.EnvCABundle, ca)

	sc := scenario{keys: 60, teams: 3, fresh: 5, dupWindow: 2 * time.Second, seed: 7}
	e := newEnv(t, envOptions{system: conjur.Name, dupWindow: sc.dupWindow, backendYML: `
    cyberark:
      policy_branch: keyrelay`})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	out := sc.run(ctx, t, e)

	store, err := conjur.New(ctx, conjur.Config{APIBase: srv.URL, Account: account, Username: login, APIKey: apiKey,
		CAPEM: srv.CACertPEM(), SSLVerify: true, PolicyBranch: "keyrelay"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	// Conjur records the writing event only for the current version (one
	// annotation per variable), so every version is attributed by its
	// value: each generation's value is unique to its event, and a value
	// stored twice shows up as one event with two versions.
	r := sc.check(ctx, t, out, backendCheck{store: store, eventOf: func(name string, v providers.VersionInfo) string {
		s, err := store.Get(ctx, name, v.Version)
		if err != nil {
			t.Errorf("%s: version %s: %v", name, v.Version, err)
			return ""
		}
		team, key, _ := strings.Cut(strings.TrimPrefix(name, "litellm/"), "/")
		for _, ev := range out.eventsOf[team+"/"+key] {
			if string(s.Value) == value(team, key, ev.Generation) {
				return ev.ID
			}
		}
		return ""
	}})
	sc.report(t, conjur.Name, out, r)
	sc.checkLookups(ctx, t, out)
}
