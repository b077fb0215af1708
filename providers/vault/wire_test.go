package vault

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/keyrelay/keyrelay/providers"
)

type seenRequest struct {
	method, path, namespace, token string
	body                           map[string]any
}

// fakeVault answers just enough of the KV v2 and AppRole API for one Put,
// recording every request.
type fakeVault struct {
	mu   sync.Mutex
	seen []seenRequest
}

func (f *fakeVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	b, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(b, &body)
	f.mu.Lock()
	f.seen = append(f.seen, seenRequest{r.Method, r.URL.Path, r.Header.Get("X-Vault-Namespace"), r.Header.Get("X-Vault-Token"), body})
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case strings.HasSuffix(r.URL.Path, "/login"):
		_, _ = io.WriteString(w, `{"auth":{"client_token":"hvs.login","lease_duration":3600,"renewable":true}}`)
	case strings.Contains(r.URL.Path, "/sys/internal/ui/mounts/"):
		_, _ = io.WriteString(w, `{"data":{"type":"kv","options":{"version":"2"},"path":"kv-prod/"}}`)
	case r.Method == http.MethodGet:
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"errors":[]}`)
	case r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/data/"):
		// As Vault answers the first version of a new secret: its
		// custom_metadata (none yet) with the version.
		_, _ = io.WriteString(w, `{"data":{"version":1,"created_time":"2026-01-01T00:00:00Z","custom_metadata":null,"deletion_time":"","destroyed":false}}`)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// TestWireNamespacesAndFormat checks what goes over the wire, as LiteLLM
// sends it: the login namespace only as a header on the login, the secret
// namespace only as path segments (also for the one-time mount check), the
// value as {"key": value, "keyrelay-event": event id} with cas=0 for a new
// secret, then the owner's metadata as a patch, and nothing from VAULT_*
// variables.
func TestVaultWireNamespacesAndFormat(t *testing.T) {
	t.Setenv("VAULT_TOKEN", "from-env")
	t.Setenv("VAULT_NAMESPACE", "from-env")
	t.Setenv("VAULT_ADDR", "http://127.0.0.1:1")
	f := &fakeVault{}
	srv := httptest.NewServer(f)
	defer srv.Close()
	env := map[string]string{
		EnvAddr: srv.URL, EnvLoginNamespace: "admin", EnvSecretNamespace: "admin/teams/team-a",
		EnvAppRoleRoleID: "role", EnvAppRoleSecretID: "sid", EnvPathPrefix: "virtual-keys",
	}
	p, err := Factory(context.Background(), providers.Config{Options: map[string]string{OptionMount: "kv-prod"}, Getenv: envMap(env)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.(*Provider).Close()
	res, err := p.Put(context.Background(), providers.PutRequest{Name: "litellm/sk-1", Value: []byte("sk-value"), IdempotencyKey: "ev-1",
		Owner: providers.Owner{TeamID: "team-a", KeyID: "key-1"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != "1" || !res.Created {
		t.Errorf("Put: %+v", res)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	const base = "/v1/admin/teams/team-a/kv-prod/"
	want := []struct{ method, path string }{
		{"PUT", "/v1/auth/approle/login"},
		{"GET", "/v1/admin/teams/team-a/sys/internal/ui/mounts/kv-prod"},
		{"PUT", base + "data/virtual-keys/litellm/sk-1"},
		{"PATCH", base + "metadata/virtual-keys/litellm/sk-1"},
	}
	if len(f.seen) != len(want) {
		for _, s := range f.seen {
			t.Logf("%s %s", s.method, s.path)
		}
		t.Fatalf("%d requests, want %d", len(f.seen), len(want))
	}
	for i, w := range want {
		s := f.seen[i]
		if s.method != w.method || s.path != w.path {
			t.Errorf("request %d: %s %s, want %s %s", i, s.method, s.path, w.method, w.path)
		}
		if i == 0 {
			if s.namespace != "admin" || s.token != "" {
				t.Errorf("login: namespace %q token %q, want namespace admin and no token", s.namespace, s.token)
			}
			if s.body["role_id"] != "role" || s.body["secret_id"] != "sid" {
				t.Errorf("login body %v", s.body)
			}
			continue
		}
		if s.namespace != "" || s.token != "hvs.login" {
			t.Errorf("request %d: namespace header %q, token %q", i, s.namespace, s.token)
		}
	}
	// The value and, next to it, the event id: one request.
	write := f.seen[2].body
	data, _ := write["data"].(map[string]any)
	opts, _ := write["options"].(map[string]any)
	if len(data) != 2 || data["key"] != "sk-value" || data[DataEventKey] != "ev-1" || opts["cas"] != float64(0) {
		t.Errorf("data write body %v", write)
	}
	meta, _ := f.seen[3].body["custom_metadata"].(map[string]any)
	if meta[providers.ManagedByTag] != "keyrelay" || meta[providers.TeamTag] != "team-a" || meta[providers.KeyTag] != "key-1" {
		t.Errorf("metadata patch body %v", f.seen[3].body)
	}
}
