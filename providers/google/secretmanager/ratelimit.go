package secretmanager

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/keyrelay/keyrelay/providers"
)

// limiterKey identifies whose quota a provider's writes count against:
// the project's, on one endpoint.
type limiterKey struct {
	endpoint, project string
	perMinute, perSec float64
}

// limiters holds the project's write limiter and one per secret.
type limiters struct {
	project *rate.Limiter
	perSec  float64

	mu      sync.Mutex
	secrets map[string]*secretLimiter
}

type secretLimiter struct {
	lim  *rate.Limiter
	used time.Time
}

// maxSecretLimiters bounds the per-secret map; idle entries are dropped
// beyond it.
const maxSecretLimiters = 10000

var (
	sharedMu       sync.Mutex
	sharedLimiters = map[limiterKey]*limiters{}
)

// limitersFor returns the limiters for k, shared by every provider with
// the same key in this process.
func limitersFor(k limiterKey) *limiters {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if l, ok := sharedLimiters[k]; ok {
		return l
	}
	perSec := k.perMinute / 60
	l := &limiters{
		project: providers.NewLimiter(perSec),
		perSec:  k.perSec,
		secrets: map[string]*secretLimiter{},
	}
	sharedLimiters[k] = l
	return l
}

func (l *limiters) secret(id string) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if s, ok := l.secrets[id]; ok {
		s.used = now
		return s.lim
	}
	if len(l.secrets) >= maxSecretLimiters {
		for k, s := range l.secrets {
			if now.Sub(s.used) > time.Minute {
				delete(l.secrets, k)
			}
		}
	}
	s := &secretLimiter{lim: providers.NewLimiter(l.perSec), used: now}
	l.secrets[id] = s
	return s.lim
}

// wait takes, before one write to the project, one token from each
// limiter (see providers.WaitTokens), then, when the provider has
// cluster-wide quotas (providers.Config.Quotas), one of the project's
// write quota (see quotaName) at the project limiter's rate: tokens the
// call's deadline cannot wait for fail at once as Throttled with the wait
// as RetryAfter.
func (p *Provider) wait(ctx context.Context, op, name string, lims ...*rate.Limiter) error {
	d, err := providers.WaitTokens(ctx, lims...)
	if err == nil && p.quotas != nil {
		d, err = p.quotas.Wait(ctx, p.quotaName(quotaWrite), p.writesPerSecond())
	}
	switch {
	case err == nil:
		return nil
	case d > 0:
		e := providers.NewError(Name, op, name, providers.Throttled, fmt.Errorf("client-side write limit: %w", err))
		e.RetryAfter = d
		return e
	}
	return ctxErr(op, name, err)
}

// quotaWrite is the kind of Secret Manager's per-project write quota in
// providers.Quotas names. Reads and accesses are not limited client-side,
// so they take no tokens.
const quotaWrite = "write"

// quotaName names the project's quota of kind for providers.Quotas as
// Secret Manager scopes it, per project:
// "google_secret_manager/PROJECT/KIND", e.g.
// "google_secret_manager/my-project/write".
func (p *Provider) quotaName(kind string) string {
	return Name + "/" + p.cfg.Project + "/" + kind
}

// writesPerSecond is the project write limiter's rate.
func (p *Provider) writesPerSecond() float64 { return p.cfg.ProjectWritesPerMinute / 60 }

// quotaProbe bounds how long quotaNow waits for providers.Quotas.
const quotaProbe = 50 * time.Millisecond

// quotaNow takes a token of the project's write quota from the
// cluster-wide quotas only if one is free now (true without quotas): for
// best-effort writes that give way to the others, like version hygiene.
func (p *Provider) quotaNow(ctx context.Context) bool {
	if p.quotas == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, quotaProbe)
	defer cancel()
	_, err := p.quotas.Wait(ctx, p.quotaName(quotaWrite), p.writesPerSecond())
	return err == nil
}
