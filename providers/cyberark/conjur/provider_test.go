package conjur_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/cyberark/conjur"
	"github.com/keyrelay/keyrelay/providers/providertest"
)

var ownerA = providers.Owner{TeamID: "team-a", KeyID: "key-a"}

func put(t *testing.T, p providers.Provider, name, value string) providers.PutResult {
	t.Helper()
	r, err := p.Put(context.Background(), providers.PutRequest{Name: name, Value: []byte(value), IdempotencyKey: "ev-" + name, Owner: ownerA})
	if err != nil {
		t.Fatalf("Put %q: %v", name, err)
	}
	return r
}

func wantErr(t *testing.T, what string, err, sentinel error, retryable bool) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("%s: %v, want %v", what, err, sentinel)
	}
	if providers.IsRetryable(err) != retryable {
		t.Errorf("%s: retryable=%v, want %v (%v)", what, providers.IsRetryable(err), retryable, err)
	}
	var pe *providers.Error
	if !errors.As(err, &pe) || pe.Provider != conjur.Name || pe.Op == "" {
		t.Errorf("%s: %T %v is not a *providers.Error of %s", what, err, err, conjur.Name)
	}
	for _, s := range []string{apiKey, providertest.SentinelValue, "Token token"} {
		if strings.Contains(err.Error(), s) || strings.Contains(fmt.Sprintf("%#v", err), s) {
			t.Errorf("%s: error leaks %q: %v", what, s, err)
		}
	}
}

func TestLayoutIsLiteLLMCompatible(t *testing.T) {
	srv := newFake(t)
	cfg := config(srv)
	cfg.PolicyBranch = "keyrelay/team-a"
	p := newProvider(t, cfg)
	r := put(t, p, "litellm/sk-virtual-1", "sk-123")
	if r.Version != "1" || !r.Created {
		t.Fatalf("Put: %+v", r)
	}
	if !srv.Exists("keyrelay/team-a/litellm/sk-virtual-1") {
		t.Fatal("variable not declared as <branch>/<prefix+name>")
	}
	a := srv.Annotations("keyrelay/team-a/litellm/sk-virtual-1")
	if a[providers.ManagedByTag] != providers.ManagedByValue || a[providers.TeamTag] != "team-a" || a[providers.EventTag] != "ev-litellm/sk-virtual-1" || a[conjur.AnnotationEventVersion] != "1" {
		t.Errorf("annotations %v", a)
	}
	// A value another tool (LiteLLM) added reads back as the raw string.
	srv.SetVariable("keyrelay/team-a", "keyrelay/team-a/litellm/sk-virtual-1", nil, []byte("sk-456"))
	s, err := p.Get(context.Background(), "litellm/sk-virtual-1", "")
	if err != nil || string(s.Value) != "sk-456" || s.Version != "2" {
		t.Fatalf("Get: %+v %v", s, err)
	}
}

func TestRootPolicyWhenAllowed(t *testing.T) {
	srv := newFake(t)
	srv.AddUser("admin", "admin-key", "root")
	cfg := config(srv)
	cfg.Username, cfg.APIKey, cfg.PolicyBranch, cfg.AllowRootPolicy = "admin", "admin-key", "root", true
	p := newProvider(t, cfg)
	put(t, p, "litellm-key", "v")
	if !srv.Exists("litellm-key") {
		t.Fatal("root policy variable is not declared at the top level, where LiteLLM writes")
	}
	cfg.AllowRootPolicy = false
	if _, err := conjur.New(context.Background(), cfg, nil); !errors.Is(err, providers.ErrInvalid) {
		t.Fatalf("root branch without AllowRootPolicy: %v", err)
	}
}

func TestPolicyScoping(t *testing.T) {
	srv := newFake(t)
	cfg := config(srv)
	cfg.Username, cfg.APIKey = "host/team-a", "team-a-key"
	cfg.PolicyBranch = "keyrelay/team-a"
	own := newProvider(t, cfg)
	put(t, own, "k1", "v1")

	cfg.PolicyBranch = "keyrelay/team-b"
	other := newProvider(t, cfg)
	_, err := other.Put(context.Background(), providers.PutRequest{Name: "k1", Value: []byte("v"), Owner: ownerA})
	wantErr(t, "Put into another team's branch", err, providers.ErrAccessDenied, false)
	if !strings.Contains(err.Error(), "keyrelay/team-b") {
		t.Errorf("error does not name the branch: %v", err)
	}
	if srv.Exists("keyrelay/team-b/k1") {
		t.Error("variable declared in a branch the role may not write")
	}
	// Variables of another branch are invisible (Conjur answers 404).
	cfg.PolicyBranch = "keyrelay/team-b"
	srv.SetVariable("keyrelay/team-b", "keyrelay/team-b/k2", nil, []byte("theirs"))
	_, err = other.Get(context.Background(), "k2", "")
	wantErr(t, "Get in another team's branch", err, providers.ErrNotFound, false)

	cfg.PolicyBranch = "keyrelay/missing"
	cfg.Username, cfg.APIKey = login, apiKey
	missing := newProvider(t, cfg)
	_, err = missing.Put(context.Background(), providers.PutRequest{Name: "k", Value: []byte("v"), Owner: ownerA})
	wantErr(t, "Put into a missing branch", err, providers.ErrInvalid, false)
	if !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("error does not say the branch is missing: %v", err)
	}
}

