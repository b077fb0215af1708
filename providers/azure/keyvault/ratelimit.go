package keyvault

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/keyrelay/keyrelay/providers"
)

type limiterKey struct {
	vault string
	per10 float64
}

var (
	limMu    sync.Mutex
	limiters = map[limiterKey]*rate.Limiter{}
)

// createWindow is the window Key Vault states its transaction limits in.
const createWindow = 10 * time.Second

// createRate is the rate of the limiter on secret writes for a limit of
// per10 a 10-second window, and the rate asked of providers.Quotas:
// providers.WindowRate, so that neither admits more than per10 writes in
// any 10 seconds (27.2 a second with a burst of 28 for 300).
func createRate(per10 float64) float64 {
	return providers.WindowRate(int(math.Floor(per10)), createWindow)
}

// createLimiter returns the limiter on secret writes to vault (see
// createRate), shared by every provider in the process writing to the
// same vault with the same limit.
func createLimiter(vault string, per10 float64) *rate.Limiter {
	k := limiterKey{strings.TrimRight(strings.ToLower(vault), "/"), per10}
	limMu.Lock()
	defer limMu.Unlock()
	if l, ok := limiters[k]; ok {
		return l
	}
	l := providers.NewLimiter(createRate(per10))
	limiters[k] = l
	return l
}

// wait takes a write token (see providers.WaitTokens), then, when the
// provider has cluster-wide quotas (WithQuotas), one of the vault's secret
// create quota (see quotaName) at the local limiter's rate: a token the
// call's deadline cannot wait for fails at once as Throttled with the wait
// as RetryAfter.
func (p *Provider) wait(ctx context.Context, op, name string) error {
	d, err := providers.WaitTokens(ctx, p.lim)
	if err == nil && p.quotas != nil {
		d, err = p.quotas.Wait(ctx, quotaName(p.cfg.VaultURL, quotaCreate), createRate(p.cfg.CreatesPer10s))
	}
	switch {
	case err == nil:
		return nil
	case d > 0:
		e := newErr(op, name, providers.Throttled, fmt.Errorf("limit of %g writes per 10s: %w", p.cfg.CreatesPer10s, err))
		e.RetryAfter = d
		return e
	}
	return ctxErr(op, name, err)
}

// WithQuotas shares the vault's quotas with the other keyrelay processes
// writing to it (see providers.Quotas); Factory passes
// providers.Config.Quotas. Nil, the default, means the per-process
// limiter only.
func WithQuotas(q providers.Quotas) Option {
	return func(o *newOptions) { o.quotas = q }
}

// quotaCreate is the kind of Key Vault's "CREATE secret" transaction
// limit (Set Secret) in providers.Quotas names. Other transactions are not
// limited client-side and take no token.
const quotaCreate = "create"

// quotaName names the vault's quota of kind for providers.Quotas as Key
// Vault scopes it, per vault: "azure_key_vault/VAULT/KIND", VAULT being
// the vault URL lowercased, without its scheme and trailing slash, e.g.
// "azure_key_vault/myvault.vault.azure.net/create".
func quotaName(vaultURL, kind string) string {
	v := strings.TrimRight(strings.ToLower(vaultURL), "/")
	if i := strings.Index(v, "://"); i >= 0 {
		v = v[i+3:]
	}
	return Name + "/" + v + "/" + kind
}
