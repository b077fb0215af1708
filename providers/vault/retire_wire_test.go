package vault

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/keyrelay/keyrelay/providers"
)

// metadataVault answers metadata reads of one secret (current version 3,
// version 1 destroyed, owned by key-1) and records every request.
type metadataVault struct {
	mu   sync.Mutex
	seen []seenRequest
}

func (f *metadataVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	b, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(b, &body)
	f.mu.Lock()
	f.seen = append(f.seen, seenRequest{method: r.Method, path: r.URL.Path, body: body})
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/metadata/owned"):
		_, _ = io.WriteString(w, `{"data":{"current_version":3,"custom_metadata":{"managed-by":"keyrelay","keyrelay-team":"team-a","keyrelay-key":"key-1"},
			"versions":{"1":{"created_time":"2026-01-01T00:00:00Z","deletion_time":"","destroyed":true},
			"2":{"created_time":"2026-01-02T00:00:00Z","deletion_time":"","destroyed":false},
			"3":{"created_time":"2026-01-03T00:00:00Z","deletion_time":"","destroyed":false}}}}`)
	case r.Method == http.MethodGet:
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"errors":[]}`)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func (f *metadataVault) writes() []seenRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []seenRequest
	for _, s := range f.seen {
		if s.method != http.MethodGet {
			out = append(out, s)
		}
	}
	return out
}

// TestVaultWireRetire: Retire destroys exactly the version asked for, and
// writes nothing for the current version, a destroyed one, one Vault does
// not have, another owner's request or a missing secret.
func TestVaultWireRetire(t *testing.T) {
	f := &metadataVault{}
	srv := httptest.NewServer(f)
	defer srv.Close()
	p, err := Factory(context.Background(), providers.Config{Options: map[string]string{OptionMount: "kv"},
		Getenv: envMap(map[string]string{EnvAddr: srv.URL, EnvToken: "hvs.test"})})
	if err != nil {
		t.Fatal(err)
	}
	defer p.(*Provider).Close()
	r := p.(providers.Retirer)
	owner := providers.Owner{TeamID: "team-a", KeyID: "key-1"}
	ctx := context.Background()
	retire := func(name, version string, o providers.Owner) error {
		return r.Retire(ctx, providers.RetireRequest{Name: name, Version: version, Owner: o})
	}
	if err := retire("owned", "2", owner); err != nil {
		t.Fatal(err)
	}
	w := f.writes()
	if len(w) != 1 || w[0].method != http.MethodPut || w[0].path != "/v1/kv/destroy/owned" {
		t.Fatalf("writes %+v, want one PUT /v1/kv/destroy/owned", w)
	}
	if vs, _ := w[0].body["versions"].([]any); len(vs) != 1 || vs[0] != float64(2) {
		t.Errorf("destroy body %v, want versions [2]", w[0].body)
	}
	for label, tc := range map[string]struct {
		name, version string
		owner         providers.Owner
		want          error
	}{
		"current":         {"owned", "3", owner, providers.ErrConflict},
		"destroyed":       {"owned", "1", owner, nil},
		"pruned":          {"owned", "0007", owner, nil},
		"another owner":   {"owned", "2", providers.Owner{TeamID: "team-b"}, providers.ErrNotOwned},
		"missing secret":  {"missing", "1", owner, providers.ErrNotFound},
		"not a version":   {"owned", "v2", owner, providers.ErrInvalid},
		"version zero":    {"owned", "0", owner, providers.ErrInvalid},
		"negative number": {"owned", "-1", owner, providers.ErrInvalid},
	} {
		err := retire(tc.name, tc.version, tc.owner)
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: %v, want %v", label, err, tc.want)
		}
		if err != nil && providers.IsRetryable(err) {
			t.Errorf("%s: %v is retryable, want permanent", label, err)
		}
	}
	if w := f.writes(); len(w) != 1 {
		t.Errorf("%d writes, want only the first destroy: %+v", len(w), w)
	}
}
