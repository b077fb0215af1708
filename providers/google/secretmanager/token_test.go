package secretmanager_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/google/secretmanager"
	"github.com/keyrelay/keyrelay/providers/google/secretmanager/smfake"
)

// tlsProvider builds a provider on a StartTLS fake whose calls carry
// access tokens the fake issued, cached as the auth library caches them.
func tlsProvider(t *testing.T, fake *smfake.Server) *secretmanager.Provider {
	t.Helper()
	cfg := secretmanager.Config{
		Project: project, Endpoint: fake.Addr(), CABundle: fake.CAFile(),
		ProjectWritesPerMinute: 600000, SecretWritesPerSecond: 1000,
		ReadsPerMinute: 600000, AccessPerMinute: 600000,
	}
	secretmanager.SetCredentials(&cfg, fake.Credentials)
	p, err := secretmanager.New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// tokenExpiries are the ways a token the client holds as valid stops
// being accepted: revoked (or expired early), or expired by a server clock
// ahead of the client's. Each call expires the tokens issued so far.
func tokenExpiries() map[string]func(*smfake.Server) {
	var ahead time.Duration
	return map[string]func(*smfake.Server){
		"revoked": (*smfake.Server).ExpireTokens,
		"server clock ahead": func(f *smfake.Server) {
			ahead += 2 * time.Hour
			d := ahead
			f.SetClock(func() time.Time { return time.Now().Add(d) })
		},
	}
}

// A call Google answers UNAUTHENTICATED for an expired token is sent once
// more with a new token, and succeeds: one expired token does not fail an
// event.
func TestExpiredTokenIsRefreshedOnce(t *testing.T) {
	ops := map[string]func(ctx context.Context, p providers.Provider, name string) error{
		"Put": func(ctx context.Context, p providers.Provider, name string) error {
			_, err := p.Put(ctx, providers.PutRequest{Name: name, Value: []byte("v2"), IdempotencyKey: "e2", Owner: owner})
			return err
		},
		"Get": func(ctx context.Context, p providers.Provider, name string) error {
			s, err := p.Get(ctx, name, "")
			if err == nil && string(s.Value) != "v1" {
				return errors.New("Get returned another value")
			}
			return err
		},
		"Delete": func(ctx context.Context, p providers.Provider, name string) error {
			return p.Delete(ctx, providers.DeleteRequest{Name: name, Owner: owner})
		},
	}
	for how, expire := range tokenExpiries() {
		for op, call := range ops {
			t.Run(how+"/"+op, func(t *testing.T) {
				fake := smfake.StartTLS(t)
				p := tlsProvider(t, fake)
				const name = "tok/key"
				put(t, p, name, "v1", "e1")
				issued := fake.TokensIssued()
				expire(fake)
				if err := call(context.Background(), p, name); err != nil {
					t.Fatalf("%s after the token expired: %v", op, err)
				}
				if n := fake.TokensIssued() - issued; n != 1 {
					t.Errorf("%d new tokens, want 1", n)
				}
				if n := fake.Errors("GetSecret", codes.Unauthenticated); n != 1 {
					t.Errorf("%d GetSecret calls refused, want 1 (the one with the expired token)", n)
				}
			})
		}
	}
}

// Calls refused for the same expired token share one refresh.
func TestConcurrentCallsShareOneRefresh(t *testing.T) {
	fake := smfake.StartTLS(t)
	p := tlsProvider(t, fake)
	const name = "tok/concurrent"
	put(t, p, name, "v1", "e1")
	issued := fake.TokensIssued()
	fake.ExpireTokens()
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			if _, err := p.Get(context.Background(), name, ""); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Get after the token expired: %v", err)
	}
	if n := fake.TokensIssued() - issued; n != 1 {
		t.Errorf("%d new tokens for 20 calls, want 1", n)
	}
}

// A token Google refuses again after the refresh is access denied, a
// permanent error, and costs one refresh, not one per call.
func TestTokenRefusedAfterRefreshIsAccessDenied(t *testing.T) {
	fake := smfake.StartTLS(t)
	p := tlsProvider(t, fake)
	ctx := context.Background()
	const name = "tok/denied"
	put(t, p, name, "v1", "e1")
	fake.SetTokenLifetime(0) // every new token is expired on arrival
	fake.ExpireTokens()
	issued, adds := fake.TokensIssued(), fake.Calls("AddSecretVersion")

	_, err := p.Get(ctx, name, "")
	if !errors.Is(err, providers.ErrAccessDenied) || providers.IsRetryable(err) {
		t.Fatalf("Get with tokens refused: %v, want permanent ErrAccessDenied", err)
	}
	var ae *secretmanager.APIError
	if !errors.As(err, &ae) || ae.Code != codes.Unauthenticated {
		t.Fatalf("Get with tokens refused: %v, want UNAUTHENTICATED", err)
	}
	if n := fake.TokensIssued() - issued; n != 1 {
		t.Errorf("%d new tokens, want 1 (one refresh)", n)
	}
	if n := fake.Errors("GetSecret", codes.Unauthenticated); n != 2 {
		t.Errorf("%d GetSecret calls refused, want 2 (the call and its one retry)", n)
	}

	_, err = p.Put(ctx, providers.PutRequest{Name: name, Value: []byte("v2"), IdempotencyKey: "e2", Owner: owner})
	if !errors.Is(err, providers.ErrAccessDenied) || providers.IsRetryable(err) {
		t.Fatalf("Put with tokens refused: %v, want permanent ErrAccessDenied", err)
	}
	if n := fake.Calls("AddSecretVersion"); n != adds {
		t.Fatalf("Put with tokens refused added %d versions", n-adds)
	}
}

// A token that cannot be fetched because the token endpoint is down is
// our infrastructure failing, not the event: retryable ErrUnavailable. A
// token endpoint refusing the credential is access denied.
func TestTokenEndpointFailures(t *testing.T) {
	fake := smfake.StartTLS(t)
	p := tlsProvider(t, fake)
	ctx := context.Background()
	const name = "tok/endpoint"
	put(t, p, name, "v1", "e1")

	fake.ExpireTokens()
	fake.FailTokenRequests(http.StatusServiceUnavailable, 1)
	_, err := p.Get(ctx, name, "")
	if !errors.Is(err, providers.ErrUnavailable) || !providers.IsRetryable(err) {
		t.Fatalf("Get while the token endpoint is down: %v, want retryable ErrUnavailable", err)
	}
	if s, err := p.Get(ctx, name, ""); err != nil || string(s.Value) != "v1" {
		t.Fatalf("Get once the token endpoint is back: %v", err)
	}

	fake.ExpireTokens()
	fake.FailTokenRequests(http.StatusBadRequest, 1)
	if _, err := p.Get(ctx, name, ""); !errors.Is(err, providers.ErrAccessDenied) || providers.IsRetryable(err) {
		t.Fatalf("Get when the token endpoint refuses the credential: %v, want permanent ErrAccessDenied", err)
	}
}
