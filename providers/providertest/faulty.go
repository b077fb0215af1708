package providertest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/keyrelay/keyrelay/internal/ctxtime"
	"github.com/keyrelay/keyrelay/providers"
)

// Op names a provider operation for fault injection; the values match the
// Op field of the *providers.Error values Faulty returns.
type Op string

// Operations Faulty can fault.
const (
	OpPut        Op = "put"
	OpGet        Op = "get"
	OpDelete     Op = "delete"
	OpVersions   Op = "versions"
	OpUpdateTags Op = "update_tags"
)

// DefaultFaultRetryAfter is the RetryAfter of injected throttling errors when
// FaultConfig.RetryAfter is zero.
const DefaultFaultRetryAfter = 100 * time.Millisecond

// FaultConfig says which faults a Faulty injects. The zero value injects
// nothing: Faulty then only counts calls.
type FaultConfig struct {
	// Seed seeds the RNG. The same Seed, config and sequence of calls give
	// the same faults; with concurrent callers the order of calls, and so
	// the assignment of faults to calls, is up to the scheduler.
	Seed uint64
	// Provider is the Provider field of injected errors. Default: "faulty".
	Provider string
	// Ops limits injection (faults and latency) to these operations.
	// Default: all operations.
	Ops []Op
	// RetryableRate is the probability, in [0,1], that a call fails before
	// it reaches the inner provider, so nothing is written.
	RetryableRate float64
	// ThrottledFraction is the share, in [0,1], of those failures reported
	// as Kind Throttled wrapping ErrThrottled with RetryAfter set; the rest
	// are Kind Retryable wrapping ErrUnavailable.
	ThrottledFraction float64
	// RetryAfter is the hint on injected throttling errors. Default:
	// DefaultFaultRetryAfter (100ms).
	RetryAfter time.Duration
	// Permanent, when set and true for a call's secret name, makes the call
	// fail before the inner call with Kind Permanent wrapping
	// ErrAccessDenied. It is checked before RetryableRate.
	Permanent func(name string) bool
	// FailAfterCommitRate is the probability, in [0,1], that a write (Put,
	// Delete, UpdateTags) that succeeded on the inner provider reports a
	// Kind Retryable error wrapping ErrUnavailable instead of its result: a
	// response lost after the commit. Retrying a Put with the same
	// IdempotencyKey must then give Duplicate; retrying a Delete gives
	// ErrNotFound.
	FailAfterCommitRate float64
	// Latency is added before every call; LatencyJitter adds a uniformly
	// random extra in [0, LatencyJitter). A context done while waiting ends
	// the call with its error, and the inner provider is not called.
	Latency       time.Duration
	LatencyJitter time.Duration
}

// Validate reports a config field outside its range.
func (c FaultConfig) Validate() error {
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"RetryableRate", c.RetryableRate},
		{"ThrottledFraction", c.ThrottledFraction},
		{"FailAfterCommitRate", c.FailAfterCommitRate},
	} {
		if !(f.v >= 0 && f.v <= 1) {
			return fmt.Errorf("providertest: FaultConfig.%s %v outside [0,1]", f.name, f.v)
		}
	}
	if c.RetryAfter < 0 {
		return fmt.Errorf("providertest: FaultConfig.RetryAfter %v is negative", c.RetryAfter)
	}
	if c.Latency < 0 || c.LatencyJitter < 0 {
		return errors.New("providertest: FaultConfig.Latency and LatencyJitter must not be negative")
	}
	return nil
}

// FaultStats counts what a Faulty did.
type FaultStats struct {
	// Calls is the number of calls received.
	Calls int64
	// InnerCalls is the number of calls passed to the inner provider.
	InnerCalls int64
	// Retryable and Throttled count failures injected before the call.
	Retryable int64
	Throttled int64
	// Permanent counts failures injected by FaultConfig.Permanent.
	Permanent int64
	// AfterCommit counts successful writes reported as failed.
	AfterCommit int64
}

// Faults is the total number of injected failures.
func (s FaultStats) Faults() int64 {
	return s.Retryable + s.Throttled + s.Permanent + s.AfterCommit
}

