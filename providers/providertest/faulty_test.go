package providertest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/local"
	"github.com/keyrelay/keyrelay/providers/providertest"
)

func memory(t *testing.T) *local.Provider {
	t.Helper()
	p, err := local.New(local.Config{Path: local.MemoryPath})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

var owner = providers.Owner{TeamID: "team", KeyID: "key"}

// A Faulty that injects nothing is a transparent wrapper: it passes the
// suite, Versioner and TagUpdater included.
func TestFaultyPassThroughConformance(t *testing.T) {
	providertest.Run(t, func(t *testing.T) providers.Provider {
		return providertest.NewFaulty(memory(t), providertest.FaultConfig{Seed: 1})
	}, providertest.Options{Features: providertest.Features{BinaryValues: true, EmptyValues: true, SerializedWrites: true}})
}

// Retrying with the same idempotency key through injected failures, lost
// responses included, writes every secret exactly once.
func TestFaultyRetryWritesOnce(t *testing.T) {
	ctx := context.Background()
	inner := memory(t)
	f := providertest.NewFaulty(inner, providertest.FaultConfig{
		Seed:                42,
		RetryableRate:       0.4,
		ThrottledFraction:   0.5,
		RetryAfter:          7 * time.Millisecond,
		FailAfterCommitRate: 0.3,
		Ops:                 []providertest.Op{providertest.OpPut},
	})
	const secrets = 200
	duplicates := 0
	for i := 0; i < secrets; i++ {
		req := providers.PutRequest{Name: fmt.Sprint("s/", i), Value: []byte(fmt.Sprint("value-", i)), IdempotencyKey: fmt.Sprint("event-", i), Owner: owner}
		for attempt := 1; ; attempt++ {
			res, err := f.Put(ctx, req)
			if err == nil {
				if res.Duplicate {
					duplicates++
				}
				break
			}
			var pe *providers.Error
			if !errors.As(err, &pe) || !providers.IsRetryable(err) {
				t.Fatalf("put %d: %v is not a retryable *providers.Error", i, err)
			}
			if pe.Kind == providers.Throttled && (pe.RetryAfter != 7*time.Millisecond || !errors.Is(err, providers.ErrThrottled)) {
				t.Fatalf("throttled error %v has RetryAfter %v", err, pe.RetryAfter)
			}
			if pe.Kind == providers.Retryable && !errors.Is(err, providers.ErrUnavailable) {
				t.Fatalf("retryable error %v does not wrap ErrUnavailable", err)
			}
			if attempt > 50 {
				t.Fatalf("put %d: still failing after %d attempts", i, attempt)
			}
		}
		vs, err := inner.Versions(ctx, req.Name)
		if err != nil || len(vs) != 1 {
			t.Fatalf("secret %d: %d versions (%v), want exactly 1", i, len(vs), err)
		}
	}
	st := f.Stats()
	if st.Retryable == 0 || st.Throttled == 0 || st.AfterCommit == 0 {
		t.Fatalf("expected every kind of fault, got %+v", st)
	}
	// A lost response is followed by a Duplicate (unless that response is
	// lost too).
	if duplicates == 0 || int64(duplicates) > st.AfterCommit {
		t.Errorf("%d duplicates for %d lost responses", duplicates, st.AfterCommit)
	}
	if st.Calls != st.InnerCalls+st.Retryable+st.Throttled+st.Permanent {
		t.Errorf("counters do not add up: %+v", st)
	}
	if st.InnerCalls != secrets+st.AfterCommit {
		t.Errorf("%d inner calls, want %d", st.InnerCalls, secrets+st.AfterCommit)
	}
	// Gets are outside Ops: never faulted.
	for i := 0; i < 50; i++ {
		if _, err := f.Get(ctx, "s/1", ""); err != nil {
			t.Fatalf("Get: %v", err)
		}
	}
}

func TestFaultyPermanent(t *testing.T) {
	ctx := context.Background()
	inner := memory(t)
	f := providertest.NewFaulty(inner, providertest.FaultConfig{
		Permanent: func(name string) bool { return strings.HasPrefix(name, "denied/") },
	})
	_, err := f.Put(ctx, providers.PutRequest{Name: "denied/x", Value: []byte("v"), Owner: owner})
	var pe *providers.Error
	if !errors.As(err, &pe) || pe.Kind != providers.Permanent || !errors.Is(err, providers.ErrAccessDenied) || providers.IsRetryable(err) {
		t.Fatalf("Put denied/x: %v, want a permanent ErrAccessDenied", err)
	}
	if _, err := inner.Get(ctx, "denied/x", ""); !errors.Is(err, providers.ErrNotFound) {
		t.Fatalf("the inner provider was written: %v", err)
	}
	if _, err := f.Put(ctx, providers.PutRequest{Name: "allowed/x", Value: []byte("v"), Owner: owner}); err != nil {
		t.Fatal(err)
	}
	if st := f.Stats(); st.Permanent != 1 || st.InnerCalls != 1 || st.Calls != 2 || st.Faults() != 1 {
		t.Fatalf("stats %+v", st)
	}
	f.ResetStats()
	if st := f.Stats(); st != (providertest.FaultStats{}) {
		t.Fatalf("after ResetStats: %+v", st)
	}
}

// The same seed and call sequence give the same faults.
func TestFaultyDeterministic(t *testing.T) {
	pattern := func(seed uint64) string {
		f := providertest.NewFaulty(memory(t), providertest.FaultConfig{Seed: seed, RetryableRate: 0.5, FailAfterCommitRate: 0.5})
		var b strings.Builder
		for i := 0; i < 64; i++ {
			_, err := f.Put(context.Background(), providers.PutRequest{Name: "n", Value: []byte("v"), IdempotencyKey: fmt.Sprint(i), Owner: owner})
			b.WriteByte(map[bool]byte{true: 'x', false: '.'}[err != nil])
		}
		return b.String()
	}
	a, b, c := pattern(7), pattern(7), pattern(8)
	if a != b {
		t.Fatalf("same seed, different faults:\n%s\n%s", a, b)
	}
	if a == c {
		t.Fatalf("different seeds, same faults: %s", a)
	}
}

func TestFaultyLatency(t *testing.T) {
	f := providertest.NewFaulty(memory(t), providertest.FaultConfig{Latency: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := f.Put(ctx, providers.PutRequest{Name: "slow", Value: []byte("v"), Owner: owner})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("Put: %v after %v, want the context's deadline", err, time.Since(start))
	}
	if st := f.Stats(); st.InnerCalls != 0 {
		t.Fatalf("inner provider called: %+v", st)
	}
	f.SetConfig(providertest.FaultConfig{Latency: 5 * time.Millisecond, LatencyJitter: 5 * time.Millisecond})
	start = time.Now()
	if _, err := f.Put(context.Background(), providers.PutRequest{Name: "slow", Value: []byte("v"), Owner: owner}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 5*time.Millisecond {
		t.Fatalf("Put took %v, want at least the latency", d)
	}
}

// bare implements only providers.Provider.
type bare struct{ providers.Provider }

func TestFaultyOptionalInterfaces(t *testing.T) {
	ctx := context.Background()
	f := providertest.NewFaulty(bare{memory(t)}, providertest.FaultConfig{})
	if _, err := f.Versions(ctx, "x"); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("Versions on a provider without Versioner: %v", err)
	}
	if err := f.UpdateTags(ctx, providers.TagRequest{Name: "x"}); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("UpdateTags on a provider without TagUpdater: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, ok := f.Inner().(bare); !ok {
		t.Errorf("Inner returned %T", f.Inner())
	}
}

func TestFaultConfigValidate(t *testing.T) {
	for _, c := range []providertest.FaultConfig{
		{RetryableRate: 1.5}, {ThrottledFraction: -0.1}, {FailAfterCommitRate: 2}, {RetryAfter: -1}, {Latency: -1},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("NewFaulty with a bad config did not panic")
		}
	}()
	providertest.NewFaulty(nil, providertest.FaultConfig{RetryableRate: 3})
}

// Faulty plugs into a registry as a decorator.
func TestFaultyRegistryWrap(t *testing.T) {
	r := providers.NewRegistry()
	local.Register(r)
	var faulty *providertest.Faulty
	r.Wrap(func(_ string, p providers.Provider) providers.Provider {
		faulty = providertest.NewFaulty(p, providertest.FaultConfig{RetryableRate: 1})
		return faulty
	})
	p, err := r.Open(context.Background(), local.Name, providers.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := p.Put(context.Background(), providers.PutRequest{Name: "x", Value: []byte("v")}); !providers.IsRetryable(err) {
		t.Fatalf("Put: %v, want an injected retryable error", err)
	}
	if faulty.Stats().Retryable != 1 {
		t.Fatalf("stats %+v", faulty.Stats())
	}
}
