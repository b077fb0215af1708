package vault_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/providertest"
	"github.com/keyrelay/keyrelay/providers/vault"
)

var (
	ownerA = providers.Owner{TeamID: "team-a", KeyID: "key-a"}
	ownerB = providers.Owner{TeamID: "team-b", KeyID: "key-b"}
)

// open builds a provider through the registry's factory, as keyrelay does,
// from options and a LiteLLM environment.
func open(t *testing.T, opts, env map[string]string) *vault.Provider {
	t.Helper()
	p, err := vault.Factory(context.Background(), providers.Config{Options: opts, Getenv: func(k string) string { return env[k] }})
	if err != nil {
		t.Fatal(err)
	}
	vp := p.(*vault.Provider)
	t.Cleanup(func() { _ = vp.Close() })
	return vp
}

// openToken opens a provider on v with the root token through LiteLLM's
// environment variables.
func openToken(t *testing.T, v *testenv.Vault, opts map[string]string) *vault.Provider {
	t.Helper()
	return open(t, opts, map[string]string{vault.EnvAddr: v.Addr, vault.EnvToken: v.Token})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func put(t *testing.T, p providers.Provider, name, value, key string, o providers.Owner) providers.PutResult {
	t.Helper()
	res, err := p.Put(ctxT(t), providers.PutRequest{Name: name, Value: []byte(value), IdempotencyKey: key, Owner: o})
	if err != nil {
		t.Fatalf("Put %s: %v", name, err)
	}
	return res
}

func wantValue(t *testing.T, p providers.Provider, name, version, want string) *providers.Secret {
	t.Helper()
	s, err := p.Get(ctxT(t), name, version)
	if err != nil {
		t.Fatalf("Get %s@%q: %v", name, version, err)
	}
	if string(s.Value) != want {
		t.Errorf("Get %s@%q = %q, want %q", name, version, s.Value, want)
	}
	return s
}

func wantErr(t *testing.T, what string, err, sentinel error, retryable bool) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %v", what, sentinel)
	}
	t.Logf("%s: %v", what, err)
	if !errors.Is(err, sentinel) {
		t.Errorf("%s: %q does not match %v", what, err, sentinel)
	}
	if providers.IsRetryable(err) != retryable {
		t.Errorf("%s: %q retryable=%v, want %v", what, err, providers.IsRetryable(err), retryable)
	}
	var pe *providers.Error
	if !errors.As(err, &pe) || pe.Provider != vault.Name {
		t.Errorf("%s: %T is not a *providers.Error from %s", what, err, vault.Name)
	}
}