// Faulty is a providers.Provider that injects faults around an inner one.
// It implements providers.Versioner, providers.TagUpdater and
// providers.Closer whatever the inner provider is: when the inner provider
// lacks one, the method returns a permanent error wrapping
// errors.ErrUnsupported (Close returns nil). It is safe for concurrent use.
type Faulty struct {
	inner providers.Provider

	mu    sync.Mutex
	cfg   FaultConfig
	ops   map[Op]bool
	rng   *rand.Rand
	stats FaultStats
}

var (
	_ providers.Provider   = (*Faulty)(nil)
	_ providers.Versioner  = (*Faulty)(nil)
	_ providers.TagUpdater = (*Faulty)(nil)
	_ providers.Closer     = (*Faulty)(nil)
)

// NewFaulty wraps inner. It panics if cfg does not Validate (a test bug).
// To fault every provider a registry builds:
//
//	reg.Wrap(func(_ string, p providers.Provider) providers.Provider {
//		return providertest.NewFaulty(p, cfg)
//	})
func NewFaulty(inner providers.Provider, cfg FaultConfig) *Faulty {
	f := &Faulty{inner: inner, rng: rand.New(rand.NewPCG(cfg.Seed, 0x6b657972656c6179))}
	f.SetConfig(cfg)
	return f
}

// SetConfig replaces the fault configuration (for example to heal the
// backend mid-test). The RNG is not reseeded. It panics if cfg does not
// Validate.
func (f *Faulty) SetConfig(cfg FaultConfig) {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	if cfg.Provider == "" {
		cfg.Provider = "faulty"
	}
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = DefaultFaultRetryAfter
	}
	var ops map[Op]bool
	if len(cfg.Ops) > 0 {
		ops = map[Op]bool{}
		for _, op := range cfg.Ops {
			ops[op] = true
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cfg, f.ops = cfg, ops
}

// Inner returns the wrapped provider, for reading state behind the faults.
func (f *Faulty) Inner() providers.Provider { return f.inner }

// Stats returns a snapshot of the counters.
func (f *Faulty) Stats() FaultStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

// ResetStats zeroes the counters.
func (f *Faulty) ResetStats() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats = FaultStats{}
}

// plan is the fate of one call, drawn under the lock.
type plan struct {
	provider string
	inScope  bool
	delay    time.Duration
	permFn   func(string) bool
	fail     bool
	throttle bool
	after    float64 // probability of a lost response
	retryHnt time.Duration
}

func (f *Faulty) draw(op Op) plan {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats.Calls++
	c := f.cfg
	p := plan{provider: c.Provider, inScope: f.ops == nil || f.ops[op]}
	if !p.inScope {
		return p
	}
	// Always draw the same number of values per call so that a config
	// change in one rate does not shift the faults of another.
	r1, r2 := f.rng.Float64(), f.rng.Float64()
	p.delay = c.Latency
	if c.LatencyJitter > 0 {
		p.delay += time.Duration(f.rng.Int64N(int64(c.LatencyJitter)))
	}
	p.permFn = c.Permanent
	p.fail = r1 < c.RetryableRate
	p.throttle = r2 < c.ThrottledFraction
	p.after = c.FailAfterCommitRate
	p.retryHnt = c.RetryAfter
	return p
}

func (f *Faulty) count(fn func(s *FaultStats)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.stats)
}

