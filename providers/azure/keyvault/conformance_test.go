package keyvault_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault/kvfake"
	"github.com/keyrelay/keyrelay/providers/providertest"
)

const testToken = "static-test-token-7f3a"

// staticCred is a fixed azcore.TokenCredential that records what the
// challenge policy asked for.
type staticCred struct {
	mu      sync.Mutex
	calls   int
	scopes  []string
	tenants []string
}

func (c *staticCred) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	c.scopes = append(c.scopes, o.Scopes...)
	c.tenants = append(c.tenants, o.TenantID)
	return azcore.AccessToken{Token: testToken, ExpiresOn: time.Now().Add(time.Hour)}, nil
}

type fixture struct {
	srv  *kvfake.Server
	cred *staticCred
	cfg  keyvault.Config
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	srv := kvfake.New()
	srv.Token = testToken
	srv.ListPageSize = 2 // Get Secrets pages of 2, so that List pages
	t.Cleanup(srv.Close)
	ca, err := srv.WriteCABundle(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{srv: srv, cred: &staticCred{}, cfg: keyvault.Config{
		VaultURL:                             srv.URL,
		CABundle:                             ca,
		DisableChallengeResourceVerification: true,
		CreatesPer10s:                        1e6,
		RecoverTimeout:                       5 * time.Second,
	}}
}

func (f *fixture) provider(t *testing.T, mod ...func(*keyvault.Config)) *keyvault.Provider {
	t.Helper()
	cfg := f.cfg
	for _, m := range mod {
		m(&cfg)
	}
	p, err := keyvault.New(context.Background(), cfg, nil, keyvault.WithCredential(f.cred))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// raw returns an azsecrets client on the fake, for writing secrets as
// another tool would.
func (f *fixture) raw(t *testing.T) *azsecrets.Client {
	t.Helper()
	c, err := azsecrets.NewClient(f.srv.URL, f.cred, &azsecrets.ClientOptions{
		ClientOptions:                        azcore.ClientOptions{Transport: f.srv.Client(), Retry: policy.RetryOptions{MaxRetries: -1}},
		DisableChallengeResourceVerification: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var _ policy.Transporter = (*http.Client)(nil)

func TestConformance(t *testing.T) {
	f := newFixture(t)
	raw := f.raw(t)
	providertest.Run(t, func(t *testing.T) providers.Provider { return f.provider(t) }, providertest.Options{
		Features: providertest.Features{MaxNameLength: 500, ListPageSize: 2},
		CreateUnmanaged: func(ctx context.Context, _ providers.Provider, name string, value []byte) error {
			v := string(value)
			_, err := raw.SetSecret(ctx, keyvault.KVName(name), azsecrets.SetSecretParameters{Value: &v}, nil)
			return err
		},
	})
}

// TestConformanceAsyncDeletes runs the suite against a vault whose deletes,
// recoveries and purges take a moment, as Key Vault's do: the provider must
// poll, and write a purged name again once the purge is done.
func TestConformanceAsyncDeletes(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	f := newFixture(t)
	f.srv.DeleteDelay = 30 * time.Millisecond
	f.srv.RecoverDelay = 60 * time.Millisecond
	f.srv.PurgeDelay = 40 * time.Millisecond
	raw := f.raw(t)
	providertest.Run(t, func(t *testing.T) providers.Provider { return f.provider(t) }, providertest.Options{
		Features: providertest.Features{MaxNameLength: 500, ListPageSize: 2},
		CreateUnmanaged: func(ctx context.Context, _ providers.Provider, name string, value []byte) error {
			v := string(value)
			_, err := raw.SetSecret(ctx, keyvault.KVName(name), azsecrets.SetSecretParameters{Value: &v}, nil)
			return err
		},
	})
}