// kvRead reads a secret's data and metadata with the root client.
func kvRead(t *testing.T, c *api.Client, path string) map[string]any {
	t.Helper()
	s, err := c.Logical().ReadWithContext(ctxT(t), path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if s == nil {
		return nil
	}
	return s.Data
}

func TestVaultConformance(t *testing.T) {
	v := testenv.StartVault(t, testenv.VaultOptions{})
	root := v.Client(t)
	providertest.Run(t, func(t *testing.T) providers.Provider {
		return openToken(t, v, nil)
	}, providertest.Options{
		Features: providertest.Features{
			EmptyValues: true,
			MaxVersions: 10, // the dev server's secret/ keeps KV v2's default
		},
		CreateUnmanaged: func(ctx context.Context, _ providers.Provider, name string, value []byte) error {
			// As LiteLLM writes: no cas, no custom_metadata.
			_, err := root.Logical().WriteWithContext(ctx, "secret/data/"+name, map[string]any{"data": map[string]any{"key": string(value)}})
			return err
		},
	})
}

// TestConformanceOptions runs the suite again on a mount of its own with
// a path prefix, a custom data field and destroy-mode deletes.
func TestVaultConformanceOptions(t *testing.T) {
	v := testenv.StartVault(t, testenv.VaultOptions{})
	v.EnableKV(t, "kv-prod", 100)
	root := v.Client(t)
	opts := map[string]string{vault.OptionMount: "kv-prod", vault.OptionPathPrefix: "virtual-keys", vault.OptionDataKey: "password",
		vault.OptionDeleteMode: "destroy", vault.OptionEventHistory: "20"}
	providertest.Run(t, func(t *testing.T) providers.Provider {
		return openToken(t, v, opts)
	}, providertest.Options{
		Parallel: true,
		Features: providertest.Features{EmptyValues: true, MaxVersions: 100},
		CreateUnmanaged: func(ctx context.Context, _ providers.Provider, name string, value []byte) error {
			_, err := root.Logical().WriteWithContext(ctx, "kv-prod/data/virtual-keys/"+name, map[string]any{"data": map[string]any{"password": string(value)}})
			return err
		},
	})
}

func TestVaultAppRoleRoundTrip(t *testing.T) {
	v := testenv.StartVault(t, testenv.VaultOptions{})
	v.WritePolicy(t, "keyrelay", testenv.KVPolicy("secret"))
	roleID, secretID := v.EnableAppRole(t, testenv.AppRoleOptions{Policies: []string{"keyrelay"}})
	p := open(t, nil, map[string]string{vault.EnvAddr: v.Addr, vault.EnvAppRoleRoleID: roleID, vault.EnvAppRoleSecretID: secretID})
	if got := p.Config().Method(); got != vault.AuthAppRole {
		t.Fatalf("method %q", got)
	}
	roundTrip(t, p)
	if st := p.AuthStats(); st.Logins != 1 {
		t.Errorf("AuthStats %+v, want exactly one login for the whole round trip", st)
	}
}

func TestVaultCertAuthRoundTrip(t *testing.T) {
	v := testenv.StartVault(t, testenv.VaultOptions{TLS: true})
	v.WritePolicy(t, "keyrelay", testenv.KVPolicy("secret"))
	ca := v.EnableCertAuth(t, testenv.CertAuthOptions{Policies: []string{"keyrelay"}})
	p := open(t, map[string]string{vault.OptionCACert: v.CACert}, map[string]string{
		vault.EnvAddr: v.Addr, vault.EnvClientCert: ca.CertFile, vault.EnvClientKey: ca.KeyFile, vault.EnvCertRole: ca.Role,
	})
	if got := p.Config().Method(); got != vault.AuthCert {
		t.Fatalf("method %q", got)
	}
	roundTrip(t, p)
	if st := p.AuthStats(); st.Logins != 1 {
		t.Errorf("AuthStats %+v, want exactly one login for the whole round trip", st)
	}
}

// roundTrip writes, rotates, reads both versions, deletes and restores.
func roundTrip(t *testing.T, p *vault.Provider) {
	t.Helper()
	ctx := ctxT(t)
	name := "litellm/team-a/key-a"
	r1 := put(t, p, name, "sk-one", "ev-1", ownerA)
	if !r1.Created || r1.Version != "1" {
		t.Errorf("first Put %+v", r1)
	}
	r2 := put(t, p, name, "sk-two", "ev-2", ownerA)
	if r2.Created || r2.Version != "2" {
		t.Errorf("rotation %+v", r2)
	}
	if dup := put(t, p, name, "sk-two", "ev-2", ownerA); !dup.Duplicate || dup.Version != "2" {
		t.Errorf("repeated Put %+v, want Duplicate of 2", dup)
	}
	s := wantValue(t, p, name, "", "sk-two")
	if !providers.IsOwnedBy(s.Tags, ownerA) || s.Tags[providers.EventTag] != "ev-2" {
		t.Errorf("tags %v", s.Tags)
	}
	wantValue(t, p, name, "1", "sk-one")
	vs, err := p.Versions(ctx, name)
	if err != nil || len(vs) != 2 || vs[0].IdempotencyKey != "ev-1" || vs[1].IdempotencyKey != "ev-2" || !vs[1].Current {
		t.Errorf("Versions %+v, %v", vs, err)
	}
	if err := p.Delete(ctx, providers.DeleteRequest{Name: name, Owner: ownerA}); err != nil {
		t.Fatal(err)
	}
	_, err = p.Get(ctx, name, "")
	wantErr(t, "Get after delete", err, providers.ErrNotFound, false)
	r3 := put(t, p, name, "sk-three", "ev-3", ownerA)
	if !r3.Created || r3.Version != "3" {
		t.Errorf("restoring Put %+v", r3)
	}
	wantValue(t, p, name, "2", "sk-two") // undeleted by the restore
	if err := p.Delete(ctx, providers.DeleteRequest{Name: name, Owner: ownerA, Force: true}); err != nil {
		t.Fatal(err)
	}
}

// TestTokenLifetime runs calls for more than three token TTLs with each
// auth method and checks that the token was renewed (or, past its max TTL,
// obtained again) in the background rather than per call, and that no
// call failed.
func TestVaultTokenLifetime(t *testing.T) {
	const ttl = 3 * time.Second
	const run = 10 * time.Second
	tests := map[string]struct {
		maxTTL    time.Duration
		tls       bool
		open      func(t *testing.T, v *testenv.Vault, maxTTL time.Duration) *vault.Provider
		minLogins int64
		maxLogins int64
		renewals  bool
	}{
		"approle": {
			open: func(t *testing.T, v *testenv.Vault, maxTTL time.Duration) *vault.Provider {
				roleID, secretID := v.EnableAppRole(t, testenv.AppRoleOptions{Policies: []string{"keyrelay"}, TokenTTL: ttl, TokenMaxTTL: maxTTL})
				return open(t, nil, map[string]string{vault.EnvAddr: v.Addr, vault.EnvAppRoleRoleID: roleID, vault.EnvAppRoleSecretID: secretID})
			},
			minLogins: 1, maxLogins: 2, renewals: true, // 2: one renewal lost to a loaded machine
		},
		"approle past max TTL": {
			maxTTL: 4 * time.Second,
			open: func(t *testing.T, v *testenv.Vault, maxTTL time.Duration) *vault.Provider {
				roleID, secretID := v.EnableAppRole(t, testenv.AppRoleOptions{Policies: []string{"keyrelay"}, TokenTTL: ttl, TokenMaxTTL: maxTTL})
				return open(t, nil, map[string]string{vault.EnvAddr: v.Addr, vault.EnvAppRoleRoleID: roleID, vault.EnvAppRoleSecretID: secretID})
			},
			minLogins: 2, maxLogins: 6,
		},
		"cert": {
			tls: true,
			open: func(t *testing.T, v *testenv.Vault, maxTTL time.Duration) *vault.Provider {
				ca := v.EnableCertAuth(t, testenv.CertAuthOptions{Policies: []string{"keyrelay"}, TokenTTL: ttl, TokenMaxTTL: maxTTL})
				return open(t, map[string]string{vault.OptionCACert: v.CACert, vault.OptionCertRole: ca.Role},
					map[string]string{vault.EnvAddr: v.Addr, vault.EnvClientCert: ca.CertFile, vault.EnvClientKey: ca.KeyFile})
			},
			minLogins: 1, maxLogins: 2, renewals: true, // 2: one renewal lost to a loaded machine
		},
		"token": {
			open: func(t *testing.T, v *testenv.Vault, _ time.Duration) *vault.Provider {
				tok := v.CreateToken(t, ttl, "keyrelay")
				return open(t, nil, map[string]string{vault.EnvAddr: v.Addr, vault.EnvToken: tok})
			},
			minLogins: 0, maxLogins: 0, renewals: true,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			v := testenv.StartVault(t, testenv.VaultOptions{TLS: tc.tls})
			v.WritePolicy(t, "keyrelay", testenv.KVPolicy("secret"))
			p := tc.open(t, v, tc.maxTTL)
			ctx := ctxT(t)
			calls := 0
			deadline := time.Now().Add(run)
			for i := 0; time.Now().Before(deadline); i++ {
				n := fmt.Sprintf("lifetime/key-%d", i%5)
				if _, err := p.Put(ctx, providers.PutRequest{Name: n, Value: []byte(fmt.Sprintf("v-%d", i)), IdempotencyKey: fmt.Sprintf("ev-%d", i), Owner: ownerA}); err != nil {
					t.Fatalf("call %d at %v: %v", i, time.Until(deadline), err)
				}
				if _, err := p.Get(ctx, n, ""); err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
				calls += 2
				time.Sleep(100 * time.Millisecond)
			}
			st := p.AuthStats()
			t.Logf("%d calls over %v with a %v TTL: %+v", calls, run, ttl, st)
			if st.Logins < tc.minLogins || st.Logins > tc.maxLogins {
				t.Errorf("%d logins, want %d to %d", st.Logins, tc.minLogins, tc.maxLogins)
			}
			if tc.renewals && st.Renewals < int64(run/ttl) {
				t.Errorf("%d renewals over %v with a %v TTL, want at least %d", st.Renewals, run, ttl, int64(run/ttl))
			}
		})
	}
}

// TestReloginAfterRevocation: a login token revoked behind the provider's
// back is detected on the 403 (lookup-self fails) and replaced by one new
// login; the call succeeds.
func TestVaultReloginAfterRevocation(t *testing.T) {
	v := testenv.StartVault(t, testenv.VaultOptions{})
	v.WritePolicy(t, "keyrelay", testenv.KVPolicy("secret"))
	roleID, secretID := v.EnableAppRole(t, testenv.AppRoleOptions{Policies: []string{"keyrelay"}})
	p := open(t, map[string]string{vault.OptionAppRoleRoleID: roleID, vault.OptionAppRoleSecretID: secretID, vault.OptionAddr: v.Addr}, nil)
	put(t, p, "revoked/k", "v1", "ev-1", ownerA)
	if err := v.Client(t).Auth().Token().RevokeTreeWithContext(ctxT(t), vault.CurrentToken(p)); err != nil {
		t.Fatal(err)
	}
	put(t, p, "revoked/k", "v2", "ev-2", ownerA)
	if st := p.AuthStats(); st.Logins != 2 {
		t.Errorf("AuthStats %+v, want 2 logins", st)
	}
}

