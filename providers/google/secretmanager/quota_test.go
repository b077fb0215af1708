package secretmanager_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/google/secretmanager"
	"github.com/keyrelay/keyrelay/providers/google/secretmanager/smfake"
	"github.com/keyrelay/keyrelay/providers/providertest"
)

// memQuotas records the quota names, rates and tokens the provider asks for.
type memQuotas = providertest.Quotas

func openWithQuotas(t *testing.T, fake *smfake.Server, q providers.Quotas, extra map[string]string) *secretmanager.Provider {
	t.Helper()
	opts := map[string]string{
		secretmanager.OptionProject:                project,
		secretmanager.OptionEndpoint:               fake.Addr(),
		secretmanager.OptionInsecure:               "true",
		secretmanager.OptionSecretWritesPerSecond:  "1000",
		secretmanager.OptionProjectWritesPerMinute: "600000",
		secretmanager.OptionReadsPerMinute:         "600000",
		secretmanager.OptionAccessPerMinute:        "600000",
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

// readMethods are the methods the project's read quota counts that the
// provider calls (AccessSecretVersion has a quota of its own).
var readMethods = []string{"GetSecret", "GetSecretVersion", "ListSecretVersions", "ListSecrets"}

func writeCalls(fake *smfake.Server) int { return callsOf(fake, writeMethods) }
func readCalls(fake *smfake.Server) int  { return callsOf(fake, readMethods) }

// callsOf returns how many calls of methods reached the fake.
func callsOf(fake *smfake.Server, methods []string) int {
	n := 0
	for _, m := range methods {
		n += fake.Calls(m)
	}
	return n
}

// TestQuotasNamesAndTokens: every call the provider makes (Put, the
// version hygiene after it, Retire, Get, Versions, List, Delete) takes a
// token of the project's write, read or access quota from Config.Quotas,
// at the project limiter's rate: providers.WindowRate of its limit a
// minute. Each page of a listing takes one.
func TestQuotasNamesAndTokens(t *testing.T) {
	fake := smfake.Start(t)
	q := &memQuotas{}
	p := openWithQuotas(t, fake, q, map[string]string{secretmanager.OptionProjectWritesPerMinute: "1200",
		secretmanager.OptionReadsPerMinute: "1800", secretmanager.OptionAccessPerMinute: "3000",
		secretmanager.OptionSupersededGrace: "1ns", secretmanager.OptionDestroyGrace: "1ns",
		secretmanager.OptionListPageSize: "2"})
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
	if _, err := p.Versions(ctx, name); err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // two pages of two
		put(t, p, fmt.Sprintf("quota-list-%d", i), "v", "")
	}
	if err := p.List(ctx, providers.ListRequest{}, func(providers.Listed) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := p.Delete(ctx, providers.DeleteRequest{Name: name, Owner: owner}); err != nil {
		t.Fatal(err)
	}

	prefix := "google_secret_manager/" + project + "/"
	if got, want := q.Names(), []string{prefix + "access", prefix + "read", prefix + "write"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("quota names %v, want %v", got, want)
	}
	for _, m := range append(append([]string{"AccessSecretVersion"}, readMethods...),
		"CreateSecret", "UpdateSecret", "DeleteSecret", "AddSecretVersion", "DisableSecretVersion", "DestroySecretVersion") {
		if fake.Calls(m) == 0 {
			t.Errorf("no %s call made; the test does not cover it", m)
		}
	}
	if n := fake.Calls("ListSecrets"); n < 2 {
		t.Errorf("%d ListSecrets pages; the test does not cover paging", n)
	}
	for _, c := range []struct {
		kind  string
		calls int
		limit int
	}{
		{"write", writeCalls(fake), 1200},
		{"read", readCalls(fake), 1800},
		{"access", fake.Calls("AccessSecretVersion"), 3000},
	} {
		if got := q.Tokens(prefix + c.kind); got != c.calls {
			t.Errorf("%d %s tokens for %d %s calls", got, c.kind, c.calls, c.kind)
		}
		r := q.Rate(prefix + c.kind)
		if want := providers.WindowRate(c.limit, time.Minute); r != want {
			t.Errorf("%s: asked for %v/s, want the project limiter's %d a minute: %v/s", c.kind, r, c.limit, want)
		}
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
	if n := writeCalls(fake) + readCalls(fake); n != 0 {
		t.Errorf("%d calls sent past an exhausted quota", n)
	}

	// Hygiene: the Puts pass, the superseded versions stay enabled.
	q2 := &memQuotas{}
	p2 := openWithQuotas(t, fake, q2, map[string]string{secretmanager.OptionSupersededGrace: "1ns"})
	put(t, p2, "quota-hygiene", "v1", "e1")
	q2.SetFail(func(string) (time.Duration, error) {
		return time.Second, fmt.Errorf("%w: no token now", providers.ErrThrottled)
	})
	if _, err := p2.Put(context.Background(), providers.PutRequest{Name: "quota-hygiene", Value: []byte("v2"), Owner: owner}); !errors.Is(err, providers.ErrThrottled) {
		t.Fatalf("Put with the quota exhausted: %v", err)
	}
	writes := 0
	q2.SetFail(func(name string) (time.Duration, error) {
		if strings.HasSuffix(name, "/read") {
			return 0, nil
		}
		writes++
		if writes == 1 {
			return 0, nil // the Put's own write
		}
		return time.Second, fmt.Errorf("%w: no token now", providers.ErrThrottled)
	})
	if _, err := p2.Put(context.Background(), providers.PutRequest{Name: "quota-hygiene", Value: []byte("v2"), Owner: owner}); err != nil {
		t.Fatal(err)
	}
	if n := fake.Calls("DisableSecretVersion"); n != 0 {
		t.Errorf("hygiene disabled %d versions without a quota token", n)
	}

	// Hygiene's listing gives way too: with the read quota exhausted once
	// the version is written, the Put passes and lists nothing.
	lists, adds := fake.Calls("ListSecretVersions"), fake.Calls("AddSecretVersion")
	q2.SetFail(func(name string) (time.Duration, error) {
		if strings.HasSuffix(name, "/read") && fake.Calls("AddSecretVersion") > adds {
			return time.Second, fmt.Errorf("%w: no token now", providers.ErrThrottled)
		}
		return 0, nil
	})
	if _, err := p2.Put(context.Background(), providers.PutRequest{Name: "quota-hygiene", Value: []byte("v3"), Owner: owner}); err != nil {
		t.Fatal(err)
	}
	if n := fake.Calls("ListSecretVersions") - lists; n != 0 {
		t.Errorf("hygiene listed versions %d times without a read token", n)
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
	if got, calls := q.Tokens("google_secret_manager/"+project+"/write"), writeCalls(fake)-before; got != calls || calls != 2*n {
		t.Errorf("%d write tokens for %d write calls, want %d", got, calls, 2*n)
	}

	fake.EnforceQuotas(quota)
	burst(openWithQuotas(t, fake, nil, nil))
	if got := fake.Throttled(smfake.QuotaWrite); got == 0 {
		t.Fatal("without Quotas the burst was not throttled: the test shows nothing")
	}
}

// TestBulkRotationStaysUnderTheFakesQuotas: with the fake enforcing
// Secret Manager's per-project quotas (scaled from a minute to 6-second
// windows: 60 reads, 60 writes, 9,000 accesses) and the provider's
// limiters configured to the same limits and window, a bulk rotation
// (Puts on existing secrets: two reads, two writes and, when a read token
// is free, the version hygiene's listing each) by concurrent workers gets
// no call throttled by the fake and still uses at least 90% of the
// binding quota. The same rotation with reads unlimited client-side is
// throttled on reads.
func TestBulkRotationStaysUnderTheFakesQuotas(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for about 10 seconds")
	}
	const (
		n       = 40 // secrets, one rotation each
		workers = 8  // rotations at once
		window  = 6 * time.Second
		limit   = 60 // reads and writes per window
		access  = 9000
	)
	fake := smfake.Start(t)
	names := make([]string, n)
	seed := open(t, fake, nil)
	for i := range names {
		names[i] = fmt.Sprintf("bulk-%02d", i)
		put(t, seed, names[i], "v0", "e0")
	}
	quotas := map[string]smfake.Quota{
		smfake.QuotaRead:   {Limit: limit, Window: window},
		smfake.QuotaWrite:  {Limit: limit, Window: window},
		smfake.QuotaAccess: {Limit: access, Window: window},
	}
	cfg := secretmanager.Config{
		Project: project, Endpoint: fake.Addr(), Insecure: true,
		ProjectWritesPerMinute: limit, ReadsPerMinute: limit, AccessPerMinute: access,
		SupersededGrace: 24 * time.Hour, // hygiene lists the versions, disables none
	}
	secretmanager.SetQuotaWindow(&cfg, window)
	p, err := secretmanager.New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })

	// rotate puts a new value in every secret, workers at a time, and
	// returns how long it took and the Puts that failed.
	rotate := func(p *secretmanager.Provider) (time.Duration, []error) {
		var mu sync.Mutex
		var failed []error
		queue := make(chan string, n)
		for _, name := range names {
			queue <- name
		}
		close(queue)
		start := time.Now()
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for name := range queue {
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					_, err := p.Put(ctx, providers.PutRequest{Name: name, Value: []byte(uuid.NewString()), IdempotencyKey: uuid.NewString(), Owner: owner})
					cancel()
					if err != nil {
						mu.Lock()
						failed = append(failed, err)
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		return time.Since(start), failed
	}

	fake.EnforceQuotas(quotas)
	reads0, writes0, lists0 := readCalls(fake), writeCalls(fake), fake.Calls("ListSecretVersions")
	elapsed, failed := rotate(p)
	for _, err := range failed {
		t.Errorf("rotation: %v", err)
	}
	if got := fake.Throttled(""); got != 0 {
		t.Fatalf("the fake throttled %d calls (read %d, write %d) of the provider limited to its quotas",
			got, fake.Throttled(smfake.QuotaRead), fake.Throttled(smfake.QuotaWrite))
	}
	reads, writes := readCalls(fake)-reads0, writeCalls(fake)-writes0
	if reads < 2*n || writes != 2*n {
		t.Fatalf("%d reads and %d writes for %d rotations, want 2 writes and at least 2 reads each", reads, writes, n)
	}
	// The share of each quota the rotation used: its calls over what the
	// quota allows in the rotation's time.
	allowed := float64(limit) * elapsed.Seconds() / window.Seconds()
	readShare, writeShare := float64(reads)/allowed, float64(writes)/allowed
	t.Logf("%d rotations, %d at once, in %v: %d reads (%d hygiene listings), %d writes: %.1f%% of the read quota, %.1f%% of the write quota",
		n, workers, elapsed.Round(time.Millisecond), reads, fake.Calls("ListSecretVersions")-lists0, writes, 100*readShare, 100*writeShare)
	if binding := max(readShare, writeShare); binding < 0.9 {
		t.Errorf("the rotation used %.1f%% of the binding quota, want at least 90%%", 100*binding)
	}

	// Reads unlimited client-side: the fake throttles them.
	fake.EnforceQuotas(quotas)
	cfg.ReadsPerMinute = 1e6
	unlimited, err := secretmanager.New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unlimited.Close() })
	if _, failed := rotate(unlimited); len(failed) == 0 {
		t.Error("with reads unlimited client-side no rotation failed")
	}
	if got := fake.Throttled(smfake.QuotaRead); got == 0 {
		t.Fatal("with reads unlimited client-side the rotation was not throttled on reads: the test shows nothing")
	}
}
