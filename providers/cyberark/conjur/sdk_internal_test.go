package conjur

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cyberark/conjur-api-go/conjurapi"
	"github.com/cyberark/conjur-api-go/conjurapi/response"

	"github.com/keyrelay/keyrelay/providers"
)

const testAPIKey = "api-key-that-must-not-leak"

func testToken(payload string) []byte {
	return []byte(`{"protected":"e30=","payload":"` + base64.StdEncoding.EncodeToString([]byte(payload)) + `","signature":"c2ln"}`)
}

func TestSDKErrorsAreSanitized(t *testing.T) {
	secret := "sk-value-that-must-not-leak"
	ce := &response.ConjurError{Code: 422, Message: "echo " + secret + " " + testAPIKey,
		Details: &response.ConjurErrorDetails{Code: "validation_failed", Message: secret, Target: testAPIKey}}
	err := classify(context.Background(), "put", "n", fmt.Errorf("wrapped: %w", sdkErr(ce)))
	if !errors.Is(err, providers.ErrInvalid) || providers.IsRetryable(err) {
		t.Fatalf("422: %v", err)
	}
	if !strings.Contains(err.Error(), "validation_failed") {
		t.Errorf("Conjur's error code is lost: %v", err)
	}
	for _, s := range []string{secret, testAPIKey, "echo"} {
		if strings.Contains(err.Error(), s) || strings.Contains(fmt.Sprintf("%#v", err), s) {
			t.Errorf("error leaks %q: %v", s, err)
		}
	}
	// A code that is not a plain token is dropped.
	ce.Details.Code = "bad code " + secret
	if err := classify(context.Background(), "put", "n", sdkErr(ce)); strings.Contains(err.Error(), secret) {
		t.Errorf("error leaks the code: %v", err)
	}
	for status, want := range map[int]error{401: providers.ErrAccessDenied, 403: providers.ErrAccessDenied,
		404: providers.ErrNotFound, 409: providers.ErrConflict, 429: providers.ErrThrottled, 503: providers.ErrUnavailable} {
		err := classify(context.Background(), "get", "n", sdkErr(&response.ConjurError{Code: status, Message: secret}))
		if !errors.Is(err, want) || strings.Contains(err.Error(), secret) {
			t.Errorf("HTTP %d: %v, want %v", status, err, want)
		}
	}
}

// authn.NewToken panics on such payloads; they must be rejected first.
func TestMalformedTokensAreRejected(t *testing.T) {
	for _, p := range []string{`{"iat":"1"}`, `{"iat":null}`, `{"iat":1,"exp":null}`, `{"iat":1,"exp":"2"}`, `{}`, `[]`} {
		if wellFormedToken(testToken(p)) {
			t.Errorf("payload %s accepted", p)
		}
	}
	if !wellFormedToken(testToken(`{"sub":"x","iat":1,"exp":2}`)) {
		t.Error("a good token was rejected")
	}
}

// fakeAppliance authenticates and then answers resource requests with
// handle.
func fakeAppliance(t *testing.T, token []byte, handle http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	var auths atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/authn/") {
			auths.Add(1)
			_, _ = w.Write(token)
			return
		}
		handle(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &auths
}

func testProvider(t *testing.T, url string) *Provider {
	t.Helper()
	p, err := New(context.Background(), Config{APIBase: url, Account: "acct", Username: "host/keyrelay", APIKey: testAPIKey, SSLVerify: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func TestRequestsAreTheSDKs(t *testing.T) {
	now := time.Now().Unix()
	var telemetry atomic.Value
	srv, _ := fakeAppliance(t, testToken(fmt.Sprintf(`{"sub":"host/keyrelay","iat":%d,"exp":%d}`, now, now+480)), func(w http.ResponseWriter, r *http.Request) {
		telemetry.Store(r.Header.Get(conjurapi.ConjurSourceHeader))
		if r.URL.EscapedPath() != "/resources/acct/variable/keyrelay%2Fa%2Fb" || !strings.HasPrefix(r.Header.Get("Authorization"), `Token token="`) {
			t.Errorf("request %s %s", r.Method, r.URL.EscapedPath())
		}
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"error":{"code":"internal","message":"echo ` + testAPIKey + `"}}`))
	})
	p := testProvider(t, srv.URL)
	_, err := p.Get(context.Background(), "a/b", "")
	if !errors.Is(err, providers.ErrUnavailable) || !providers.IsRetryable(err) || strings.Contains(err.Error(), testAPIKey) {
		t.Fatalf("Get: %v", err)
	}
	if v, _ := telemetry.Load().(string); v == "" {
		t.Errorf("no %s header: the request was not built by the SDK", conjurapi.ConjurSourceHeader)
	}
}

func TestContextBoundsSDKRequests(t *testing.T) {
	now := time.Now().Unix()
	release := make(chan struct{})
	srv, _ := fakeAppliance(t, testToken(fmt.Sprintf(`{"iat":%d,"exp":%d}`, now, now+480)), func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	p := testProvider(t, srv.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := p.Get(ctx, "slow", "")
	if time.Since(start) > 5*time.Second {
		t.Fatalf("Get took %v with a 200ms deadline", time.Since(start))
	}
	if !errors.Is(err, context.DeadlineExceeded) || !providers.IsRetryable(err) {
		t.Fatalf("Get: %v", err)
	}
}

func TestMalformedTokenFromApplianceIsAnError(t *testing.T) {
	srv, auths := fakeAppliance(t, testToken(`{"iat":"not a number"}`), func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("request without a token: %s", r.URL.Path)
	})
	p := testProvider(t, srv.URL)
	_, err := p.Get(context.Background(), "x", "")
	if !errors.Is(err, providers.ErrUnavailable) || auths.Load() != 1 {
		t.Fatalf("Get: %v (authentications %d)", err, auths.Load())
	}
}
