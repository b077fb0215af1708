package providertest

import (
	"context"
	"sort"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/keyrelay/keyrelay/providers"
)

// Quotas is an in-memory providers.Quotas for provider tests: a token
// bucket per quota name at the rate the provider asks for (Cap instead,
// when lower), recording the rate asked for and the tokens taken.
type Quotas struct {
	// Cap, when positive, bounds every quota's rate.
	Cap float64
	// Fail, when set, answers every Wait.
	Fail func(name string) (time.Duration, error)

	mu    sync.Mutex
	lims  map[string]*rate.Limiter
	rates map[string]float64
	taken map[string]int
}

// Wait implements providers.Quotas.
func (q *Quotas) Wait(ctx context.Context, name string, perSecond float64) (time.Duration, error) {
	q.mu.Lock()
	if q.lims == nil {
		q.lims, q.rates, q.taken = map[string]*rate.Limiter{}, map[string]float64{}, map[string]int{}
	}
	q.rates[name] = perSecond
	l := q.lims[name]
	if l == nil {
		r := perSecond
		if q.Cap > 0 && q.Cap < r {
			r = q.Cap
		}
		l = providers.NewLimiter(r)
		q.lims[name] = l
	}
	fail := q.Fail
	q.mu.Unlock()
	if fail != nil {
		return fail(name)
	}
	d, err := providers.WaitTokens(ctx, l)
	if err == nil {
		q.mu.Lock()
		q.taken[name]++
		q.mu.Unlock()
	}
	return d, err
}

// SetFail replaces Fail while the provider may be calling Wait.
func (q *Quotas) SetFail(f func(name string) (time.Duration, error)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.Fail = f
}

// Names lists the quota names asked for, sorted.
func (q *Quotas) Names() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []string
	for n := range q.rates {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Tokens is how many tokens of name were taken.
func (q *Quotas) Tokens(name string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.taken[name]
}

// Rate is the rate the provider last asked name for.
func (q *Quotas) Rate(name string) float64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.rates[name]
}
