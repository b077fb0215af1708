package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/local"
	"github.com/keyrelay/keyrelay/settings"
	"github.com/keyrelay/keyrelay/worker"
)

// embeddedConfig is a serve configuration on the embedded server with the
// lookup off and an empty environment (env answers what is set).
func embeddedConfig(t *testing.T, env map[string]string) *settings.Config {
	t.Helper()
	dir := t.TempDir()
	c := settings.Default()
	c.Getenv = func(k string) string { return env[k] }
	c.Keyrelay.NATS.Embedded.Port = testenv.FreePort(t)
	c.Keyrelay.NATS.Embedded.StoreDir = filepath.Join(dir, "nats")
	c.Keyrelay.Sealing.KeyringFile = filepath.Join(dir, "keyring.json")
	c.Keyrelay.HTTP.Addr = "127.0.0.1:0"
	c.Keyrelay.Lookup.Addr = settings.LookupOff
	f := false
	c.Keyrelay.Lookup.NATS = &f
	c.Keyrelay.Providers = map[string]map[string]string{"local": {"path": ":memory:"}}
	return c
}

// waitReadyz polls /readyz until cond holds (a minute at most).
func waitReadyz(t *testing.T, s *served, ops, what string, cond func(code int, body string) bool) (int, string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		select {
		case err := <-s.done:
			t.Fatalf("serve ended while waiting for %s: %v", what, err)
		default:
		}
		code, body := readyz(t, ops)
		if cond(code, body) {
			return code, body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: /readyz %d %q", what, code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func opsAddr(t *testing.T, s *served) string {
	t.Helper()
	select {
	case a := <-s.ops:
		return a
	case err := <-s.done:
		t.Fatalf("serve ended: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("operations listener not up")
	}
	return ""
}

// TestServeRefusesUnknownBackend: an unknown key_management_system stops
// serve at start with the field and the known backends named.
func TestServeRefusesUnknownBackend(t *testing.T) {
	c := embeddedConfig(t, nil)
	c.KeyManagementSystem = "hashicorp_vaultt"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := app.Serve(ctx, c, zap.NewNop(), app.ServeOptions{})
	if err == nil || !errors.Is(err, app.ErrUnknownBackend) {
		t.Fatalf("serve with an unknown backend: %v", err)
	}
	for _, want := range []string{"general_settings.key_management_system", `"hashicorp_vaultt"`, "hashicorp_vault", "azure_key_vault", "local"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

// TestMissingSettings: each backend LiteLLM configures from the
// environment names what is missing; an option or the variable suffices.
func TestMissingSettings(t *testing.T) {
	tests := map[string]struct {
		backend        string
		opts, env      map[string]string
		problem, note  string
		noProblemsNote bool
	}{
		"vault without HCP_VAULT_ADDR":     {backend: "hashicorp_vault", note: "HCP_VAULT_ADDR is not set (nor keyrelay.providers.hashicorp_vault.addr): using http://127.0.0.1:8200"},
		"vault with HCP_VAULT_ADDR":        {backend: "hashicorp_vault", env: map[string]string{"HCP_VAULT_ADDR": "https://vault:8200"}, noProblemsNote: true},
		"vault with addr option":           {backend: "hashicorp_vault", opts: map[string]string{"addr": "https://vault:8200"}, noProblemsNote: true},
		"azure without the vault":          {backend: "azure_key_vault", problem: "AZURE_KEY_VAULT_URI is not set (nor keyrelay.providers.azure_key_vault.vault_url)"},
		"azure with AZURE_KEY_VAULT_URI":   {backend: "azure_key_vault", env: map[string]string{"AZURE_KEY_VAULT_URI": "https://v.vault.azure.net"}, noProblemsNote: true},
		"cyberark without the API":         {backend: "cyberark", problem: "CYBERARK_API_BASE is not set (nor keyrelay.providers.cyberark.api_base)"},
		"cyberark with api_base":           {backend: "cyberark", opts: map[string]string{"api_base": "https://conjur"}, noProblemsNote: true},
		"google without the project":       {backend: "google_secret_manager", problem: "GOOGLE_SECRET_MANAGER_PROJECT_ID is not set (nor keyrelay.providers.google_secret_manager.project)"},
		"google with the project variable": {backend: "google_secret_manager", env: map[string]string{"GOOGLE_SECRET_MANAGER_PROJECT_ID": "p"}, noProblemsNote: true},
		"local needs nothing":              {backend: "local", noProblemsNote: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			problems, notes := app.MissingSettings(tc.backend, tc.opts, func(k string) string { return tc.env[k] })
			if tc.noProblemsNote {
				if len(problems)+len(notes) != 0 {
					t.Fatalf("problems %q notes %q", problems, notes)
				}
				return
			}
			if tc.problem != "" && (len(problems) != 1 || problems[0] != tc.problem) {
				t.Fatalf("problems %q, want %q", problems, tc.problem)
			}
			if tc.note != "" && (len(notes) != 1 || notes[0] != tc.note) {
				t.Fatalf("notes %q, want %q", notes, tc.note)
			}
		})
	}
}

// TestServeSaysWhatIsMissing: a configured backend without its required
// setting is logged at error level at start and /readyz says why it is
// not ready.
func TestServeSaysWhatIsMissing(t *testing.T) {
	tests := map[string]struct {
		backend, missing string
	}{
		"azure":    {backend: "azure_key_vault", missing: "AZURE_KEY_VAULT_URI"},
		"cyberark": {backend: "cyberark", missing: "CYBERARK_API_BASE"},
		"google":   {backend: "google_secret_manager", missing: "GOOGLE_SECRET_MANAGER_PROJECT_ID"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := embeddedConfig(t, nil)
			c.KeyManagementSystem = tc.backend
			var logs testenv.SyncBuffer
			s := serve(t, c, startLogger(&logs))
			ops := opsAddr(t, s)
			_, body := waitReadyz(t, s, ops, "the backend misconfigured", func(code int, body string) bool {
				return code == http.StatusServiceUnavailable && strings.Contains(body, "misconfigured")
			})
			if !strings.Contains(body, tc.missing) || !strings.Contains(body, "backend "+tc.backend+" (global): misconfigured") {
				t.Fatalf("/readyz does not say what is missing: %q", body)
			}
			found := false
			for _, line := range strings.Split(logs.String(), "\n") {
				if strings.Contains(line, `"level":"error"`) && strings.Contains(line, tc.missing) {
					found = true
				}
			}
			if !found {
				t.Fatalf("no error-level log names %s:\n%s", tc.missing, logs.String())
			}
		})
	}
	t.Run("vault default address", func(t *testing.T) {
		c := embeddedConfig(t, nil)
		c.KeyManagementSystem = "hashicorp_vault"
		var logs testenv.SyncBuffer
		s := serve(t, c, startLogger(&logs))
		opsAddr(t, s)
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(logs.String(), "HCP_VAULT_ADDR is not set") {
			if time.Now().After(deadline) {
				t.Fatalf("no log says HCP_VAULT_ADDR is not set:\n%s", logs.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, "HCP_VAULT_ADDR is not set") && !strings.Contains(line, `"level":"error"`) {
				t.Fatalf("not at error level: %s", line)
			}
		}
	})
}

// flakyProvider is the local provider with reads failing as a network
// outage does while down is set.
type flakyProvider struct {
	providers.Provider
	down *atomic.Bool
}

func (f flakyProvider) Get(ctx context.Context, name, version string) (*providers.Secret, error) {
	if f.down.Load() {
		return nil, providers.NewError("local", "get", name, providers.Retryable, errors.New("connection refused"))
	}
	return f.Provider.Get(ctx, name, version)
}

// TestReadyzBackendHealth: /readyz reports the global backend's health
// (503 while it is unreachable, 200 once it answers again) and lists the
// backends of the teams' settings, a team's broken backend included,
// without failing readiness for it.
func TestReadyzBackendHealth(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	reg := app.Registry()
	reg.Register(local.Name, func(ctx context.Context, cfg providers.Config) (providers.Provider, error) {
		p, err := local.Factory(ctx, cfg)
		if err != nil {
			return nil, err
		}
		return flakyProvider{Provider: p, down: &down}, nil
	})
	c := embeddedConfig(t, nil)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	opsc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- app.Serve(ctx, c, zap.NewNop(), app.ServeOptions{Registry: reg, OnListen: func(a string) { opsc <- a }})
	}()
	t.Cleanup(func() { stop(); <-done })
	fs := &served{done: done}
	ops := <-opsc
	_, body := waitReadyz(t, fs, ops, "the global backend down", func(code int, body string) bool {
		return code == http.StatusServiceUnavailable && strings.Contains(body, "backend local (global): down")
	})
	if !strings.Contains(body, "connection refused") {
		t.Fatalf("/readyz does not give the reason: %q", body)
	}
	down.Store(false)
	waitReadyz(t, fs, ops, "the global backend back", func(code int, body string) bool {
		return code == http.StatusOK && strings.Contains(body, "backend local (global): ok")
	})

	// A team whose settings choose Azure without a vault.
	js := connectAsCommand(t, c)
	kv, err := js.KeyValue(ctx, worker.TeamsBucket)
	if err != nil {
		t.Fatal(err)
	}
	st := worker.TeamState{Team: "team-z", Settings: &events.TeamSettings{Backend: "azure_key_vault"}, Generation: 1, AppliedSeq: 1, UpdatedAt: time.Now()}
	b, _ := json.Marshal(st)
	if _, err := kv.Put(ctx, "team-z", b); err != nil {
		t.Fatal(err)
	}
	_, body = waitReadyz(t, fs, ops, "the team's backend listed", func(code int, body string) bool {
		return strings.Contains(body, "backend azure_key_vault (1 team): misconfigured")
	})
	// The listener answers without credentials: it counts teams, never names them.
	if strings.Contains(body, "team-z") {
		t.Fatalf("/readyz names a team: %q", body)
	}
	if code, body := readyz(t, ops); code != http.StatusOK || !strings.HasPrefix(body, "ok\n") {
		t.Fatalf("a team's broken backend failed readiness: %d %q", code, body)
	}
	t.Logf("/readyz:\n%s", body)
}
