package vault

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// callInfo is what the transport saw of the last response to one call:
// the Vault client turns error responses into *api.ResponseError values
// that keep neither the status of a 404 without body nor the headers.
type callInfo struct {
	status     int
	retryAfter time.Duration
}

type callKey struct{}

func withCallInfo(ctx context.Context) (context.Context, *callInfo) {
	ci := &callInfo{}
	return context.WithValue(ctx, callKey{}, ci), ci
}

// recordingTransport records the status and Retry-After of each response in
// the request context's callInfo.
type recordingTransport struct {
	base http.RoundTripper
}

func (t *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if resp != nil {
		if ci, ok := req.Context().Value(callKey{}).(*callInfo); ok {
			ci.status = resp.StatusCode
			ci.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		}
	}
	return resp, err
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// newHTTPClient builds the HTTP client from c: TLS settings from c only
// (never from VAULT_* variables), a connection pool sized for concurrent
// workers, and the recording transport.
func newHTTPClient(c Config) (*http.Client, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TLSServerName, InsecureSkipVerify: c.TLSSkipVerify} //nolint:gosec // opt-in, documented
	if c.CACert != "" {
		pem, err := os.ReadFile(c.CACert)
		if err != nil {
			return nil, fmt.Errorf("vault: Config.CACert (option %q): %w", OptionCACert, errors.Unwrap(err))
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("vault: Config.CACert (option %q): %s holds no PEM certificate", OptionCACert, c.CACert)
		}
		tlsCfg.RootCAs = pool
	}
	if c.ClientCert != "" {
		cert, err := tls.LoadX509KeyPair(c.ClientCert, c.ClientKey)
		if err != nil {
			// The tls error names files and PEM problems, never key bytes.
			return nil, fmt.Errorf("vault: Config.ClientCert/ClientKey (options %q, %q): %w", OptionClientCert, OptionClientKey, err)
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		TLSClientConfig:       tlsCfg,
	}
	return &http.Client{
		Transport: &recordingTransport{base: tr},
		// The Vault client follows redirects itself.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}

// newAPIClient builds a Vault client that takes nothing from the process
// environment: address, TLS, retries and timeout come from c, and the
// token, namespace and headers api.NewClient reads from VAULT_TOKEN,
// VAULT_NAMESPACE and VAULT_HEADERS are cleared.
func newAPIClient(c Config) (*api.Client, error) {
	hc, err := newHTTPClient(c)
	if err != nil {
		return nil, err
	}
	cfg := &api.Config{
		Address:      c.Addr,
		HttpClient:   hc,
		Timeout:      c.Timeout,
		MaxRetries:   c.MaxRetries,
		MinRetryWait: 250 * time.Millisecond,
		MaxRetryWait: 2 * time.Second,
		// Backoff and CheckRetry nil: the client's defaults (linear jitter;
		// retry 412, 429, 5xx except 501, and connection errors).
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vault: client: %w", err)
	}
	client.ClearToken()
	client.ClearNamespace()
	client.SetHeaders(http.Header{api.RequestHeaderName: []string{"true"}})
	return client, nil
}
