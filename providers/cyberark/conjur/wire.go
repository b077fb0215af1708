package conjur

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// client speaks Conjur's v5 REST API the way github.com/cyberark/conjur-api-go
// v0.15.7 builds its requests (same paths, escaping and headers):
//
//	POST  /authn/{account}/{QueryEscape(login)}/authenticate   body: API key
//	GET   /resources/{account}/variable/{QueryEscape(id)}
//	POST  /secrets/{account}/variable/{PathEscape(id)}         body: value
//	GET   /secrets/{account}/variable/{PathEscape(id)}[?version=N]
//	PATCH /policies/{account}/policy/{QueryEscape(branch)}      body: YAML
//
// with "Authorization: Token token=\"<base64 of the token JSON>\"". The
// SDK's own packages cannot be compiled into this module yet (its logging
// package needs github.com/sirupsen/logrus, which go.sum lacks), so the
// requests are built here; every request carries the caller's context.
type client struct {
	base, account, login string
	apiKey               string
	http                 *http.Client

	mu      sync.Mutex
	header  string    // Authorization header value, "" when none
	refresh time.Time // refresh the token after this instant
}

func newHTTPClient(c Config) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CABundle != "" || len(c.CAPEM) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if c.CABundle != "" {
			pem, err := os.ReadFile(c.CABundle)
			if err != nil {
				return nil, fmt.Errorf("conjur: Config.CABundle (option %q): cannot read the file", OptionCABundle)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("conjur: Config.CABundle (option %q): no PEM certificates in the file", OptionCABundle)
			}
		}
		if len(c.CAPEM) > 0 && !pool.AppendCertsFromPEM(c.CAPEM) {
			return nil, fmt.Errorf("conjur: Config.CAPEM: no PEM certificates")
		}
		tc.RootCAs = pool
	}
	if !c.SSLVerify {
		tc.InsecureSkipVerify = true //nolint:gosec // CYBERARK_SSL_VERIFY=false, as LiteLLM allows
	}
	if c.ClientCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.ClientCertFile, c.ClientKeyFile)
		if err != nil {
			return nil, fmt.Errorf("conjur: Config.ClientCertFile/ClientKeyFile (%s, %s): cannot load the key pair", EnvClientCert, EnvClientKey)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	tr.TLSClientConfig = tc
	return &http.Client{Transport: tr}, nil
}

// token returns the Authorization header, authenticating when there is no
// token, it is due for refresh, or force.
func (c *client) token(ctx context.Context, force bool) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !force && c.header != "" && time.Now().Before(c.refresh) {
		return c.header, nil
	}
	u := c.base + "/authn/" + url.PathEscape(c.account) + "/" + url.QueryEscape(c.login) + "/authenticate"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(c.apiKey))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "text/plain")
	resp, err := c.http.Do(req)
	if err != nil {
		return "", err
	}
	body, err := readBody(resp)
	if err != nil {
		return "", err
	}
	iat, exp, err := parseToken(body)
	if err != nil {
		return "", err
	}
	// Refresh at 85% of the token's life, as conjur-api-go does.
	c.refresh = iat.Add(time.Duration(float64(exp.Sub(iat)) * 0.85))
	c.header = `Token token="` + base64.StdEncoding.EncodeToString(body) + `"`
	return c.header, nil
}

// parseToken reads iat and exp (default iat+8m) from a Conjur access token.
func parseToken(b []byte) (iat, exp time.Time, err error) {
	var t struct{ Protected, Payload, Signature string }
	if json.Unmarshal(b, &t) != nil || t.Protected == "" || t.Payload == "" || t.Signature == "" {
		return iat, exp, &apiError{Status: 502, Code: "malformed_token"}
	}
	raw, err := base64.StdEncoding.DecodeString(t.Payload)
	if err != nil {
		return iat, exp, &apiError{Status: 502, Code: "malformed_token"}
	}
	var p struct {
		Iat *float64 `json:"iat"`
		Exp *float64 `json:"exp"`
	}
	if json.Unmarshal(raw, &p) != nil || p.Iat == nil {
		return iat, exp, &apiError{Status: 502, Code: "malformed_token"}
	}
	iat = time.Unix(int64(*p.Iat), 0)
	exp = iat.Add(8 * time.Minute)
	if p.Exp != nil {
		exp = time.Unix(int64(*p.Exp), 0)
	}
	return iat, exp, nil
}

func readBody(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return body, err
	}
	ae := &apiError{Status: resp.StatusCode}
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && isToken(e.Error.Code) {
		ae.Code = e.Error.Code
	}
	return nil, ae
}

func isToken(s string) bool {
	if len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// do sends an authenticated request; a 401 re-authenticates once and
// retries.
func (c *client) do(ctx context.Context, method, path string, body []byte, contentType string) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		h, err := c.token(ctx, attempt > 0)
		if err != nil {
			return nil, err
		}
		var r io.Reader
		if body != nil {
			r = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", h)
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode == http.StatusUnauthorized && attempt == 0 {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			continue
		}
		return readBody(resp)
	}
}

// resource is the part of GET /resources/... keyrelay reads.
type resource struct {
	Annotations []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	} `json:"annotations"`
	Secrets []struct {
		Version int `json:"version"`
	} `json:"secrets"`
}

func (r *resource) annotations() map[string]string {
	m := make(map[string]string, len(r.Annotations))
	for _, a := range r.Annotations {
		m[a.Name] = a.Value
	}
	return m
}

// latest is the newest version, 0 when the variable has no value.
func (r *resource) latest() int {
	n := 0
	for _, s := range r.Secrets {
		if s.Version > n {
			n = s.Version
		}
	}
	return n
}

func (c *client) resource(ctx context.Context, id string) (*resource, error) {
	b, err := c.do(ctx, http.MethodGet, "/resources/"+url.PathEscape(c.account)+"/variable/"+url.QueryEscape(id), nil, "")
	if err != nil {
		return nil, err
	}
	var r resource
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, &apiError{Status: 502, Code: "malformed_resource"}
	}
	return &r, nil
}

func (c *client) addSecret(ctx context.Context, id string, value []byte) error {
	_, err := c.do(ctx, http.MethodPost, "/secrets/"+url.PathEscape(c.account)+"/variable/"+url.PathEscape(id), value, "application/x-www-form-urlencoded")
	return err
}

func (c *client) secret(ctx context.Context, id string, version int) ([]byte, error) {
	p := "/secrets/" + url.PathEscape(c.account) + "/variable/" + url.PathEscape(id)
	if version > 0 {
		p += "?version=" + strconv.Itoa(version)
	}
	return c.do(ctx, http.MethodGet, p, nil, "")
}

// loadPolicy PATCHes (Conjur's "update" mode) policy into branch.
func (c *client) loadPolicy(ctx context.Context, branch, policy string) error {
	_, err := c.do(ctx, http.MethodPatch, "/policies/"+url.PathEscape(c.account)+"/policy/"+url.QueryEscape(branch), []byte(policy), "")
	return err
}
