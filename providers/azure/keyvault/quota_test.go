package keyvault_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault/kvfake"
	"github.com/keyrelay/keyrelay/providers/providertest"
)

// memQuotas records the quota names, rates and tokens the provider asks for.
type memQuotas = providertest.Quotas

// factoryProvider opens a provider through Factory, as the registry does:
// client-secret credentials against the fake's token endpoint, and q as
// Config.Quotas.
func (f *fixture) factoryProvider(t *testing.T, q providers.Quotas, creates string) *keyvault.Provider {
	t.Helper()
	f.srv.ClientID = "11111111-2222-3333-4444-555555555555"
	f.srv.ClientSecret = "client-secret-value-1"
	p, err := keyvault.Factory(context.Background(), providers.Config{Options: map[string]string{
		keyvault.OptionVaultURL:                             f.srv.URL,
		keyvault.OptionTenantID:                             kvfake.DefaultTenant,
		keyvault.OptionClientID:                             f.srv.ClientID,
		keyvault.OptionClientSecret:                         f.srv.ClientSecret,
		keyvault.OptionAuthorityHost:                        f.srv.URL,
		keyvault.OptionCABundle:                             f.cfg.CABundle,
		keyvault.OptionDisableChallengeResourceVerification: "true",
		keyvault.OptionDisableInstanceDiscovery:             "true",
		keyvault.OptionCreatesPer10s:                        creates,
	}, Getenv: func(string) string { return "" }, Quotas: q})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.(providers.Closer).Close() })
	return p.(*keyvault.Provider)
}

func quotaPrefix(f *fixture) string {
	return "azure_key_vault/" + strings.TrimPrefix(f.srv.URL, "https://")
}

// TestQuotasNamesAndTokens: every secret write (Set Secret) takes a token
// of the vault's create quota from Config.Quotas, at the local limiter's
// rate (providers.WindowRate of creates_per_10s); nothing else takes one.
func TestQuotasNamesAndTokens(t *testing.T) {
	f := newFixture(t)
	q := &memQuotas{}
	p := f.factoryProvider(t, q, "600")
	ctx := context.Background()
	put(t, p, "quota-names", "v1", "e1")
	put(t, p, "quota-names", "v2", "e2")
	if _, err := p.Put(ctx, providers.PutRequest{Name: "quota-names", Value: []byte("v3"), IdempotencyKey: "e3", Owner: owner,
		Tags: map[string]string{"env": "test"}}); err != nil {
		t.Fatal(err)
	}
	put(t, p, "quota-other", "v1", "e1")
	if _, err := p.Get(ctx, "quota-names", ""); err != nil {
		t.Fatal(err)
	}
	if err := p.Delete(ctx, providers.DeleteRequest{Name: "quota-other", Owner: owner}); err != nil {
		t.Fatal(err)
	}

	want := quotaPrefix(f) + "/create"
	if got := q.Names(); len(got) != 1 || got[0] != want {
		t.Fatalf("quota names %v, want [%s]", got, want)
	}
	if got, writes := q.Tokens(want), f.srv.Transactions(kvfake.QuotaSecretCreate); got != writes || writes != 4 {
		t.Errorf("%d create tokens for %d Set Secret requests, want 4", got, writes)
	}
	r := q.Rate(want)
	if want := providers.WindowRate(600, 10*time.Second); r != want {
		t.Errorf("asked for %v/s, want the local limiter's 600 per 10 s: %v/s", r, want)
	}
}

// TestQuotasThrottled: a quota the call's deadline cannot wait for fails
// the write as Throttled with the quota's wait as RetryAfter, before the
// request.
func TestQuotasThrottled(t *testing.T) {
	f := newFixture(t)
	q := &memQuotas{Fail: func(string) (time.Duration, error) {
		return 3 * time.Second, fmt.Errorf("%w: cluster quota needs 3s", providers.ErrThrottled)
	}}
	p := f.factoryProvider(t, q, "")
	_, err := p.Put(context.Background(), providers.PutRequest{Name: "quota-throttled", Value: []byte("v"), Owner: owner})
	var pe *providers.Error
	if !errors.As(err, &pe) || pe.Kind != providers.Throttled || !errors.Is(err, providers.ErrThrottled) || pe.RetryAfter != 3*time.Second {
		t.Fatalf("Put: %v, want Throttled with RetryAfter 3s", err)
	}
	if n := f.srv.Transactions(kvfake.QuotaSecretCreate); n != 0 {
		t.Errorf("%d writes sent past an exhausted quota", n)
	}
	noLeak(t, err)
}

