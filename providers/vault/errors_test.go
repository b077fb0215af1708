package vault

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keyrelay/keyrelay/providers"
)

func TestVaultClassify(t *testing.T) {
	p := &Provider{cfg: Config{Token: "hvs.TOPSECRET", AppRoleSecretID: "sid-TOPSECRET", Timeout: time.Second}}
	resp := func(code int, msgs ...string) error {
		return &api.ResponseError{HTTPMethod: "PUT", URL: "https://vault:8200/v1/secret/data/x?token=hvs.TOPSECRET", StatusCode: code, Errors: msgs}
	}
	tests := map[string]struct {
		err        error
		info       *callInfo
		kind       providers.Kind
		sentinel   error
		retryAfter time.Duration
	}{
		"cas mismatch":  {err: resp(400, "check-and-set parameter did not match the current version"), kind: providers.Retryable, sentinel: providers.ErrConflict},
		"bad request":   {err: resp(400, "no data provided"), kind: providers.Permanent, sentinel: providers.ErrInvalid},
		"forbidden":     {err: resp(403, "1 error occurred:\n\t* permission denied\n\n"), kind: providers.Permanent, sentinel: providers.ErrAccessDenied},
		"not found":     {err: resp(404), kind: providers.Permanent, sentinel: providers.ErrNotFound},
		"not kv v2":     {err: resp(405), kind: providers.Permanent, sentinel: providers.ErrInvalid},
		"too large":     {err: resp(413), kind: providers.Permanent, sentinel: providers.ErrInvalid},
		"standby lag":   {err: resp(412), kind: providers.Retryable, sentinel: providers.ErrUnavailable},
		"throttled":     {err: resp(429, "request path \"x\": rate limit quota exceeded"), info: &callInfo{status: 429, retryAfter: 3 * time.Second}, kind: providers.Throttled, sentinel: providers.ErrThrottled, retryAfter: 3 * time.Second},
		"server error":  {err: resp(500, "internal error"), kind: providers.Retryable, sentinel: providers.ErrUnavailable},
		"sealed":        {err: resp(503, "Vault is sealed"), info: &callInfo{status: 503, retryAfter: time.Second}, kind: providers.Retryable, sentinel: providers.ErrUnavailable, retryAfter: time.Second},
		"not impl":      {err: resp(501), kind: providers.Permanent, sentinel: providers.ErrInvalid},
		"refused":       {err: &url.Error{Op: "Put", URL: "https://vault:8200/v1/secret/data/x?token=hvs.TOPSECRET", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}, kind: providers.Retryable, sentinel: providers.ErrUnavailable},
		"timeout":       {err: &url.Error{Op: "Put", URL: "https://vault/v1/x", Err: context.DeadlineExceeded}, kind: providers.Retryable, sentinel: context.DeadlineExceeded},
		"untrusted":     {err: &url.Error{Op: "Put", URL: "https://vault/v1/x", Err: x509.UnknownAuthorityError{}}, kind: providers.Permanent, sentinel: providers.ErrAccessDenied},
		"other":         {err: errors.New("unexpected EOF"), kind: providers.Retryable, sentinel: providers.ErrUnavailable},
		"token in body": {err: resp(500, "something about hvs.TOPSECRET and sid-TOPSECRET"), kind: providers.Retryable, sentinel: providers.ErrUnavailable},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := p.classify(context.Background(), "put", "litellm/k", tc.err, tc.info)
			if e.Kind != tc.kind {
				t.Errorf("kind %v, want %v", e.Kind, tc.kind)
			}
			if !errors.Is(e, tc.sentinel) {
				t.Errorf("%q does not match %v", e, tc.sentinel)
			}
			if e.RetryAfter != tc.retryAfter {
				t.Errorf("RetryAfter %v, want %v", e.RetryAfter, tc.retryAfter)
			}
			for _, s := range []string{e.Error(), fmt.Sprintf("%+v", e), fmt.Sprintf("%#v", e)} {
				for _, bad := range []string{"TOPSECRET", "?token", "https://vault", "\n"} {
					if strings.Contains(s, bad) {
						t.Errorf("error text contains %q: %s", bad, s)
					}
				}
			}
			if e.Provider != Name || e.Op != "put" || e.Name != "litellm/k" {
				t.Errorf("error fields %+v", e)
			}
		})
	}
}

func TestVaultClassifyCallerContext(t *testing.T) {
	p := &Provider{}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e := p.classify(ctx, "get", "n", &url.Error{Op: "Get", URL: "http://v", Err: context.Canceled}, nil)
	if !errors.Is(e, context.Canceled) || providers.IsRetryable(e) {
		t.Errorf("cancelled: %v (retryable %v)", e, providers.IsRetryable(e))
	}
	ctx, cancel = context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	e = p.classify(ctx, "get", "n", &url.Error{Op: "Get", URL: "http://v", Err: errors.New("net/http: request canceled")}, nil)
	if !errors.Is(e, context.DeadlineExceeded) || !providers.IsRetryable(e) {
		t.Errorf("deadline: %v (retryable %v)", e, providers.IsRetryable(e))
	}
}

func TestVaultScrubTruncates(t *testing.T) {
	p := &Provider{}
	s := p.scrub(strings.Repeat("é", 400))
	if len(s) > maxErrText+3 || !strings.HasSuffix(s, "...") || !strings.HasPrefix(s, "é") {
		t.Errorf("scrub: %d bytes %q...", len(s), s[:10])
	}
}

func TestVaultParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"":                              0,
		"3":                             3 * time.Second,
		"-1":                            0,
		"soon":                          0,
		"Thu, 01 Jan 2026 00:00:05 GMT": 5 * time.Second,
		"Wed, 31 Dec 2025 23:00:00 GMT": 0,
	} {
		if got := parseRetryAfter(v, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", v, got, want)
		}
	}
}
