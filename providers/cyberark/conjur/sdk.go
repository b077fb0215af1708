package conjur

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/cyberark/conjur-api-go/conjurapi"
	"github.com/cyberark/conjur-api-go/conjurapi/authn"
	"github.com/cyberark/conjur-api-go/conjurapi/response"
)

// client talks to Conjur through the official SDK,
// github.com/cyberark/conjur-api-go. The SDK builds every request (its
// *Request methods: URLs, escaping, headers and telemetry), authenticates
// with the API key (AuthenticateRequest), parses and ages access tokens
// (authn.NewToken, AuthnToken.ShouldRefresh: refresh at 85% of a token's
// life) and reads every response (response.DataResponse / JSONResponse,
// which turn a non-2xx status into *response.ConjurError).
//
// What is kept here is what the SDK lacks:
//
//   - Contexts. The SDK's high-level calls (AddSecret, LoadPolicy, ...) and
//     Client.SubmitRequest take no context, so a caller's deadline or
//     cancellation could not stop them. Each request the SDK builds is
//     given the caller's context and sent on the SDK client's
//     *http.Client.
//   - Concurrency. Client.SubmitRequest refreshes the SDK client's token
//     without a lock (Client.RefreshToken writes it unsynchronized), so the
//     token is held here under a mutex and the Authorization header set
//     here, in the SDK's format.
//   - Re-authentication on 401: the SDK reports a 401 to its caller; a
//     request that gets one re-authenticates once and is retried.
//   - Retry-After: the SDK's *response.ConjurError keeps no headers, so
//     the hint (Conjur sends one with 409 policy_conflict) is read from
//     the response (respErr).
//   - TLS as LiteLLM configures it (see newHTTPClient).
type client struct {
	sdk     *conjurapi.Client
	http    *http.Client
	account string
	login   authn.LoginPair

	mu  sync.Mutex
	tok *authn.AuthnToken // nil when not authenticated
}

// newClient builds the SDK client. It makes no network call.
func newClient(cfg Config) (*client, error) {
	sc := conjurapi.Config{
		ApplianceURL: strings.TrimRight(cfg.APIBase, "/"),
		Account:      cfg.Account,
		// Never read or write ~/.netrc or a keyring.
		CredentialStorage: conjurapi.CredentialStorageNone,
		Environment:       conjurapi.EnvironmentSH,
	}
	login := authn.LoginPair{Login: cfg.Username, APIKey: cfg.APIKey}
	sdk, err := conjurapi.NewClientFromKey(sc, login)
	if err != nil {
		// The SDK's validation messages name Config fields, never the
		// API key (which is not part of its Config).
		return nil, fmt.Errorf("conjur: the Conjur SDK rejected the configuration: %v", err)
	}
	hc, err := newHTTPClient(cfg, sdk.GetHttpClient())
	if err != nil {
		return nil, err
	}
	sdk.SetHttpClient(hc)
	return &client{sdk: sdk, http: hc, account: cfg.Account, login: login}, nil
}

// newHTTPClient returns the SDK's HTTP client with keyrelay's TLS settings.
// The SDK's own TLS options do not fit LiteLLM's configuration:
// Config.SSLCert/SSLCertPath replace the system roots instead of adding to
// them and cannot turn verification off (CYBERARK_SSL_VERIFY=false), and
// its client-certificate fields (ClientCertFile, ClientCertKeyFile) are
// only used with authn-cert, not with API-key authentication over mutual
// TLS (CYBERARK_CLIENT_CERT, CYBERARK_CLIENT_KEY). So the SDK's transport
// (proxy and dial settings) is cloned and given this TLS configuration.
// There is no client-wide timeout: each call is bounded by its context.
func newHTTPClient(c Config, base *http.Client) (*http.Client, error) {
	var tr *http.Transport
	if base != nil {
		if t, ok := base.Transport.(*http.Transport); ok {
			tr = t.Clone()
		}
	}
	if tr == nil {
		tr = http.DefaultTransport.(*http.Transport).Clone()
	}
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

// close releases idle connections.
func (c *client) close() { c.sdk.Cleanup() }

// token returns the Authorization header, authenticating through the SDK
// when there is no token, the SDK says it is due for refresh, or force.
func (c *client) token(ctx context.Context, force bool) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if force || c.tok == nil || c.tok.ShouldRefresh() {
		req, err := c.sdk.AuthenticateRequest(c.login)
		if err != nil {
			return "", err
		}
		resp, err := c.http.Do(req.WithContext(ctx))
		if err != nil {
			return "", err
		}
		body, err := response.DataResponse(resp)
		if err != nil {
			return "", respErr(resp, err)
		}
		// authn.NewToken panics on a payload whose iat or exp is not a
		// number; check the shape first.
		if !wellFormedToken(body) {
			return "", &apiError{Status: http.StatusBadGateway, Code: "malformed_token"}
		}
		tok, err := authn.NewToken(body)
		if err != nil {
			return "", &apiError{Status: http.StatusBadGateway, Code: "malformed_token"}
		}
		c.tok = tok
	}
	// The header the SDK's Client.SubmitRequest sets.
	return `Token token="` + base64.StdEncoding.EncodeToString(c.tok.Raw()) + `"`, nil
}

