package secretmanager_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/time/rate"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/google/secretmanager"
	"github.com/keyrelay/keyrelay/providers/google/secretmanager/smfake"
)

// memQuotas is an in-memory providers.Quotas: a token bucket per name at
// the rate the provider asks for (Cap instead, when lower), recording the
// rate asked for and the tokens taken.
type memQuotas struct {
	Cap float64
	// Fail, when set, answers every Wait.
	Fail func(name string) (time.Duration, error)

	mu    sync.Mutex
	lims  map[string]*rate.Limiter
	rates map[string]float64
	taken map[string]int
}

func (q *memQuotas) Wait(ctx context.Context, name string, perSecond float64) (time.Duration, error) {
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

func (q *memQuotas) names() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []string
	for n := range q.rates {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (q *memQuotas) tokens(name string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.taken[name]
}

func openWithQuotas(t *testing.T, fake *smfake.Server, q providers.Quotas, extra map[string]string) *secretmanager.Provider {
	t.Helper()
	opts := map[string]string{
		secretmanager.OptionProject:                project,
		secretmanager.OptionEndpoint:               fake.Addr(),
		secretmanager.OptionInsecure:               "true",
		secretmanager.OptionSecretWritesPerSecond:  "1000",
		secretmanager.OptionProjectWritesPerMinute: "600000",
	}
	for k, v := range extra {
		opts[k] = v
	}
	p, err := secretmanager.Factory(context.Background(), providers.Config{Options: opts, Getenv: func(string) string { return "" }, Quotas: q})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.(providers.Closer).Close() })
	return p.(*secretmanager.Provider)
}

// writeMethods are Secret Manager's mutating methods: the project's write
// quota counts them.
var writeMethods = []string{"CreateSecret", "UpdateSecret", "DeleteSecret", "AddSecretVersion",
	"EnableSecretVersion", "DisableSecretVersion", "DestroySecretVersion"}

func writeCalls(fake *smfake.Server) int {
	n := 0
	for _, m := range writeMethods {
		n += fake.Calls(m)
	}
	return n
}