// before injects the faults that happen before the inner call.
func (f *Faulty) before(ctx context.Context, op Op, name string) (plan, error) {
	p := f.draw(op)
	if !p.inScope {
		f.count(func(s *FaultStats) { s.InnerCalls++ })
		return p, nil
	}
	if p.delay > 0 {
		if err := ctxtime.Sleep(ctx, p.delay); err != nil {
			return p, providers.NewError(p.provider, string(op), name, providers.Retryable, err)
		}
	}
	switch {
	case p.permFn != nil && p.permFn(name):
		f.count(func(s *FaultStats) { s.Permanent++ })
		return p, providers.NewError(p.provider, string(op), name, providers.Permanent,
			fmt.Errorf("injected fault: %w", providers.ErrAccessDenied))
	case p.fail && p.throttle:
		f.count(func(s *FaultStats) { s.Throttled++ })
		e := providers.NewError(p.provider, string(op), name, providers.Throttled,
			fmt.Errorf("injected fault: %w", providers.ErrThrottled))
		e.RetryAfter = p.retryHnt
		return p, e
	case p.fail:
		f.count(func(s *FaultStats) { s.Retryable++ })
		return p, providers.NewError(p.provider, string(op), name, providers.Retryable,
			fmt.Errorf("injected fault: %w", providers.ErrUnavailable))
	}
	f.count(func(s *FaultStats) { s.InnerCalls++ })
	return p, nil
}

// afterWrite turns a committed write into a lost response, maybe.
func (f *Faulty) afterWrite(p plan, op Op, name string, err error) error {
	if err != nil || !p.inScope {
		return err
	}
	f.mu.Lock()
	lost := f.rng.Float64() < p.after
	if lost {
		f.stats.AfterCommit++
	}
	f.mu.Unlock()
	if lost {
		return providers.NewError(p.provider, string(op), name, providers.Retryable,
			fmt.Errorf("injected fault after commit (response lost): %w", providers.ErrUnavailable))
	}
	return nil
}

// Put implements providers.Provider.
func (f *Faulty) Put(ctx context.Context, req providers.PutRequest) (providers.PutResult, error) {
	p, err := f.before(ctx, OpPut, req.Name)
	if err != nil {
		return providers.PutResult{}, err
	}
	res, err := f.inner.Put(ctx, req)
	if err = f.afterWrite(p, OpPut, req.Name, err); err != nil {
		return providers.PutResult{}, err
	}
	return res, nil
}

// Get implements providers.Provider.
func (f *Faulty) Get(ctx context.Context, name, version string) (*providers.Secret, error) {
	if _, err := f.before(ctx, OpGet, name); err != nil {
		return nil, err
	}
	return f.inner.Get(ctx, name, version)
}

// Delete implements providers.Provider.
func (f *Faulty) Delete(ctx context.Context, req providers.DeleteRequest) error {
	p, err := f.before(ctx, OpDelete, req.Name)
	if err != nil {
		return err
	}
	return f.afterWrite(p, OpDelete, req.Name, f.inner.Delete(ctx, req))
}

// Capabilities implements providers.Provider.
func (f *Faulty) Capabilities() providers.Capabilities { return f.inner.Capabilities() }

func (f *Faulty) unsupported(op Op, name string) error {
	f.mu.Lock()
	prov := f.cfg.Provider
	f.mu.Unlock()
	return providers.NewError(prov, string(op), name, providers.Permanent,
		fmt.Errorf("inner provider %T: %w", f.inner, errors.ErrUnsupported))
}

// Versions implements providers.Versioner by delegating to the inner
// provider, or fails with errors.ErrUnsupported.
func (f *Faulty) Versions(ctx context.Context, name string) ([]providers.VersionInfo, error) {
	v, ok := f.inner.(providers.Versioner)
	if !ok {
		return nil, f.unsupported(OpVersions, name)
	}
	if _, err := f.before(ctx, OpVersions, name); err != nil {
		return nil, err
	}
	return v.Versions(ctx, name)
}

// UpdateTags implements providers.TagUpdater by delegating to the inner
// provider, or fails with errors.ErrUnsupported.
func (f *Faulty) UpdateTags(ctx context.Context, req providers.TagRequest) error {
	u, ok := f.inner.(providers.TagUpdater)
	if !ok {
		return f.unsupported(OpUpdateTags, req.Name)
	}
	p, err := f.before(ctx, OpUpdateTags, req.Name)
	if err != nil {
		return err
	}
	return f.afterWrite(p, OpUpdateTags, req.Name, u.UpdateTags(ctx, req))
}

// Close closes the inner provider if it is a providers.Closer.
func (f *Faulty) Close() error {
	if c, ok := f.inner.(providers.Closer); ok {
		return c.Close()
	}
	return nil
}
