package conjur_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/keyrelay/keyrelay/providers/cyberark/conjur/conjurfake"
)

// litellm does what LiteLLM's CyberArkSecretManager does on the wire:
// authenticate, POST "- !variable \"name\"" to the root policy, and add and
// read values at /secrets/{account}/variable/{quote(name, safe="")}.
type litellm struct {
	t    *testing.T
	srv  *conjurfake.Server
	http *http.Client
	auth string
}

func newLiteLLM(t *testing.T, srv *conjurfake.Server, user, key string) *litellm {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(srv.CACertPEM())
	l := &litellm{t: t, srv: srv, http: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}}
	_, tok := l.do(http.MethodPost, "/authn/"+account+"/"+user+"/authenticate", key)
	l.auth = `Token token="` + base64.StdEncoding.EncodeToString([]byte(tok)) + `"`
	return l
}

func (l *litellm) do(method, path, body string) (int, string) {
	l.t.Helper()
	req, _ := http.NewRequest(method, l.srv.URL+path, strings.NewReader(body))
	if l.auth != "" {
		req.Header.Set("Authorization", l.auth)
	}
	resp, err := l.http.Do(req)
	if err != nil {
		l.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (l *litellm) write(name, value string) {
	l.t.Helper()
	if st, b := l.do(http.MethodPost, "/policies/"+account+"/policy/root", `- !variable "`+name+`"`+"\n"); st != 201 {
		l.t.Fatalf("policy: %d %s", st, b)
	}
	if st, b := l.do(http.MethodPost, "/secrets/"+account+"/variable/"+strings.ReplaceAll(url.PathEscape(name), "/", "%2F"), value); st != 201 {
		l.t.Fatalf("add secret: %d %s", st, b)
	}
}

func (l *litellm) read(name string) (int, string) {
	return l.do(http.MethodGet, "/secrets/"+account+"/variable/"+strings.ReplaceAll(url.PathEscape(name), "/", "%2F"), "")
}

func TestLiteLLMCompatibility(t *testing.T) {
	srv := newFake(t)
	srv.AddUser("admin", "admin-key", "root")
	ll := newLiteLLM(t, srv, "admin", "admin-key")

	// keyrelay in a team branch; LiteLLM reads <branch>/<name>.
	p := newProvider(t, config(srv))
	put(t, p, "litellm/virtual-key-1", "sk-from-keyrelay")
	if st, v := ll.read("keyrelay/litellm/virtual-key-1"); st != 200 || v != "sk-from-keyrelay" {
		t.Fatalf("LiteLLM read of a keyrelay secret: %d %q", st, v)
	}

	// keyrelay on the root policy (operator opt-in) shares LiteLLM's ids.
	cfg := config(srv)
	cfg.Username, cfg.APIKey, cfg.PolicyBranch, cfg.AllowRootPolicy = "admin", "admin-key", "root", true
	root := newProvider(t, cfg)
	ll.write("litellm/written-by-litellm", "sk-from-litellm")
	s, err := root.Get(context.Background(), "litellm/written-by-litellm", "")
	if err != nil || string(s.Value) != "sk-from-litellm" || s.Version != "1" {
		t.Fatalf("keyrelay read of a LiteLLM secret: %+v %v", s, err)
	}
	put(t, root, "litellm/written-by-keyrelay", "sk-2")
	if st, v := ll.read("litellm/written-by-keyrelay"); st != 200 || v != "sk-2" {
		t.Fatalf("LiteLLM read: %d %q", st, v)
	}
}