func TestDeleteForbiddenByPolicy(t *testing.T) {
	srv := newFake(t)
	p := newProvider(t, config(srv))
	put(t, p, "del/me", "v")
	srv.FailNext("/policies/", http.StatusForbidden, 1)
	err := p.Delete(context.Background(), providers.DeleteRequest{Name: "del/me", Owner: ownerA})
	wantErr(t, "Delete forbidden by policy", err, providers.ErrAccessDenied, false)
	if !strings.Contains(err.Error(), "left in place") {
		t.Errorf("error does not say why: %v", err)
	}
	if !srv.Exists("keyrelay/del/me") {
		t.Fatal("variable gone")
	}
	if err := p.Delete(context.Background(), providers.DeleteRequest{Name: "del/me", Owner: ownerA}); err != nil {
		t.Fatal(err)
	}
	if srv.Exists("keyrelay/del/me") {
		t.Fatal("variable still declared after Delete")
	}
}

func TestHostileNames(t *testing.T) {
	srv := newFake(t)
	p := newProvider(t, config(srv))
	for _, name := range []string{
		"", "a\nb", "a\r\nb", "a: b", "a:b", "!variable", "a!b", "#c", "a#b", "'q'", `"q"`, "a'b", `a"b`,
		"-lead", "/lead", "trail/", "a//b", "a/../b", "../x", "./x", ".hidden", "a b", "a\tb", "a\x00b",
		"{x}", "[x]", "&anchor", "*alias", "a%2Fb", "a?version=1", "a\\b", "é", "x\n- !delete\n  record: !variable y",
		strings.Repeat("a", conjur.MaxNameLength+1),
	} {
		_, err := p.Put(context.Background(), providers.PutRequest{Name: name, Value: []byte("v"), Owner: ownerA})
		wantErr(t, fmt.Sprintf("Put %q", name), err, providers.ErrInvalid, false)
		_, err = p.Get(context.Background(), name, "")
		wantErr(t, fmt.Sprintf("Get %q", name), err, providers.ErrInvalid, false)
		err = p.Delete(context.Background(), providers.DeleteRequest{Name: name, Owner: ownerA})
		wantErr(t, fmt.Sprintf("Delete %q", name), err, providers.ErrInvalid, false)
	}
	for _, name := range []string{"a", "team/key-1_x.y", "a@b+c=d", "A/B", "x-", "k.v/1"} {
		if err := conjur.ValidateName(name); err != nil {
			t.Errorf("ValidateName(%q): %v", name, err)
		}
	}
	// Tag values with YAML syntax are quoted, not interpreted.
	hostile := "x\"\n- !delete\n  record: !variable victim\n#"
	srv.SetVariable("keyrelay", "keyrelay/victim", nil, []byte("v"))
	_, err := p.Put(context.Background(), providers.PutRequest{Name: "tagged", Value: []byte("v"), Owner: ownerA,
		Tags: map[string]string{"note": hostile}, Description: hostile})
	if err != nil {
		t.Fatal(err)
	}
	if !srv.Exists("keyrelay/victim") {
		t.Fatal("a tag value injected a policy statement")
	}
	s, err := p.Get(context.Background(), "tagged", "")
	if err != nil || s.Tags["note"] != hostile {
		t.Fatalf("hostile tag did not round trip: %q %v", s.Tags["note"], err)
	}
	_, err = p.Put(context.Background(), providers.PutRequest{Name: "tagged", Value: []byte("v"), Owner: ownerA,
		Tags: map[string]string{"bad\nkey": "v"}})
	wantErr(t, "hostile tag name", err, providers.ErrInvalid, false)
}