// TestQuotasKeepABurstUnderTheVaultsLimit: with a local limit far above
// the vault's create limit, a burst of concurrent writes is throttled by
// the vault; with Quotas limiting below the vault's limit, the same burst
// sees no throttled call.
func TestQuotasKeepABurstUnderTheVaultsLimit(t *testing.T) {
	f := newFixture(t)
	const n = 16
	burst := func(p *keyvault.Provider, prefix string) {
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = p.Put(context.Background(), providers.PutRequest{Name: fmt.Sprintf("%s-%d", prefix, i), Value: []byte("v"), Owner: owner})
			}()
		}
		wg.Wait()
	}
	// Quotas at 4/s with a burst of 4 admit at most 8 in any second,
	// under the vault's 10.
	limit := map[string]kvfake.Quota{kvfake.QuotaSecretCreate: {Limit: 10, Window: time.Second}}

	q := &memQuotas{Cap: 4}
	f.srv.EnforceQuotas(limit)
	burst(f.factoryProvider(t, q, "10000"), "with")
	if got := f.srv.Throttled(""); got != 0 {
		t.Fatalf("%d calls throttled by the vault with Quotas at 4/s under its 10 a second", got)
	}
	if got, writes := q.Tokens(quotaPrefix(f)+"/create"), f.srv.Transactions(kvfake.QuotaSecretCreate); got != n || writes != n {
		t.Errorf("%d create tokens for %d writes, want %d", got, writes, n)
	}

	f.srv.EnforceQuotas(limit)
	burst(f.factoryProvider(t, nil, "10000"), "without")
	if got := f.srv.Throttled(kvfake.QuotaSecretCreate); got == 0 {
		t.Fatal("without Quotas the burst was not throttled: the test shows nothing")
	}
}

// TestLocalLimiterHoldsTheVaultsWindow: with the vault enforcing a create
// limit per 10 seconds and the local limiter set to the same limit, a
// burst of writes larger than the limit is never throttled by the vault:
// the limiter's burst comes out of the window (providers.WindowRate)
// instead of on top of it. The writes that cannot get a token before
// their deadline fail client-side as Throttled.
func TestLocalLimiterHoldsTheVaultsWindow(t *testing.T) {
	f := newFixture(t)
	const limit, n = 20, 30
	f.srv.EnforceQuotas(map[string]kvfake.Quota{kvfake.QuotaSecretCreate: {Limit: limit, Window: 10 * time.Second}})
	p := f.factoryProvider(t, nil, fmt.Sprint(limit))
	var wg sync.WaitGroup
	var mu sync.Mutex
	local, late := 0, 0
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			_, err := p.Put(ctx, providers.PutRequest{Name: fmt.Sprintf("window-%d", i), Value: []byte("v"), Owner: owner})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
			case errors.Is(err, providers.ErrThrottled):
				local++
			case errors.Is(err, context.DeadlineExceeded):
				// Its token came in time, its requests did not finish
				// before the deadline (a slow, loaded machine): it may or
				// may not have reached the vault.
				late++
			default:
				t.Errorf("Put: %v", err)
			}
		}()
	}
	wg.Wait()
	if got := f.srv.Throttled(""); got != 0 {
		t.Fatalf("the vault throttled %d writes of a provider limited to its %d per 10 s", got, limit)
	}
	if w := f.srv.Transactions(kvfake.QuotaSecretCreate); w+local > n || w+local+late < n || w == 0 {
		t.Errorf("%d writes reached the vault, %d were throttled client-side and %d ran out of time, want %d in all", w, local, late, n)
	}
	if late > 0 {
		t.Logf("%d writes ran out of time after their token", late)
	}
}
