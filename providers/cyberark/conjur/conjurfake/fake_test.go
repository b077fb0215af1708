package conjurfake

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

type rawClient struct {
	t    *testing.T
	s    *Server
	http *http.Client
	tok  string
}

func newRaw(t *testing.T, s *Server, login, key string) *rawClient {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.CACertPEM())
	c := &rawClient{t: t, s: s, http: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}}
	status, body := c.do(http.MethodPost, "/authn/"+s.Account+"/"+url.QueryEscape(login)+"/authenticate", key)
	if status == http.StatusOK {
		c.tok = `Token token="` + base64.StdEncoding.EncodeToString([]byte(body)) + `"`
	}
	return c
}

func (c *rawClient) do(method, path, body string) (int, string) {
	c.t.Helper()
	st, b, _ := c.doH(method, path, body)
	return st, b
}

func (c *rawClient) doH(method, path, body string) (int, string, http.Header) {
	c.t.Helper()
	req, _ := http.NewRequest(method, c.s.URL+path, strings.NewReader(body))
	if c.tok != "" {
		req.Header.Set("Authorization", c.tok)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func wantStatus(t *testing.T, what string, got int, body string, want int, code string) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: HTTP %d %s, want %d", what, got, body, want)
	}
	if code != "" {
		var e struct {
			Error struct{ Code, Message string }
		}
		if json.Unmarshal([]byte(body), &e) != nil || e.Error.Code != code || e.Error.Message == "" {
			t.Errorf("%s: body %s, want Conjur error code %q", what, body, code)
		}
	}
}

func TestFakeSemantics(t *testing.T) {
	s := New("acct")
	defer s.Close()
	s.AddBranch("app")
	s.AddUser("host/app", "k", "app")
	if c := newRaw(t, s, "host/app", "wrong"); c.tok != "" {
		t.Fatal("authenticated with a wrong API key")
	}
	c := newRaw(t, s, "host/app", "k")
	if c.tok == "" {
		t.Fatal("no token")
	}
	pol := "/policies/acct/policy/app"
	st, b := c.do(http.MethodPost, pol, "- !variable\n  id: v\n  annotations:\n    a: one\n- !variable w\n")
	wantStatus(t, "append", st, b, 201, "")
	st, b = c.do(http.MethodPost, pol, "- !variable\n  id: v\n  annotations:\n    a: two\n")
	wantStatus(t, "append again", st, b, 201, "")
	if s.Annotations("app/v")["a"] != "one" {
		t.Error("POST changed an existing annotation")
	}
	st, b = c.do(http.MethodPatch, pol, "- !variable\n  id: v\n  annotations:\n    a: two\n")
	wantStatus(t, "update", st, b, 201, "")
	if s.Annotations("app/v")["a"] != "two" {
		t.Error("PATCH did not change the annotation")
	}
	st, b = c.do(http.MethodPost, pol, "- !delete\n  record: !variable v\n")
	wantStatus(t, "delete in append mode", st, b, 422, "validation_failed")
	st, b = c.do(http.MethodPost, pol, "- !user bob\n")
	wantStatus(t, "unsupported statement", st, b, 422, "validation_failed")
	st, b = c.do(http.MethodPost, pol, "- !variable [\n")
	wantStatus(t, "bad YAML", st, b, 422, "validation_failed")
	st, b = c.do(http.MethodPost, "/policies/acct/policy/root", "- !variable x\n")
	wantStatus(t, "root without privilege", st, b, 403, "forbidden")
	st, b = c.do(http.MethodPost, "/policies/acct/policy/nope", "- !variable x\n")
	wantStatus(t, "missing branch", st, b, 404, "not_found")

	st, b = c.do(http.MethodPost, "/secrets/acct/variable/app/undeclared", "x")
	wantStatus(t, "add to undeclared", st, b, 404, "not_found")
	st, b = c.do(http.MethodPost, "/secrets/acct/variable/app/v", "")
	wantStatus(t, "empty value", st, b, 422, "unprocessable_entity")
	for _, v := range []string{"1", "2"} {
		st, b = c.do(http.MethodPost, "/secrets/acct/variable/app/v", "value-"+v)
		wantStatus(t, "add", st, b, 201, "")
	}
	st, b = c.do(http.MethodGet, "/secrets/acct/variable/app/v?version=1", "")
	if st != 200 || b != "value-1" {
		t.Fatalf("version 1: %d %q", st, b)
	}
	st, b = c.do(http.MethodGet, "/secrets/acct/variable/app/v", "")
	if st != 200 || b != "value-2" {
		t.Fatalf("latest: %d %q", st, b)
	}
	st, b = c.do(http.MethodGet, "/secrets/acct/variable/app/v?version=3", "")
	wantStatus(t, "missing version", st, b, 404, "not_found")
	st, b = c.do(http.MethodGet, "/secrets/acct/variable/app/w", "")
	wantStatus(t, "no value yet", st, b, 404, "not_found")
	st, b = c.do(http.MethodGet, "/resources/acct/variable/"+url.QueryEscape("app/v"), "")
	if st != 200 || !strings.Contains(b, `"version":2`) || !strings.Contains(b, `"name":"a"`) {
		t.Fatalf("resource: %d %s", st, b)
	}

	st, b = c.do(http.MethodPut, pol, "- !variable w\n")
	wantStatus(t, "replace", st, b, 201, "")
	if s.Exists("app/v") || !s.Exists("app/w") {
		t.Error("PUT did not replace the branch")
	}
	st, b = c.do(http.MethodPatch, pol, "- !delete\n  record: !variable w\n")
	wantStatus(t, "delete", st, b, 201, "")
	if s.Exists("app/w") {
		t.Error("!delete kept the variable")
	}

	s.ExpireTokens()
	st, _ = c.do(http.MethodGet, "/secrets/acct/variable/app/w", "")
	if st != 401 {
		t.Fatalf("expired token: %d", st)
	}
	c.tok = `Token token="garbage"`
	st, _ = c.do(http.MethodGet, "/secrets/acct/variable/app/w", "")
	if st != 401 {
		t.Fatalf("garbage token: %d", st)
	}
	for i := 0; i < MaxVersions+5; i++ {
		s.SetVariable("app", "app/many", nil, []byte("x"))
	}
	c = newRaw(t, s, "host/app", "k")
	st, b = c.do(http.MethodGet, "/secrets/acct/variable/app/many?version=1", "")
	wantStatus(t, "pruned version", st, b, 404, "not_found")
}