func TestErrorClassification(t *testing.T) {
	srv := newFake(t)
	p := newProvider(t, config(srv))
	put(t, p, "c", providertest.SentinelValue)
	ctx := context.Background()
	for _, c := range []struct {
		status    int
		sentinel  error
		retryable bool
	}{
		{http.StatusForbidden, providers.ErrAccessDenied, false},
		{http.StatusNotFound, providers.ErrNotFound, false},
		{http.StatusConflict, providers.ErrConflict, true},
		{http.StatusUnprocessableEntity, providers.ErrInvalid, false},
		{http.StatusTooManyRequests, providers.ErrThrottled, true},
		{http.StatusInternalServerError, providers.ErrUnavailable, true},
		{http.StatusBadGateway, providers.ErrUnavailable, true},
		{http.StatusServiceUnavailable, providers.ErrUnavailable, true},
	} {
		srv.FailNext("/secrets/", c.status, 1)
		_, err := p.Get(ctx, "c", "")
		wantErr(t, fmt.Sprintf("Get with HTTP %d", c.status), err, c.sentinel, c.retryable)
	}
	// 401 on a request: re-authenticate once, then it works...
	n := srv.Authentications()
	srv.FailNext("/secrets/", http.StatusUnauthorized, 1)
	if _, err := p.Get(ctx, "c", ""); err != nil {
		t.Fatalf("Get after one 401: %v", err)
	}
	if srv.Authentications() != n+1 {
		t.Errorf("authentications %d, want %d", srv.Authentications(), n+1)
	}
	// ...and a second 401 is access denied.
	srv.FailNext("/secrets/", http.StatusUnauthorized, 2)
	_, err := p.Get(ctx, "c", "")
	wantErr(t, "Get after two 401s", err, providers.ErrAccessDenied, false)

	// Wrong API key.
	cfg := config(srv)
	cfg.APIKey = "wrong-" + apiKey
	bad := newProvider(t, cfg)
	_, err = bad.Get(ctx, "c", "")
	wantErr(t, "wrong API key", err, providers.ErrAccessDenied, false)
	if strings.Contains(err.Error(), cfg.APIKey) {
		t.Errorf("error leaks the API key: %v", err)
	}

	// Untrusted certificate.
	cfg = config(srv)
	cfg.CAPEM = nil
	untrusted := newProvider(t, cfg)
	_, err = untrusted.Get(ctx, "c", "")
	wantErr(t, "untrusted certificate", err, providers.ErrUnavailable, false)

	// Bad versions.
	_, err = p.Get(ctx, "c", "x")
	wantErr(t, "Get version x", err, providers.ErrInvalid, false)
	_, err = p.Get(ctx, "c", "0")
	wantErr(t, "Get version 0", err, providers.ErrInvalid, false)

	// Empty value.
	_, err = p.Put(ctx, providers.PutRequest{Name: "empty", Value: nil, Owner: ownerA})
	wantErr(t, "empty value", err, providers.ErrInvalid, false)

	// Server gone: retryable.
	srv.Close()
	_, err = p.Get(ctx, "c", "")
	wantErr(t, "server down", err, providers.ErrUnavailable, true)
}

func TestTokenReauthentication(t *testing.T) {
	srv := newFake(t)
	p := newProvider(t, config(srv))
	put(t, p, "tok", "v1")
	if srv.Authentications() != 1 {
		t.Fatalf("authentications %d, want 1 (the token is reused)", srv.Authentications())
	}
	srv.ExpireTokens()
	r, err := p.Put(context.Background(), providers.PutRequest{Name: "tok", Value: []byte("v2"), IdempotencyKey: "e2", Owner: ownerA})
	if err != nil || r.Version != "2" {
		t.Fatalf("Put after token expiry: %+v %v", r, err)
	}
	if srv.Authentications() != 2 {
		t.Errorf("authentications %d, want 2", srv.Authentications())
	}
	// Tokens are refreshed proactively at 85% of their life.
	srv.TokenTTL = 3 * time.Second
	srv.ExpireTokens()
	if _, err := p.Get(context.Background(), "tok", ""); err != nil {
		t.Fatal(err)
	}
	n := srv.Authentications()
	time.Sleep(2700 * time.Millisecond)
	if _, err := p.Get(context.Background(), "tok", ""); err != nil {
		t.Fatal(err)
	}
	if srv.Authentications() != n+1 {
		t.Errorf("authentications %d, want %d (refresh before expiry)", srv.Authentications(), n+1)
	}
}