// TestQuotasNamesAndTokens: every write the provider makes (Put, the
// version hygiene after it, Retire, Delete) takes a token of the
// project's write quota from Config.Quotas, at the project limiter's rate.
func TestQuotasNamesAndTokens(t *testing.T) {
	fake := smfake.Start(t)
	q := &memQuotas{}
	p := openWithQuotas(t, fake, q, map[string]string{secretmanager.OptionProjectWritesPerMinute: "1200",
		secretmanager.OptionSupersededGrace: "1ns", secretmanager.OptionDestroyGrace: "1ns"})
	ctx := context.Background()
	name := "quota-names"
	put(t, p, name, "v1", "e1")
	if _, err := p.Put(ctx, providers.PutRequest{Name: name, Value: []byte("v2"), IdempotencyKey: "e2", Owner: owner, Description: "described"}); err != nil {
		t.Fatal(err)
	}
	put(t, p, name, "v3", "e3") // hygiene disables and destroys the superseded versions
	put(t, p, name, "v4", "e4")
	if err := p.Retire(ctx, providers.RetireRequest{Name: name, Version: "3", Owner: owner}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Get(ctx, name, ""); err != nil {
		t.Fatal(err)
	}
	if err := p.Delete(ctx, providers.DeleteRequest{Name: name, Owner: owner}); err != nil {
		t.Fatal(err)
	}

	want := "google_secret_manager/" + project + "/write"
	if got := q.names(); len(got) != 1 || got[0] != want {
		t.Fatalf("quota names %v, want [%s]", got, want)
	}
	for _, m := range []string{"CreateSecret", "UpdateSecret", "DeleteSecret", "AddSecretVersion", "DisableSecretVersion", "DestroySecretVersion"} {
		if fake.Calls(m) == 0 {
			t.Errorf("no %s call made; the test does not cover it", m)
		}
	}
	if got, calls := q.tokens(want), writeCalls(fake); got != calls {
		t.Errorf("%d write tokens for %d write calls", got, calls)
	}
	q.mu.Lock()
	r := q.rates[want]
	q.mu.Unlock()
	if r != 20 {
		t.Errorf("asked for %v/s, want the project limiter's 1200 a minute: 20/s", r)
	}
}

// TestQuotasThrottled: a quota the call's deadline cannot wait for fails
// the call as Throttled with the quota's wait as RetryAfter, before the
// write; version hygiene gives way to an exhausted quota.
func TestQuotasThrottled(t *testing.T) {
	fake := smfake.Start(t)
	q := &memQuotas{Fail: func(string) (time.Duration, error) {
		return 3 * time.Second, fmt.Errorf("%w: cluster quota needs 3s", providers.ErrThrottled)
	}}
	p := openWithQuotas(t, fake, q, nil)
	_, err := p.Put(context.Background(), providers.PutRequest{Name: "quota-throttled", Value: []byte("v"), Owner: owner})
	var pe *providers.Error
	if !errors.As(err, &pe) || pe.Kind != providers.Throttled || !errors.Is(err, providers.ErrThrottled) || pe.RetryAfter != 3*time.Second {
		t.Fatalf("Put: %v, want Throttled with RetryAfter 3s", err)
	}
	if n := writeCalls(fake); n != 0 {
		t.Errorf("%d writes sent past an exhausted quota", n)
	}

	// Hygiene: the Puts pass, the superseded versions stay enabled.
	q2 := &memQuotas{}
	p2 := openWithQuotas(t, fake, q2, map[string]string{secretmanager.OptionSupersededGrace: "1ns"})
	put(t, p2, "quota-hygiene", "v1", "e1")
	q2.mu.Lock()
	q2.Fail = func(string) (time.Duration, error) {
		return time.Second, fmt.Errorf("%w: no token now", providers.ErrThrottled)
	}
	q2.mu.Unlock()
	if _, err := p2.Put(context.Background(), providers.PutRequest{Name: "quota-hygiene", Value: []byte("v2"), Owner: owner}); !errors.Is(err, providers.ErrThrottled) {
		t.Fatalf("Put with the quota exhausted: %v", err)
	}
	q2.mu.Lock()
	calls := 0
	q2.Fail = func(name string) (time.Duration, error) {
		calls++
		if calls == 1 {
			return 0, nil // the Put's own write
		}
		return time.Second, fmt.Errorf("%w: no token now", providers.ErrThrottled)
	}
	q2.mu.Unlock()
	if _, err := p2.Put(context.Background(), providers.PutRequest{Name: "quota-hygiene", Value: []byte("v2"), Owner: owner}); err != nil {
		t.Fatal(err)
	}
	if n := fake.Calls("DisableSecretVersion"); n != 0 {
		t.Errorf("hygiene disabled %d versions without a quota token", n)
	}
}

// TestQuotasKeepABurstUnderTheFakesQuota: with a project limit far above
// the fake's write quota, a burst of concurrent Puts is throttled by the
// fake; with Quotas limiting below the fake's quota, the same burst sees
// no throttled call.
func TestQuotasKeepABurstUnderTheFakesQuota(t *testing.T) {
	fake := smfake.Start(t)
	const n = 12
	names := make([]string, n)
	seed := openWithQuotas(t, fake, nil, nil)
	for i := range names {
		names[i] = fmt.Sprintf("quota-burst-%d", i)
		put(t, seed, names[i], "v0", "e0")
	}
	burst := func(p *secretmanager.Provider) {
		var wg sync.WaitGroup
		for _, name := range names {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = p.Put(context.Background(), providers.PutRequest{Name: name, Value: []byte(uuid.NewString()), IdempotencyKey: uuid.NewString(), Owner: owner})
			}()
		}
		wg.Wait()
	}
	// A Put is two writes (the version, then its event id): 24 writes.
	// Quotas at 8/s with a burst of 8 admit at most 16 in any second,
	// under the fake's 20.
	quota := map[string]smfake.Quota{smfake.QuotaWrite: {Limit: 20, Window: time.Second}}

	q := &memQuotas{Cap: 8}
	fake.EnforceQuotas(quota)
	before := writeCalls(fake)
	burst(openWithQuotas(t, fake, q, nil))
	if got := fake.Throttled(""); got != 0 {
		t.Fatalf("%d calls throttled by the fake with Quotas at 8/s under its 20 a second", got)
	}
	if got, calls := q.tokens("google_secret_manager/"+project+"/write"), writeCalls(fake)-before; got != calls || calls != 2*n {
		t.Errorf("%d write tokens for %d write calls, want %d", got, calls, 2*n)
	}

	fake.EnforceQuotas(quota)
	burst(openWithQuotas(t, fake, nil, nil))
	if got := fake.Throttled(smfake.QuotaWrite); got == 0 {
		t.Fatal("without Quotas the burst was not throttled: the test shows nothing")
	}
}