// wellFormedToken reports whether b is a Conjur access token whose payload
// has a numeric iat and, if present, a numeric exp.
func wellFormedToken(b []byte) bool {
	var t struct{ Protected, Payload, Signature string }
	if json.Unmarshal(b, &t) != nil || t.Protected == "" || t.Payload == "" || t.Signature == "" {
		return false
	}
	raw, err := base64.StdEncoding.DecodeString(t.Payload)
	if err != nil {
		return false
	}
	var p map[string]any
	if json.Unmarshal(raw, &p) != nil {
		return false
	}
	if _, ok := p["iat"].(float64); !ok {
		return false
	}
	if exp, ok := p["exp"]; ok {
		if _, ok := exp.(float64); !ok {
			return false
		}
	}
	return true
}

// do sends a request the SDK builds (build is called once per attempt, as
// a request body can be read only once) with ctx and the access token; a
// 401 re-authenticates once and retries.
func (c *client) do(ctx context.Context, build func() (*http.Request, error)) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		h, err := c.token(ctx, attempt > 0)
		if err != nil {
			return nil, err
		}
		req, err := build()
		if err != nil {
			return nil, err
		}
		req = req.WithContext(ctx)
		req.Header.Set("Authorization", h)
		req.Header.Set(conjurapi.ConjurSourceHeader, c.sdk.GetTelemetryHeader())
		resp, err := c.http.Do(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode == http.StatusUnauthorized && attempt == 0 {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			continue
		}
		return resp, nil
	}
}

// respErr is sdkErr for an error the SDK read from resp, keeping resp's
// Retry-After.
func respErr(resp *http.Response, err error) error {
	err = sdkErr(err)
	var ae *apiError
	if resp != nil && errors.As(err, &ae) {
		ae.RetryAfter = retryAfter(resp.Header)
	}
	return err
}

// sdkErr turns the SDK's *response.ConjurError into an *apiError, keeping
// only the HTTP status and Conjur's error code: the SDK's message is the
// response body or Conjur's message, which may echo request data. Other
// errors (transport errors) are returned as they are; classify never
// copies their text either.
func sdkErr(err error) error {
	var ce *response.ConjurError
	if !errors.As(err, &ce) {
		return err
	}
	ae := &apiError{Status: ce.Code}
	if ce.Details != nil && isToken(ce.Details.Code) {
		ae.Code = ce.Details.Code
	}
	return ae
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

// resource is the part of a Conjur resource's JSON keyrelay reads (as
// Client.Resource and Client.Resources return it, one per resource). The
// SDK's typed conjurapi.Resource is not used: it declares annotations as a
// map, while Conjur sends a list of {name, value, policy}.
type resource struct {
	// ID is the full id, "<account>:variable:<id>".
	ID string `json:"id"`
	// Policy is the full id of the policy that declared the resource,
	// "<account>:policy:<branch>".
	Policy      string `json:"policy"`
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

// resource reads the variable's resource, as Client.Resource does.
func (c *client) resource(ctx context.Context, id string) (*resource, error) {
	resp, err := c.do(ctx, func() (*http.Request, error) {
		return c.sdk.ResourceRequest(c.account + ":variable:" + id)
	})
	if err != nil {
		return nil, err
	}
	b, err := response.DataResponse(resp)
	if err != nil {
		return nil, respErr(resp, err)
	}
	var r resource
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, &apiError{Status: http.StatusBadGateway, Code: "malformed_resource"}
	}
	return &r, nil
}

// resources reads one page of the variables visible to the role, as
// Client.Resources does: GET /resources/{account}?kind=variable&search=
// &limit=&offset=. Conjur orders a page request (one with a limit) by
// resource id.
func (c *client) resources(ctx context.Context, search string, limit, offset int) ([]resource, error) {
	resp, err := c.do(ctx, func() (*http.Request, error) {
		return c.sdk.ResourcesRequest(&conjurapi.ResourceFilter{Kind: "variable", Search: search, Limit: limit, Offset: offset})
	})
	if err != nil {
		return nil, err
	}
	b, err := response.DataResponse(resp)
	if err != nil {
		return nil, respErr(resp, err)
	}
	var rs []resource
	if err := json.Unmarshal(b, &rs); err != nil {
		return nil, &apiError{Status: http.StatusBadGateway, Code: "malformed_resources"}
	}
	return rs, nil
}

// addSecret adds a version, as Client.AddSecret does.
func (c *client) addSecret(ctx context.Context, id string, value []byte) error {
	resp, err := c.do(ctx, func() (*http.Request, error) {
		return c.sdk.AddSecretRequest(id, string(value))
	})
	if err != nil {
		return err
	}
	return respErr(resp, response.EmptyResponse(resp))
}

// secret reads the current value (version 0) or a version, as
// Client.RetrieveSecret and RetrieveSecretWithVersion do.
func (c *client) secret(ctx context.Context, id string, version int) ([]byte, error) {
	resp, err := c.do(ctx, func() (*http.Request, error) {
		if version > 0 {
			return c.sdk.RetrieveSecretWithVersionRequest(id, version)
		}
		return c.sdk.RetrieveSecretRequest(id)
	})
	if err != nil {
		return nil, err
	}
	b, err := response.DataResponse(resp)
	if err != nil {
		return nil, respErr(resp, err)
	}
	return b, nil
}

// loadPolicy loads policy into branch in the SDK's PolicyModePatch
// (Conjur's "update" mode), as Client.LoadPolicy does.
func (c *client) loadPolicy(ctx context.Context, branch, policy string) error {
	resp, err := c.do(ctx, func() (*http.Request, error) {
		return c.sdk.LoadPolicyRequest(conjurapi.PolicyModePatch, branch, bytes.NewReader([]byte(policy)), false)
	})
	if err != nil {
		return err
	}
	var pr conjurapi.PolicyResponse
	return respErr(resp, response.JSONResponse(resp, &pr))
}