func TestConfigFromOptions(t *testing.T) {
	env := map[string]string{
		conjur.EnvAPIBase: "https://conjur.example", conjur.EnvAccount: "acct", conjur.EnvUsername: "host/keyrelay",
		conjur.EnvAPIKey: "k", conjur.EnvSSLVerify: "false",
	}
	getenv := func(k string) string { return env[k] }
	c, err := conjur.ConfigFromOptions(map[string]string{conjur.OptionPolicyBranch: "keyrelay/team-a"}, getenv)
	if err != nil {
		t.Fatal(err)
	}
	if c.APIBase != "https://conjur.example" || c.SSLVerify || c.PolicyBranch != "keyrelay/team-a" || c.Timeout != conjur.DefaultTimeout ||
		c.ListPageSize != conjur.DefaultListPageSize {
		t.Errorf("config %+v", c)
	}
	if c, err := conjur.ConfigFromOptions(map[string]string{conjur.OptionListPageSize: "25"}, getenv); err != nil || c.ListPageSize != 25 {
		t.Errorf("list_page_size 25: %+v %v", c, err)
	}
	env[conjur.EnvAPIKey], env[conjur.EnvClientCert] = "", "/etc/keyrelay/client.pem"
	if _, err := conjur.ConfigFromOptions(nil, getenv); err == nil || !strings.Contains(err.Error(), "ClientKeyFile") {
		t.Errorf("client certificate without key: %v", err)
	}
	env[conjur.EnvClientKey] = "/etc/keyrelay/client-key.pem"
	if _, err := conjur.ConfigFromOptions(nil, getenv); err != nil {
		t.Errorf("client certificate instead of an API key: %v", err)
	}
	env[conjur.EnvAPIKey], env[conjur.EnvClientCert], env[conjur.EnvClientKey] = "k", "", ""
	c, _ = conjur.ConfigFromOptions(nil, getenv)
	if c.PolicyBranch != conjur.DefaultPolicyBranch {
		t.Errorf("default branch %q", c.PolicyBranch)
	}
	for _, tc := range []struct {
		opts  map[string]string
		unset string
		field string
	}{
		{unset: conjur.EnvAPIBase, field: "APIBase"},
		{unset: conjur.EnvAccount, field: "Account"},
		{unset: conjur.EnvUsername, field: "Username"},
		{unset: conjur.EnvAPIKey, field: "APIKey"},
		{opts: map[string]string{conjur.OptionPolicyBranch: "a\nb"}, field: "PolicyBranch"},
		{opts: map[string]string{conjur.OptionPolicyBranch: "../root"}, field: "PolicyBranch"},
		{opts: map[string]string{conjur.OptionPolicyBranch: "root"}, field: "PolicyBranch"},
		{opts: map[string]string{conjur.OptionAllowRootPolicy: "yes please"}, field: "AllowRootPolicy"},
		{opts: map[string]string{conjur.OptionSSLVerify: "maybe"}, field: "SSLVerify"},
		{opts: map[string]string{conjur.OptionTimeout: "soon"}, field: "Timeout"},
		{opts: map[string]string{conjur.OptionAPIBase: "ftp://x"}, field: "APIBase"},
		{opts: map[string]string{conjur.OptionListPageSize: "many"}, field: "ListPageSize"},
		{opts: map[string]string{conjur.OptionListPageSize: "1"}, field: "ListPageSize"},
		{opts: map[string]string{conjur.OptionListPageSize: "-5"}, field: "ListPageSize"},
	} {
		e := map[string]string{}
		for k, v := range env {
			if k != tc.unset {
				e[k] = v
			}
		}
		_, err := conjur.ConfigFromOptions(tc.opts, func(k string) string { return e[k] })
		if err == nil || !strings.Contains(err.Error(), "Config."+tc.field) {
			t.Errorf("%v without %s: %v, want an error naming Config.%s", tc.opts, tc.unset, err, tc.field)
		}
		if err != nil && strings.Contains(err.Error(), "\"k\"") {
			t.Errorf("config error leaks the API key: %v", err)
		}
	}
}

func TestRegister(t *testing.T) {
	r := providers.NewRegistry()
	conjur.Register(r)
	if got := r.Names(); len(got) != 1 || got[0] != conjur.Name || conjur.Name != "cyberark" {
		t.Fatalf("names %v", got)
	}
	if !r.TeamOptionAllowed(conjur.Name, conjur.OptionPolicyBranch) {
		t.Error("policy_branch is not a team option")
	}
	for _, o := range []string{conjur.OptionAPIBase, conjur.OptionAccount, conjur.OptionCABundle, conjur.OptionSSLVerify, conjur.OptionAllowRootPolicy, conjur.OptionListPageSize, "api_key", "username"} {
		if r.TeamOptionAllowed(conjur.Name, o) {
			t.Errorf("team may set %q", o)
		}
	}
	srv := newFake(t)
	env := map[string]string{conjur.EnvAPIBase: srv.URL, conjur.EnvAccount: account, conjur.EnvUsername: login,
		conjur.EnvAPIKey: apiKey, conjur.EnvSSLVerify: "false"}
	p, err := r.Open(context.Background(), conjur.Name, providers.Config{Getenv: func(k string) string { return env[k] }})
	if err != nil {
		t.Fatal(err)
	}
	put(t, p, "via-registry", "v")
	_, err = r.Open(context.Background(), conjur.Name, providers.Config{Options: map[string]string{conjur.OptionPolicyBranch: "other"}, Getenv: func(string) string { return "" }})
	if !errors.Is(err, providers.ErrInvalid) {
		t.Errorf("Open without config: %v, want ErrInvalid", err)
	}
	_ = r.Close()
}
