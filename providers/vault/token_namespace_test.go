package vault_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/providers/vault"
)

// namespaceProxy puts the real (OSS) Vault behind a Vault Enterprise
// namespace: requests reach it only when they name the namespace, as a
// path prefix (/v1/<ns>/...) or as the X-Vault-Namespace header, which
// the proxy strips before forwarding (OSS Vault has no namespaces).
// Anything else is refused 403, as Enterprise refuses a token created in
// the namespace when used from another. It records the namespace header
// of every token request (auth/token/...).
type namespaceProxy struct {
	ns   string
	next http.Handler
	addr string // the proxy's URL

	mu     sync.Mutex
	tokens []string // "path ns=<header>" of the token requests
}

func (p *namespaceProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	header := r.Header.Get("X-Vault-Namespace")
	path := r.URL.Path
	inNS := strings.Trim(header, "/") == p.ns
	if rest, ok := strings.CutPrefix(path, "/v1/"+p.ns+"/"); ok {
		path, inNS = "/v1/"+rest, true
	}
	if strings.HasPrefix(path, "/v1/auth/token/") {
		p.mu.Lock()
		p.tokens = append(p.tokens, strings.TrimPrefix(path, "/v1/auth/token/")+" ns="+header)
		p.mu.Unlock()
	}
	if !inNS {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, `{"errors":["permission denied"]}`)
		return
	}
	r.Header.Del("X-Vault-Namespace")
	r.URL.Path, r.URL.RawPath = path, ""
	p.next.ServeHTTP(w, r)
}

func (p *namespaceProxy) tokenRequests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.tokens...)
}

func startNamespaceProxy(t *testing.T, v *testenv.Vault, ns string) *namespaceProxy {
	t.Helper()
	u, err := url.Parse(v.Addr)
	if err != nil {
		t.Fatal(err)
	}
	p := &namespaceProxy{ns: ns, next: httputil.NewSingleHostReverseProxy(u)}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	p.addr = srv.URL
	return p
}

// TestVaultTokenRequestsInLoginNamespace: on Vault Enterprise or HCP
// Vault (HCP_VAULT_NAMESPACE=admin) a token belongs to the namespace it
// was created in, and Vault looks it up, renews and revokes it only
// there. The provider's lookup-self, renew-self and revoke-self must
// carry the login namespace, while its KV requests keep the secret
// namespace in their path: else a periodic token is never renewed and
// dies after its period, an AppRole token is never renewed (a login each
// TTL instead) nor revoked at Close.
func TestVaultTokenRequestsInLoginNamespace(t *testing.T) {
	const ns = "admin"
	wantAllInNamespace := func(t *testing.T, p *namespaceProxy, wantOps ...string) {
		t.Helper()
		got := p.tokenRequests()
		seen := map[string]bool{}
		for _, r := range got {
			op, header, _ := strings.Cut(r, " ns=")
			seen[op] = true
			if header != ns {
				t.Errorf("token request %s sent with X-Vault-Namespace %q, want %q", op, header, ns)
			}
		}
		for _, op := range wantOps {
			if !seen[op] {
				t.Errorf("no %s request (token requests: %v)", op, got)
			}
		}
	}

	t.Run("periodic token", func(t *testing.T) {
		v := testenv.StartVault(t, testenv.VaultOptions{})
		v.WritePolicy(t, "keyrelay", testenv.KVPolicy("secret"))
		sec, err := v.Client(t).Auth().Token().CreateWithContext(ctxT(t), &api.TokenCreateRequest{Policies: []string{"keyrelay"}, Period: "3s"})
		if err != nil {
			t.Fatal(err)
		}
		px := startNamespaceProxy(t, v, ns)
		p := open(t, nil, map[string]string{vault.EnvAddr: px.addr, vault.EnvToken: sec.Auth.ClientToken, vault.EnvNamespace: ns})
		put(t, p, "ns/key", "sk-1", "ev-1", ownerA)
		time.Sleep(6 * time.Second) // two periods without a call
		put(t, p, "ns/key", "sk-2", "ev-2", ownerA)
		wantValue(t, p, "ns/key", "", "sk-2")
		wantAllInNamespace(t, px, "lookup-self", "renew-self")
		if st := p.AuthStats(); st.Failures != 0 {
			t.Errorf("AuthStats %+v, want no failed lookup or renewal", st)
		}
	})

	for _, name := range []string{"root token", "non-renewable token"} {
		t.Run(name, func(t *testing.T) {
			// A static token that cannot be renewed (a root token that
			// does not expire, or one created non-renewable) is looked up
			// once, in its namespace, and never renewed.
			v := testenv.StartVault(t, testenv.VaultOptions{})
			v.WritePolicy(t, "keyrelay", testenv.KVPolicy("secret"))
			tok := v.Token
			if name == "non-renewable token" {
				no := false
				sec, err := v.Client(t).Auth().Token().CreateWithContext(ctxT(t), &api.TokenCreateRequest{Policies: []string{"keyrelay"}, TTL: "1h", Renewable: &no})
				if err != nil {
					t.Fatal(err)
				}
				tok = sec.Auth.ClientToken
			}
			px := startNamespaceProxy(t, v, ns)
			p := open(t, nil, map[string]string{vault.EnvAddr: px.addr, vault.EnvToken: tok, vault.EnvNamespace: ns})
			put(t, p, "ns/static", "sk-1", "ev-1", ownerA)
			put(t, p, "ns/static", "sk-2", "ev-2", ownerA)
			wantValue(t, p, "ns/static", "", "sk-2")
			if got := px.tokenRequests(); len(got) != 1 || got[0] != "lookup-self ns="+ns {
				t.Errorf("token requests %v, want one lookup-self in namespace %s", got, ns)
			}
			if st := p.AuthStats(); st.Renewals != 0 || st.Failures != 0 {
				t.Errorf("AuthStats %+v, want no renewal and no failure", st)
			}
		})
	}

	t.Run("approle", func(t *testing.T) {
		v := testenv.StartVault(t, testenv.VaultOptions{})
		v.WritePolicy(t, "keyrelay", testenv.KVPolicy("secret"))
		roleID, secretID := v.EnableAppRole(t, testenv.AppRoleOptions{Policies: []string{"keyrelay"}, TokenTTL: 3 * time.Second})
		px := startNamespaceProxy(t, v, ns)
		p := open(t, nil, map[string]string{vault.EnvAddr: px.addr, vault.EnvAppRoleRoleID: roleID, vault.EnvAppRoleSecretID: secretID, vault.EnvNamespace: ns})
		deadline := time.Now().Add(4 * time.Second)
		for i := 0; time.Now().Before(deadline); i++ {
			put(t, p, "ns/approle", "sk", "ev-"+time.Now().Format(time.RFC3339Nano), ownerA)
			time.Sleep(200 * time.Millisecond)
		}
		tok := vault.CurrentToken(p)
		st := p.AuthStats()
		if st.Renewals == 0 || st.Failures != 0 {
			t.Errorf("AuthStats %+v, want renewals and no failures", st)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		wantAllInNamespace(t, px, "renew-self", "revoke-self")
		if _, err := v.Client(t).Auth().Token().LookupWithContext(ctxT(t), tok); err == nil {
			t.Errorf("the login token is still valid after Close: revoke-self did not reach its namespace")
		}
	})
}