// TestErrorsFromTheServer provokes each class of error on the real server.
func TestVaultErrorsFromTheServer(t *testing.T) {
	v := testenv.StartVault(t, testenv.VaultOptions{})
	ctx := ctxT(t)
	admin := openToken(t, v, nil)
	put(t, admin, "errors/existing", "sk-existing-value", "ev-1", ownerA)

	t.Run("403 read-only policy", func(t *testing.T) {
		v.WritePolicy(t, "readonly", `path "secret/data/*" { capabilities = ["read"] }
path "secret/metadata/*" { capabilities = ["read"] }`)
		tok := v.CreateToken(t, 0, "readonly")
		p := open(t, nil, map[string]string{vault.EnvAddr: v.Addr, vault.EnvToken: tok})
		wantValue(t, p, "errors/existing", "", "sk-existing-value")
		_, err := p.Put(ctx, providers.PutRequest{Name: "errors/existing", Value: []byte("sk-new-value"), IdempotencyKey: "ev-2", Owner: ownerA})
		wantErr(t, "Put with a read-only token", err, providers.ErrAccessDenied, false)
		wantErr(t, "Delete with a read-only token", p.Delete(ctx, providers.DeleteRequest{Name: "errors/existing", Owner: ownerA}), providers.ErrAccessDenied, false)
		noLeak(t, err, tok, "sk-new-value", "sk-existing-value")
	})
	t.Run("403 no patch capability", func(t *testing.T) {
		// LiteLLM's documented policy: data only. keyrelay needs metadata.
		v.WritePolicy(t, "litellm", `path "secret/data/*" { capabilities = ["create", "read", "update", "delete", "list"] }`)
		tok := v.CreateToken(t, 0, "litellm")
		p := open(t, nil, map[string]string{vault.EnvAddr: v.Addr, vault.EnvToken: tok})
		_, err := p.Put(ctx, providers.PutRequest{Name: "errors/new", Value: []byte("sk-x"), IdempotencyKey: "ev", Owner: ownerA})
		wantErr(t, "Put without metadata capabilities", err, providers.ErrAccessDenied, false)
	})
	t.Run("403 invalid token", func(t *testing.T) {
		p := open(t, nil, map[string]string{vault.EnvAddr: v.Addr, vault.EnvToken: "hvs.not-a-real-token"})
		_, err := p.Get(ctx, "errors/existing", "")
		wantErr(t, "Get with an invalid token", err, providers.ErrAccessDenied, false)
		noLeak(t, err, "hvs.not-a-real-token")
	})
	t.Run("404", func(t *testing.T) {
		_, err := admin.Get(ctx, "errors/missing", "")
		wantErr(t, "Get missing", err, providers.ErrNotFound, false)
		_, err = admin.Get(ctx, "errors/existing", "7")
		wantErr(t, "Get missing version", err, providers.ErrNotFound, false)
		wantErr(t, "Delete missing", admin.Delete(ctx, providers.DeleteRequest{Name: "errors/missing", Owner: ownerA}), providers.ErrNotFound, false)
	})
	t.Run("400 not a KV v2 mount", func(t *testing.T) {
		if err := v.Client(t).Sys().MountWithContext(ctx, "kv1", &api.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
			t.Fatal(err)
		}
		p := openToken(t, v, map[string]string{vault.OptionMount: "kv1"})
		_, err := p.Put(ctx, providers.PutRequest{Name: "x", Value: []byte("v"), IdempotencyKey: "e", Owner: ownerA})
		if err == nil || providers.IsRetryable(err) {
			t.Errorf("Put to a KV v1 mount: %v (want a permanent error)", err)
		}
	})
	t.Run("invalid names and values", func(t *testing.T) {
		for _, n := range []string{"a/../b", "a//b", "/a", "a/", "a\x00b", "a\nb", "..", "a/./b"} {
			_, err := admin.Put(ctx, providers.PutRequest{Name: n, Value: []byte("v"), Owner: ownerA})
			wantErr(t, fmt.Sprintf("Put %q", n), err, providers.ErrInvalid, false)
		}
		_, err := admin.Put(ctx, providers.PutRequest{Name: "errors/binary", Value: []byte{0xff, 0xfe}, Owner: ownerA})
		wantErr(t, "Put of invalid UTF-8", err, providers.ErrInvalid, false)
		_, err = admin.Put(ctx, providers.PutRequest{Name: "errors/tags", Value: []byte("v"), Owner: ownerA, Tags: map[string]string{strings.Repeat("k", 200): "v"}})
		wantErr(t, "Put with an oversized tag", err, providers.ErrInvalid, false)
		_, err = admin.Get(ctx, "errors/existing", "latest")
		wantErr(t, "Get version latest", err, providers.ErrInvalid, false)
	})
	t.Run("connection refused", func(t *testing.T) {
		p := open(t, nil, map[string]string{vault.EnvAddr: "http://127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)), vault.EnvToken: "hvs.secret-token"})
		_, err := p.Get(ctx, "x", "")
		wantErr(t, "Get from a closed port", err, providers.ErrUnavailable, true)
		noLeak(t, err, "hvs.secret-token")
	})
	t.Run("bad approle credentials", func(t *testing.T) {
		roleID, _ := v.EnableAppRole(t, testenv.AppRoleOptions{})
		p := open(t, nil, map[string]string{vault.EnvAddr: v.Addr, vault.EnvAppRoleRoleID: roleID, vault.EnvAppRoleSecretID: "wrong-secret-id-1234"})
		_, err := p.Get(ctx, "x", "")
		wantErr(t, "Get with a wrong secret_id", err, providers.ErrAccessDenied, false)
		if !errors.Is(err, vault.ErrLogin) {
			t.Errorf("%v does not match ErrLogin", err)
		}
		noLeak(t, err, "wrong-secret-id-1234")
	})
}

func noLeak(t *testing.T, err error, secrets ...string) {
	t.Helper()
	if err == nil {
		return
	}
	for _, s := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
		for _, sec := range secrets {
			if strings.Contains(s, sec) {
				t.Errorf("error text contains %q: %s", sec, s)
			}
		}
		if strings.Contains(s, "http://") || strings.Contains(s, "https://") {
			t.Errorf("error text contains a URL: %s", s)
		}
	}
}

func TestVaultTLSUntrusted(t *testing.T) {
	v := testenv.StartVault(t, testenv.VaultOptions{TLS: true})
	p := openToken(t, v, nil) // no ca_cert: the dev CA is not trusted
	_, err := p.Get(ctxT(t), "x", "")
	wantErr(t, "Get from an untrusted server", err, providers.ErrAccessDenied, false)
	p = openToken(t, v, map[string]string{vault.OptionCACert: v.CACert})
	put(t, p, "tls/ok", "v", "e", ownerA)
}

// TestCASConflict: a writer that lands between the provider's read and its
// check-and-set write makes the Put fail with a retryable ErrConflict and
// leaves the other writer's version current; the retry then succeeds.
func TestVaultCASConflict(t *testing.T) {
	v := testenv.StartVault(t, testenv.VaultOptions{})
	root := v.Client(t)
	p := openToken(t, v, nil)
	name := "cas/key"
	put(t, p, name, "sk-1", "ev-1", ownerA)
	var once sync.Once
	vault.WrapKV(p, func(inner vault.KVAPI) vault.KVAPI {
		return vault.KVFunc{Inner: inner, Write: func(ctx context.Context, path string, data map[string]any) (*api.Secret, error) {
			// The second data write: the first is the create attempt
			// (cas 0), refused as the secret exists; the second writes on
			// top of the version just read.
			if opts, _ := data["options"].(map[string]any); strings.Contains(path, "/data/") && fmt.Sprint(opts["cas"]) != "0" {
				once.Do(func() {
					// Another writer (same owner tags untouched) sneaks in.
					if _, err := root.Logical().WriteWithContext(ctx, path, map[string]any{"data": map[string]any{"key": "sk-other"}}); err != nil {
						t.Error(err)
					}
				})
			}
			return inner.WriteWithContext(ctx, path, data)
		}}
	})
	_, err := p.Put(ctxT(t), providers.PutRequest{Name: name, Value: []byte("sk-2"), IdempotencyKey: "ev-2", Owner: ownerA})
	wantErr(t, "Put racing another writer", err, providers.ErrConflict, true)
	if !strings.Contains(err.Error(), "HTTP 400") {
		t.Errorf("conflict error %q does not show the 400", err)
	}
	wantValue(t, p, name, "", "sk-other")
	r := put(t, p, name, "sk-2", "ev-2", ownerA)
	if r.Version != "3" || r.Duplicate {
		t.Errorf("retry %+v, want version 3", r)
	}
}

// faultProxy is a reverse proxy in front of Vault that answers matching
// requests itself.
type faultProxy struct {
	next   http.Handler
	status atomic.Int32 // 0: pass through
	header http.Header
	hits   atomic.Int32
	match  func(r *http.Request) bool
}

func (f *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s := f.status.Load(); s != 0 && (f.match == nil || f.match(r)) {
		f.hits.Add(1)
		for k, vs := range f.header {
			w.Header()[k] = vs
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(int(s))
		_, _ = io.WriteString(w, `{"errors":["injected fault for `+r.URL.Path+`?token=hvs.leak"]}`)
		return
	}
	f.next.ServeHTTP(w, r)
}

func TestVaultInjectedFaults(t *testing.T) {
	v := testenv.StartVault(t, testenv.VaultOptions{})
	u, _ := url.Parse(v.Addr)
	fp := &faultProxy{next: httputil.NewSingleHostReverseProxy(u), match: func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/secret/") }}
	srv := httptest.NewServer(fp)
	defer srv.Close()
	ctx := ctxT(t)
	p := open(t, nil, map[string]string{vault.EnvAddr: srv.URL, vault.EnvToken: v.Token})
	put(t, p, "faults/k", "sk-before", "ev-0", ownerA)

	tests := map[string]struct {
		status     int
		header     http.Header
		sentinel   error
		kind       providers.Kind
		retryAfter time.Duration
	}{
		"500":                {status: 500, sentinel: providers.ErrUnavailable, kind: providers.Retryable},
		"502":                {status: 502, sentinel: providers.ErrUnavailable, kind: providers.Retryable},
		"503 sealed":         {status: 503, header: http.Header{"Retry-After": {"2"}}, sentinel: providers.ErrUnavailable, kind: providers.Retryable, retryAfter: 2 * time.Second},
		"429 with hint":      {status: 429, header: http.Header{"Retry-After": {"7"}}, sentinel: providers.ErrThrottled, kind: providers.Throttled, retryAfter: 7 * time.Second},
		"429 without hint":   {status: 429, sentinel: providers.ErrThrottled, kind: providers.Throttled},
		"412 standby behind": {status: 412, sentinel: providers.ErrUnavailable, kind: providers.Retryable},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			fp.header = tc.header
			fp.status.Store(int32(tc.status))
			defer fp.status.Store(0)
			for _, call := range []struct {
				what string
				err  func() error
			}{
				{"Put", func() error {
					_, err := p.Put(ctx, providers.PutRequest{Name: "faults/k", Value: []byte("sk-during"), IdempotencyKey: "ev-x", Owner: ownerA})
					return err
				}},
				{"Get", func() error { _, err := p.Get(ctx, "faults/k", ""); return err }},
				{"Delete", func() error { return p.Delete(ctx, providers.DeleteRequest{Name: "faults/k", Owner: ownerA}) }},
			} {
				err := call.err()
				wantErr(t, call.what, err, tc.sentinel, true)
				var pe *providers.Error
				if errors.As(err, &pe) && (pe.Kind != tc.kind || pe.RetryAfter != tc.retryAfter) {
					t.Errorf("%s: kind %v retry-after %v, want %v %v", call.what, pe.Kind, pe.RetryAfter, tc.kind, tc.retryAfter)
				}
				noLeak(t, err, v.Token, "hvs.leak", "sk-during")
			}
		})
	}
	// Healed: nothing was written during the faults.
	wantValue(t, p, "faults/k", "", "sk-before")
	if fp.hits.Load() == 0 {
		t.Fatal("the proxy injected nothing")
	}

	t.Run("lost response after the write", func(t *testing.T) {
		// The data write lands but its response is lost (the proxy answers
		// 502 after forwarding): the retry with the same event id finds the
		// version unrecorded, same owner and value, and returns it as a
		// Duplicate instead of writing a second one.
		var lose atomic.Bool
		lose.Store(true)
		fp2 := &lossyProxy{next: httputil.NewSingleHostReverseProxy(u), lose: &lose}
		srv2 := httptest.NewServer(fp2)
		defer srv2.Close()
		p2 := open(t, nil, map[string]string{vault.EnvAddr: srv2.URL, vault.EnvToken: v.Token})
		_, err := p2.Put(ctx, providers.PutRequest{Name: "faults/lost", Value: []byte("sk-lost"), IdempotencyKey: "ev-lost", Owner: ownerA})
		wantErr(t, "Put whose response was lost", err, providers.ErrUnavailable, true)
		r, err := p2.Put(ctx, providers.PutRequest{Name: "faults/lost", Value: []byte("sk-lost"), IdempotencyKey: "ev-lost", Owner: ownerA})
		if err != nil || !r.Duplicate || r.Version != "1" {
			t.Fatalf("retry: %+v, %v; want Duplicate of version 1", r, err)
		}
		vs, err := p2.Versions(ctx, "faults/lost")
		if err != nil || len(vs) != 1 || vs[0].IdempotencyKey != "ev-lost" {
			t.Errorf("versions after the retry: %+v, %v", vs, err)
		}
	})
}

// lossyProxy forwards the first KV data write, then answers 502 to the
// client, as a proxy whose upstream connection broke after the request
// was processed.
type lossyProxy struct {
	next http.Handler
	lose *atomic.Bool
}

func (l *lossyProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/secret/data/") && l.lose.CompareAndSwap(true, false) {
		rec := httptest.NewRecorder()
		l.next.ServeHTTP(rec, r)
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	l.next.ServeHTTP(w, r)
}

// TestLiteLLMCompatibility: a secret written exactly as LiteLLM writes it
// is read by keyrelay, and one keyrelay writes is read exactly as LiteLLM
// reads it, with LiteLLM's mount, path prefix and data field settings.
func TestVaultLiteLLMCompatibility(t *testing.T) {
	v := testenv.StartVault(t, testenv.VaultOptions{})
	v.EnableKV(t, "kv-prod", 0)
	ctx := ctxT(t)
	hc := &http.Client{Timeout: 10 * time.Second}
	// litellmURL is LiteLLM's get_url: {addr}/v1/{ns}/{mount}/data/{prefix}/{name}.
	litellmURL := func(mount, prefix, name string) string {
		u := v.Addr + "/v1/" + mount + "/data/"
		if prefix != "" {
			u += prefix + "/"
		}
		return u + name
	}
	litellmWrite := func(t *testing.T, url, field, value, description string) {
		t.Helper()
		data := map[string]any{field: value}
		if description != "" {
			data["description"] = description
		}
		b, _ := json.Marshal(map[string]any{"data": data})
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
		req.Header.Set("X-Vault-Token", v.Token)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("LiteLLM-style write: HTTP %d", resp.StatusCode)
		}
	}
	litellmRead := func(t *testing.T, url, field string) (string, int) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("X-Vault-Token", v.Token)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Data struct {
				Data map[string]any `json:"data"`
			} `json:"data"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		s, _ := body.Data.Data[field].(string)
		return s, resp.StatusCode
	}
	litellmDelete := func(t *testing.T, url string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodDelete, url, nil)
		req.Header.Set("X-Vault-Token", v.Token)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	tests := map[string]struct {
		opts                 map[string]string
		env                  map[string]string
		mount, prefix, field string
	}{
		"defaults":                     {mount: "secret", field: "key"},
		"LiteLLM env mount and prefix": {env: map[string]string{vault.EnvMountName: "kv-prod", vault.EnvPathPrefix: "/litellm-prefix/"}, mount: "kv-prod", prefix: "litellm-prefix", field: "key"},
		"team options with data field": {opts: map[string]string{vault.OptionMount: "kv-prod", vault.OptionPathPrefix: "team-a/keys", vault.OptionDataKey: "password"}, mount: "kv-prod", prefix: "team-a/keys", field: "password"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			env := map[string]string{vault.EnvAddr: v.Addr, vault.EnvToken: v.Token}
			for k, x := range tc.env {
				env[k] = x
			}
			p := open(t, tc.opts, env)

			// LiteLLM wrote it (prefix_for_stored_virtual_keys "litellm/").
			fromLiteLLM := "litellm/" + strings.ReplaceAll(name, " ", "-") + "-from-litellm"
			litellmWrite(t, litellmURL(tc.mount, tc.prefix, fromLiteLLM), tc.field, "sk-written-by-litellm", "a LiteLLM key")
			s := wantValue(t, p, fromLiteLLM, "", "sk-written-by-litellm")
			if providers.IsOwnedBy(s.Tags, providers.Owner{}) {
				t.Errorf("a LiteLLM secret reads as keyrelay's: %v", s.Tags)
			}
			_, err := p.Put(ctx, providers.PutRequest{Name: fromLiteLLM, Value: []byte("sk-keyrelay"), IdempotencyKey: "e1", Owner: ownerA})
			wantErr(t, "Put over LiteLLM's secret", err, providers.ErrNotOwned, false)
			r := put(t, p, fromLiteLLM+"-adopted", "x", "e0", ownerA) // unrelated name works
			_ = r
			if _, err := p.Put(ctx, providers.PutRequest{Name: fromLiteLLM, Value: []byte("sk-keyrelay"), IdempotencyKey: "e1", Owner: ownerA, Adopt: true}); err != nil {
				t.Fatalf("adopting Put: %v", err)
			}
			if got, _ := litellmRead(t, litellmURL(tc.mount, tc.prefix, fromLiteLLM), tc.field); got != "sk-keyrelay" {
				t.Errorf("LiteLLM reads %q after adoption", got)
			}

			// keyrelay wrote it: LiteLLM reads it; LiteLLM deletes it; a
			// keyrelay Put restores it.
			fromKeyrelay := "litellm/" + strings.ReplaceAll(name, " ", "-") + "-from-keyrelay"
			put(t, p, fromKeyrelay, "sk-written-by-keyrelay", "e2", ownerA)
			got, status := litellmRead(t, litellmURL(tc.mount, tc.prefix, fromKeyrelay), tc.field)
			if status != 200 || got != "sk-written-by-keyrelay" {
				t.Errorf("LiteLLM read: HTTP %d value %q", status, got)
			}
			path, err := p.SecretPath(fromKeyrelay)
			if err != nil || v.Addr+"/v1/"+path != litellmURL(tc.mount, tc.prefix, fromKeyrelay) {
				t.Errorf("SecretPath %q, LiteLLM's URL %q", path, litellmURL(tc.mount, tc.prefix, fromKeyrelay))
			}
			litellmDelete(t, litellmURL(tc.mount, tc.prefix, fromKeyrelay))
			_, err = p.Get(ctx, fromKeyrelay, "")
			wantErr(t, "Get after LiteLLM's delete", err, providers.ErrNotFound, false)
			if r := put(t, p, fromKeyrelay, "sk-restored", "e3", ownerA); !r.Created || r.Version != "2" {
				t.Errorf("restore after LiteLLM's delete: %+v", r)
			}
			if got, _ := litellmRead(t, litellmURL(tc.mount, tc.prefix, fromKeyrelay), tc.field); got != "sk-restored" {
				t.Errorf("LiteLLM reads %q after the restore", got)
			}
		})
	}
}

func TestVaultDeleteModes(t *testing.T) {
	v := testenv.StartVault(t, testenv.VaultOptions{})
	root := v.Client(t)
	ctx := ctxT(t)
	for _, mode := range []string{"soft", "destroy", "metadata"} {
		t.Run(mode, func(t *testing.T) {
			p := openToken(t, v, map[string]string{vault.OptionDeleteMode: mode})
			name := "modes/" + mode
			put(t, p, name, "sk-1", "e1", ownerA)
			put(t, p, name, "sk-2", "e2", ownerA)
			if err := p.Delete(ctx, providers.DeleteRequest{Name: name, Owner: ownerA}); err != nil {
				t.Fatal(err)
			}
			_, err := p.Get(ctx, name, "")
			wantErr(t, "Get after delete", err, providers.ErrNotFound, false)
			wantErr(t, "Delete again", p.Delete(ctx, providers.DeleteRequest{Name: name, Owner: ownerA}), providers.ErrNotFound, false)
			meta := kvRead(t, root, "secret/metadata/"+name)
			switch mode {
			case "soft":
				wantValue(t, p, name, "1", "sk-1") // only the current version is hidden
				if meta == nil {
					t.Fatal("metadata gone after a soft delete")
				}
			case "destroy":
				_, err := p.Get(ctx, name, "1")
				wantErr(t, "Get destroyed version", err, providers.ErrNotFound, false)
				cm, _ := meta["custom_metadata"].(map[string]any)
				if cm[providers.ManagedByTag] != "keyrelay" {
					t.Errorf("ownership lost by destroy: %v", cm)
				}
				_, err = p.Put(ctx, providers.PutRequest{Name: name, Value: []byte("x"), IdempotencyKey: "e9", Owner: ownerB})
				wantErr(t, "Put by another owner after destroy", err, providers.ErrNotOwned, false)
			case "metadata":
				if meta != nil {
					t.Errorf("metadata left: %v", meta)
				}
			}
			r := put(t, p, name, "sk-3", "e3", ownerA)
			wantVersion := map[string]string{"soft": "3", "destroy": "3", "metadata": "1"}[mode]
			if !r.Created || r.Version != wantVersion {
				t.Errorf("Put after delete: %+v, want Created version %s", r, wantVersion)
			}
			if mode == "soft" {
				wantValue(t, p, name, "2", "sk-2") // restored by the Put
			}
			if err := p.Delete(ctx, providers.DeleteRequest{Name: name, Owner: ownerA, Force: true}); err != nil {
				t.Fatal(err)
			}
			if meta := kvRead(t, root, "secret/metadata/"+name); meta != nil {
				t.Errorf("Force left metadata: %v", meta)
			}
		})
	}
}

// TestSameEventConcurrently: one event delivered to several workers at once
// (same idempotency key, same value) yields exactly one version; the
// writers that lose the check-and-set and retry get it as a Duplicate.
func TestVaultSameEventConcurrently(t *testing.T) {
	v := testenv.StartVault(t, testenv.VaultOptions{})
	p := openToken(t, v, nil)
	ctx := ctxT(t)
	for round := 0; round < 5; round++ {
		name := fmt.Sprintf("same-event/%d", round)
		put(t, p, name, "sk-old", "ev-old", ownerA)
		var wg sync.WaitGroup
		results := make([]providers.PutResult, 8)
		for i := range results {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				for attempt := 0; attempt < 50; attempt++ {
					r, err := p.Put(ctx, providers.PutRequest{Name: name, Value: []byte("sk-new"), IdempotencyKey: "ev-new", Owner: ownerA})
					if err == nil {
						results[i] = r
						return
					}
					if !errors.Is(err, providers.ErrConflict) {
						t.Errorf("writer %d: %v", i, err)
						return
					}
					time.Sleep(time.Millisecond)
				}
				t.Errorf("writer %d: still conflicting", i)
			}(i)
		}
		wg.Wait()
		vs, err := p.Versions(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if len(vs) != 2 {
			t.Errorf("round %d: %d versions, want 2: %+v", round, len(vs), vs)
		}
		written := 0
		for _, r := range results {
			if r.Version != "2" {
				t.Errorf("round %d: a writer got %+v", round, r)
			}
			if !r.Duplicate {
				written++
			}
		}
		if written != 1 {
			t.Errorf("round %d: %d writers report a write, want 1", round, written)
		}
	}
}

// TestCrashWindows: the states a crash can leave behind are recovered.
func TestVaultCrashWindows(t *testing.T) {
	v := testenv.StartVault(t, testenv.VaultOptions{})
	root := v.Client(t)
	p := openToken(t, v, nil)
	ctx := ctxT(t)
	t.Run("metadata created, no version yet", func(t *testing.T) {
		// A crash after the owner was recorded, before the first version.
		if _, err := root.Logical().WriteWithContext(ctx, "secret/metadata/crash/a", map[string]any{"custom_metadata": map[string]any{
			providers.ManagedByTag: "keyrelay", providers.TeamTag: ownerA.TeamID, providers.KeyTag: ownerA.KeyID}}); err != nil {
			t.Fatal(err)
		}
		_, err := p.Get(ctx, "crash/a", "")
		wantErr(t, "Get of metadata without versions", err, providers.ErrNotFound, false)
		if r := put(t, p, "crash/a", "sk-a", "ev-a", ownerA); !r.Created || r.Version != "1" {
			t.Errorf("Put %+v", r)
		}
		_, err = p.Put(ctx, providers.PutRequest{Name: "crash/a", Value: []byte("x"), IdempotencyKey: "e", Owner: ownerB})
		wantErr(t, "other owner", err, providers.ErrNotOwned, false)
	})
	t.Run("version written, event id not recorded (before DataEventKey)", func(t *testing.T) {
		// The format before event ids travelled in the data: owner in
		// custom_metadata, the value alone, and a crash before the
		// event id was recorded in custom_metadata.
		if _, err := root.Logical().WriteWithContext(ctx, "secret/metadata/crash/b", map[string]any{"custom_metadata": map[string]any{
			providers.ManagedByTag: "keyrelay", providers.TeamTag: ownerA.TeamID, providers.KeyTag: ownerA.KeyID}}); err != nil {
			t.Fatal(err)
		}
		if _, err := root.Logical().WriteWithContext(ctx, "secret/data/crash/b", map[string]any{"data": map[string]any{"key": "sk-b"}}); err != nil {
			t.Fatal(err)
		}
		if r := put(t, p, "crash/b", "sk-b", "ev-b", ownerA); !r.Duplicate || r.Version != "1" {
			t.Errorf("redelivery %+v, want Duplicate of 1", r)
		}
		vs, _ := p.Versions(ctx, "crash/b")
		if len(vs) != 1 || vs[0].IdempotencyKey != "ev-b" {
			t.Errorf("versions %+v", vs)
		}
		// A different value is a different write.
		if r := put(t, p, "crash/b", "sk-b2", "ev-b2", ownerA); r.Duplicate || r.Version != "2" {
			t.Errorf("new event %+v", r)
		}
	})
	t.Run("first version written, owner not recorded", func(t *testing.T) {
		// A create stopped between its first version (cas 0) and its
		// owner's metadata: the redelivery adopts exactly its own version.
		if _, err := root.Logical().WriteWithContext(ctx, "secret/data/crash/d", map[string]any{
			"options": map[string]any{"cas": 0}, "data": map[string]any{"key": "sk-d", vault.DataEventKey: "ev-d"}}); err != nil {
			t.Fatal(err)
		}
		// Another event, or another value, is not this create's: it
		// waits (a retryable conflict) for the create to record its
		// owner, and writes nothing.
		_, err := p.Put(ctx, providers.PutRequest{Name: "crash/d", Value: []byte("sk-d"), IdempotencyKey: "ev-other", Owner: ownerA})
		wantErr(t, "another event over an ownerless version", err, providers.ErrConflict, true)
		_, err = p.Put(ctx, providers.PutRequest{Name: "crash/d", Value: []byte("sk-forged"), IdempotencyKey: "ev-d", Owner: ownerA})
		wantErr(t, "the event id with another value", err, providers.ErrConflict, true)
		if r := put(t, p, "crash/d", "sk-d", "ev-d", ownerA); !r.Duplicate || r.Version != "1" {
			t.Errorf("redelivery %+v, want Duplicate of 1", r)
		}
		s := wantValue(t, p, "crash/d", "", "sk-d")
		if !providers.IsOwnedBy(s.Tags, ownerA) {
			t.Errorf("after the redelivery: tags %v, want owner A", s.Tags)
		}
		_, err = p.Put(ctx, providers.PutRequest{Name: "crash/d", Value: []byte("x"), IdempotencyKey: "e", Owner: ownerB})
		wantErr(t, "other owner after adoption", err, providers.ErrNotOwned, false)
	})
	t.Run("first version written, owner not recorded, then a newer event's stale hint", func(t *testing.T) {
		// After a backend loss, a restore's create stopped between its
		// first version and its owner; a rotation arrives with the
		// ledger's version from before the loss, 1, which matches that
		// first version. Its check-and-set write lands, finds no owner
		// and is taken back; it then waits, like any other event, for
		// the create to record its owner, instead of failing for good,
		// and the create's redelivery still adopts its own version
		// (seen in the e2e restore test: both failed with ErrNotOwned).
		if _, err := root.Logical().WriteWithContext(ctx, "secret/data/crash/h", map[string]any{
			"options": map[string]any{"cas": 0}, "data": map[string]any{"key": "sk-h1", vault.DataEventKey: "ev-h1"}}); err != nil {
			t.Fatal(err)
		}
		rot := providers.PutRequest{Name: "crash/h", Value: []byte("sk-h2"), IdempotencyKey: "ev-h2", Owner: ownerA, ExpectedVersion: "1"}
		_, err := p.Put(ctx, rot)
		wantErr(t, "a newer event's write over the ownerless first version", err, providers.ErrConflict, true)
		if s := wantValue(t, p, "crash/h", "", "sk-h1"); providers.IsOwnedBy(s.Tags, ownerA) {
			t.Errorf("the write that was taken back recorded an owner: %v", s.Tags)
		}
		_, err = p.Put(ctx, rot)
		wantErr(t, "the same write again", err, providers.ErrConflict, true)
		r := put(t, p, "crash/h", "sk-h1", "ev-h1", ownerA)
		if !r.Duplicate {
			t.Errorf("the create's redelivery: %+v, want a Duplicate of its own version", r)
		}
		if s := wantValue(t, p, "crash/h", "", "sk-h1"); !providers.IsOwnedBy(s.Tags, ownerA) {
			t.Errorf("after the create's redelivery: tags %v, want owner A", s.Tags)
		}
		res, err := p.Put(ctx, rot)
		if err != nil {
			t.Fatalf("the rotation after the create recorded its owner: %v", err)
		}
		wantValue(t, p, "crash/h", "", "sk-h2")
		if res.Duplicate {
			t.Errorf("rotation %+v, want a new version", res)
		}
		// One version per event: the copy the undo wrote back is no
		// event's version.
		vs, err := p.Versions(ctx, "crash/h")
		if err != nil {
			t.Fatal(err)
		}
		byEvent := map[string]int{}
		for _, v := range vs {
			if v.IdempotencyKey != "" {
				byEvent[v.IdempotencyKey]++
			}
		}
		if byEvent["ev-h1"] != 1 || byEvent["ev-h2"] != 1 {
			t.Errorf("versions by event %v (%+v), want one each", byEvent, vs)
		}
	})
	t.Run("first version written, owner not recorded, then the next event of the same key", func(t *testing.T) {
		// As above, but the rotation names the event whose value it
		// replaces (its ledger's, PutRequest.Replaces), and the ownerless
		// first version is that event's: the key's own previous value. The
		// rotation takes the secret and writes on top at once, with no
		// version taken back, instead of waiting for a create that may
		// never come back (a restore killed and not resumed). Another
		// event id, or none, still waits.
		for _, hint := range []string{"1", ""} {
			name := "crash/i" + hint
			for _, n := range []string{name, name + "-waits"} {
				if _, err := root.Logical().WriteWithContext(ctx, "secret/data/"+n, map[string]any{
					"options": map[string]any{"cas": 0}, "data": map[string]any{"key": "sk-i1", vault.DataEventKey: "ev-i1"}}); err != nil {
					t.Fatal(err)
				}
			}
			for _, other := range []string{"", "ev-other"} {
				_, err := p.Put(ctx, providers.PutRequest{Name: name + "-waits", Value: []byte("sk-i2"), IdempotencyKey: "ev-i2", Owner: ownerA, ExpectedVersion: hint, Replaces: other})
				wantErr(t, "hint "+hint+": a rotation replacing "+other, err, providers.ErrConflict, true)
			}
			wantValue(t, p, name+"-waits", "", "sk-i1")
			base, err := p.Versions(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			res, err := p.Put(ctx, providers.PutRequest{Name: name, Value: []byte("sk-i2"), IdempotencyKey: "ev-i2", Owner: ownerA, ExpectedVersion: hint, Replaces: "ev-i1"})
			if err != nil || res.Duplicate {
				t.Fatalf("hint %q: the rotation replacing the ownerless first version's event: %+v, %v", hint, res, err)
			}
			if s := wantValue(t, p, name, "", "sk-i2"); !providers.IsOwnedBy(s.Tags, ownerA) {
				t.Errorf("hint %q: tags %v, want owner A", hint, s.Tags)
			}
			vs, err := p.Versions(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if len(vs) != len(base)+1 {
				t.Errorf("hint %q: %d versions after the rotation, %d before: want exactly one more", hint, len(vs), len(base))
			}
			// Another key's rotation naming that event is not the owner.
			_, err = p.Put(ctx, providers.PutRequest{Name: name, Value: []byte("x"), IdempotencyKey: "ev-b", Owner: ownerB, Replaces: "ev-i1"})
			wantErr(t, "hint "+hint+": another key after the rotation", err, providers.ErrNotOwned, false)
		}
	})
	t.Run("another key's owner on metadata without a version", func(t *testing.T) {
		// A create of the former format (metadata first) by another key
		// that stopped before its version: the version keyrelay writes
		// with cas 0 is destroyed, and the owner stays.
		if _, err := root.Logical().WriteWithContext(ctx, "secret/metadata/crash/e", map[string]any{"custom_metadata": map[string]any{
			providers.ManagedByTag: "keyrelay", providers.TeamTag: ownerB.TeamID, providers.KeyTag: ownerB.KeyID}}); err != nil {
			t.Fatal(err)
		}
		_, err := p.Put(ctx, providers.PutRequest{Name: "crash/e", Value: []byte("sk-SENTINEL-e"), IdempotencyKey: "ev-e", Owner: ownerA})
		wantErr(t, "create over another key's metadata", err, providers.ErrNotOwned, false)
		_, err = p.Get(ctx, "crash/e", "1")
		wantErr(t, "Get of the destroyed version", err, providers.ErrNotFound, false)
		meta := kvRead(t, root, "secret/metadata/crash/e")
		if cm, _ := meta["custom_metadata"].(map[string]any); cm[providers.KeyTag] != ownerB.KeyID {
			t.Errorf("custom_metadata %v, want owner B kept", cm)
		}
		// Its owner's create goes on over the destroyed version.
		if r := put(t, p, "crash/e", "sk-e", "ev-e2", ownerB); r.Version != "2" {
			t.Errorf("owner's create %+v, want version 2", r)
		}
	})
	t.Run("someone else's secret at the name", func(t *testing.T) {
		// Not keyrelay: a secret with its own custom_metadata. keyrelay's
		// create must neither write over it nor replace its metadata.
		if _, err := root.Logical().WriteWithContext(ctx, "secret/data/crash/f", map[string]any{"data": map[string]any{"key": "sk-theirs"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := root.Logical().WriteWithContext(ctx, "secret/metadata/crash/f", map[string]any{"custom_metadata": map[string]any{"owner": "someone"}}); err != nil {
			t.Fatal(err)
		}
		_, err := p.Put(ctx, providers.PutRequest{Name: "crash/f", Value: []byte("sk-SENTINEL-f"), IdempotencyKey: "ev-f", Owner: ownerA})
		wantErr(t, "create over someone else's secret", err, providers.ErrNotOwned, false)
		wantValue(t, p, "crash/f", "", "sk-theirs")
		meta := kvRead(t, root, "secret/metadata/crash/f")
		if cm, _ := meta["custom_metadata"].(map[string]any); cm["owner"] != "someone" || cm[providers.ManagedByTag] != nil {
			t.Errorf("custom_metadata %v, want theirs untouched", cm)
		}
	})
	t.Run("operator pre-provisioned metadata", func(t *testing.T) {
		if _, err := root.Logical().WriteWithContext(ctx, "secret/metadata/crash/c", map[string]any{"max_versions": 3, "custom_metadata": map[string]any{"cost-center": "42"}}); err != nil {
			t.Fatal(err)
		}
		put(t, p, "crash/c", "sk-c", "ev-c", ownerA)
		meta := kvRead(t, root, "secret/metadata/crash/c")
		if mv := fmt.Sprint(meta["max_versions"]); mv != "3" {
			t.Errorf("max_versions %s", mv)
		}
	})
}

func TestVaultMaxVersionsAndEventHistory(t *testing.T) {
	v := testenv.StartVault(t, testenv.VaultOptions{})
	root := v.Client(t)
	p := openToken(t, v, map[string]string{vault.OptionMaxVersions: "4", vault.OptionEventHistory: "3"})
	for i := 1; i <= 6; i++ {
		put(t, p, "history/k", fmt.Sprintf("sk-%d", i), fmt.Sprintf("ev-%d", i), ownerA)
	}
	meta := kvRead(t, root, "secret/metadata/history/k")
	if mv := fmt.Sprint(meta["max_versions"]); mv != "4" {
		t.Errorf("max_versions %s", mv)
	}
	// Event ids travel in each version's data, none in custom_metadata.
	cm, _ := meta["custom_metadata"].(map[string]any)
	for k := range cm {
		if strings.HasPrefix(k, vault.EventKeyPrefix) {
			t.Errorf("event id recorded in custom_metadata: %v", cm)
		}
	}
	if d := kvRead(t, root, "secret/data/history/k"); fmt.Sprint(d["data"]) != "map[key:sk-6 keyrelay-event:ev-6]" {
		t.Errorf("data %v", d["data"])
	}
	// Versions reports the event ids of the newest 3 (event_history).
	vs, err := p.Versions(ctxT(t), "history/k")
	if err != nil || len(vs) != 4 || vs[0].Version != "3" || vs[0].IdempotencyKey != "" || vs[1].IdempotencyKey != "ev-4" || vs[3].IdempotencyKey != "ev-6" {
		t.Errorf("Versions %+v %v", vs, err)
	}
}

func TestVaultUpdateTags(t *testing.T) {
	v := testenv.StartVault(t, testenv.VaultOptions{})
	p := openToken(t, v, nil)
	ctx := ctxT(t)
	_, err := p.Put(ctx, providers.PutRequest{Name: "tags/k", Value: []byte("v"), IdempotencyKey: "e1", Owner: ownerA, Description: "first",
		Tags: map[string]string{"keyrelay-alias": "old", "env": "test"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.UpdateTags(ctx, providers.TagRequest{Name: "tags/k", Owner: ownerA, Description: "renamed", Tags: map[string]string{"keyrelay-alias": "new"}}); err != nil {
		t.Fatal(err)
	}
	meta := kvRead(t, v.Client(t), "secret/metadata/tags/k")
	cm, _ := meta["custom_metadata"].(map[string]any)
	if cm["keyrelay-alias"] != "new" || cm["env"] != nil || cm["keyrelay-description"] != "renamed" || cm[providers.ManagedByTag] != "keyrelay" {
		t.Errorf("custom_metadata %v", cm)
	}
	if cv := fmt.Sprint(meta["current_version"]); cv != "1" {
		t.Errorf("UpdateTags wrote a version: current_version %s", cv)
	}
}

func TestVaultRateLimit(t *testing.T) {
	v := testenv.StartVault(t, testenv.VaultOptions{})
	p := openToken(t, v, map[string]string{vault.OptionRateLimit: "20", vault.OptionRateBurst: "1"})
	ctx := ctxT(t)
	put(t, p, "rate/k", "v", "e", ownerA) // warms the token lookup
	start := time.Now()
	for i := 0; i < 10; i++ {
		if _, err := p.Get(ctx, "rate/k", ""); err != nil {
			t.Fatal(err)
		}
	}
	if el := time.Since(start); el < 400*time.Millisecond {
		t.Errorf("10 reads at 20/s took %v", el)
	}
	// A token the deadline cannot wait for: keyrelay's own limit, no call
	// made, with the wait as the retry hint.
	if _, err := p.Get(ctx, "rate/k", ""); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, time.Millisecond)
	defer cancel()
	_, err := p.Get(short, "rate/k", "")
	var pe *providers.Error
	if !errors.Is(err, providers.ErrThrottled) || !errors.Is(err, providers.ErrOwnLimit) || !errors.As(err, &pe) || pe.RetryAfter <= 0 {
		t.Fatalf("read with 1 ms left: %v; want a throttle by keyrelay's own limit with RetryAfter", err)
	}
}