// Two loads of one branch that overlap: the second gets Conjur's 409
// policy_conflict with a Retry-After; loads of other branches go through,
// and a load's changes appear when it ends.
func TestPolicyLoadConflicts(t *testing.T) {
	s := New("acct")
	defer s.Close()
	s.AddBranch("app")
	s.AddBranch("other")
	s.AddUser("host/app", "k", "app", "other")
	s.SetPolicyLoadTime(300 * time.Millisecond)
	c := newRaw(t, s, "host/app", "k")
	pol := "/policies/acct/policy/app"

	done := make(chan int)
	go func() {
		st, _ := c.do(http.MethodPatch, pol, "- !variable slow\n")
		done <- st
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		n := s.loading["app"]
		s.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first load never started")
		}
		time.Sleep(time.Millisecond)
	}
	if s.Exists("app/slow") {
		t.Error("a load's changes appeared before it ended")
	}
	st, b, h := c.doH(http.MethodPatch, pol, "- !variable fast\n")
	wantStatus(t, "overlapping load", st, b, 409, "policy_conflict")
	if h.Get("Retry-After") != "1" {
		t.Errorf("Retry-After %q, want \"1\"", h.Get("Retry-After"))
	}
	// A bad policy is rejected before it can conflict, as Conjur validates
	// the policy version before saving it.
	st, b = c.do(http.MethodPatch, pol, "- !variable [\n")
	wantStatus(t, "bad YAML during a load", st, b, 422, "validation_failed")
	st, b = c.do(http.MethodPatch, "/policies/acct/policy/other", "- !variable x\n")
	wantStatus(t, "load of another branch", st, b, 201, "")
	if st := <-done; st != 201 {
		t.Fatalf("first load: HTTP %d", st)
	}
	if !s.Exists("app/slow") || s.Exists("app/fast") {
		t.Error("wrong variables after the loads")
	}
	if n := s.PolicyConflicts(); n != 1 {
		t.Errorf("PolicyConflicts() = %d, want 1", n)
	}

	// Another client's load in progress.
	s.SetPolicyLoadTime(0)
	s.SetPolicyConflictRetryAfter(5)
	release := s.HoldPolicyLoad("app")
	st, b, h = c.doH(http.MethodPatch, pol, "- !variable held\n")
	wantStatus(t, "load during another client's", st, b, 409, "policy_conflict")
	if h.Get("Retry-After") != "5" {
		t.Errorf("Retry-After %q, want \"5\"", h.Get("Retry-After"))
	}
	release()
	release()
	st, b = c.do(http.MethodPatch, pol, "- !variable held\n")
	wantStatus(t, "load after the release", st, b, 201, "")
}
