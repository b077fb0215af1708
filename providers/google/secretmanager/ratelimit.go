package secretmanager

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"

	"github.com/keyrelay/keyrelay/providers"
)

// Kinds of Secret Manager's per-project request quotas, as providers.Quotas
// names end ("google_secret_manager/PROJECT/KIND"). Google counts each RPC
// against one of them.
const (
	// quotaWrite counts the mutating RPCs (CreateSecret, UpdateSecret,
	// DeleteSecret, AddSecretVersion, Enable/Disable/DestroySecretVersion,
	// SetIamPolicy): 600 a minute.
	quotaWrite = "write"
	// quotaRead counts every other RPC but AccessSecretVersion
	// (GetSecret, GetSecretVersion, ListSecrets, ListSecretVersions, each
	// page a call, GetIamPolicy, TestIamPermissions): 600 a minute.
	quotaRead = "read"
	// quotaAccess counts AccessSecretVersion: 90,000 a minute.
	quotaAccess = "access"
)

// quotaKind returns the quota an RPC (its last method name segment)
// counts against.
func quotaKind(method string) string {
	switch method {
	case "AccessSecretVersion":
		return quotaAccess
	case "CreateSecret", "UpdateSecret", "DeleteSecret", "AddSecretVersion",
		"EnableSecretVersion", "DisableSecretVersion", "DestroySecretVersion", "SetIamPolicy":
		return quotaWrite
	}
	return quotaRead
}

// limiterKey identifies whose quotas a provider's calls count against:
// the project's, on one endpoint, with the limits configured.
type limiterKey struct {
	endpoint, project     string
	writes, reads, access float64 // per window
	window                time.Duration
	perSec                float64 // per secret
}

// limiters holds the project's write, read and access limiters and one
// write limiter per secret.
type limiters struct {
	project *rate.Limiter // writes
	read    *rate.Limiter
	access  *rate.Limiter
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
	l := &limiters{
		project: providers.NewLimiter(windowRate(k.writes, k.window)),
		read:    providers.NewLimiter(windowRate(k.reads, k.window)),
		access:  providers.NewLimiter(windowRate(k.access, k.window)),
		perSec:  k.perSec,
		secrets: map[string]*secretLimiter{},
	}
	sharedLimiters[k] = l
	return l
}

// windowRate is providers.WindowRate of a configured per-window limit
// (whole calls: Validate keeps it at 1 or more).
func windowRate(limit float64, window time.Duration) float64 {
	return providers.WindowRate(int(math.Floor(limit)), window)
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

// limiter returns the project's limiter of quota kind.
func (l *limiters) limiter(kind string) *rate.Limiter {
	switch kind {
	case quotaRead:
		return l.read
	case quotaAccess:
		return l.access
	}
	return l.project
}

// quotaRate is the rate of the project's limiter of kind, and the rate
// asked of providers.Quotas: providers.WindowRate of the configured limit
// per minute, so that neither admits more than the limit in any minute.
func (p *Provider) quotaRate(kind string) float64 {
	limit := p.cfg.ProjectWritesPerMinute
	switch kind {
	case quotaRead:
		limit = p.cfg.ReadsPerMinute
	case quotaAccess:
		limit = p.cfg.AccessPerMinute
	}
	return windowRate(limit, p.cfg.quotaWindow)
}

// take takes one token from each limiter (see providers.WaitTokens),
// then, when the provider has cluster-wide quotas
// (providers.Config.Quotas), one of the project's quota of kind (see
// quotaName) at the project limiter's rate. It returns the wait needed
// with an error wrapping providers.ErrThrottled when the call's deadline
// comes first, or the context's error.
func (p *Provider) take(ctx context.Context, kind string, lims ...*rate.Limiter) (time.Duration, error) {
	d, err := providers.WaitTokens(ctx, lims...)
	if err == nil && p.quotas != nil {
		d, err = p.quotas.Wait(ctx, p.quotaName(kind), p.quotaRate(kind))
	}
	return d, err
}

// wait takes, before one write to the project, one token from each
// limiter and from the project's write quota (see take): tokens the call's
// deadline cannot wait for fail at once as Throttled with the wait as
// RetryAfter.
func (p *Provider) wait(ctx context.Context, op, name string, lims ...*rate.Limiter) error {
	d, err := p.take(ctx, quotaWrite, lims...)
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

// limitRPC is the client's unary interceptor: before each read or access
// RPC, each page of a listing included, it takes a token of the project's
// read or access limiter and quota (see take). Writes take theirs where
// they are made (wait), with the secret's own limiter. A token the call's
// deadline cannot wait for fails the RPC at once with a *limitError, which
// classify turns into Throttled with the wait as RetryAfter. Under
// giveWay, the RPC goes on only if a token is free now.
func (p *Provider) limitRPC(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	kind := quotaKind(method[strings.LastIndexByte(method, '/')+1:])
	if kind == quotaWrite {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	lim := p.lim.limiter(kind)
	if ctx.Value(giveWayKey{}) != nil {
		if !lim.Allow() || !p.quotaNow(ctx, kind) {
			return &limitError{kind: kind, wait: time.Second, err: fmt.Errorf("%w: no token free now", providers.ErrThrottled)}
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	d, err := p.take(ctx, kind, lim)
	switch {
	case err == nil:
		return invoker(ctx, method, req, reply, cc, opts...)
	case d > 0:
		return &limitError{kind: kind, wait: d, err: err}
	}
	return err
}

// limitError is a read or access RPC refused by keyrelay's own limiters
// (see limitRPC): it never reached Secret Manager.
type limitError struct {
	kind string
	wait time.Duration
	err  error // wraps providers.ErrThrottled
}

func (e *limitError) Error() string { return "client-side " + e.kind + " limit: " + e.err.Error() }
func (e *limitError) Unwrap() error { return e.err }

// asLimitError turns a *limitError in err into a Throttled
// *providers.Error, with the wait as RetryAfter.
func asLimitError(op, name string, err error) (error, bool) {
	var le *limitError
	if !errors.As(err, &le) {
		return nil, false
	}
	e := providers.NewError(Name, op, name, providers.Throttled, le)
	e.RetryAfter = le.wait
	return e, true
}

// giveWayKey marks a context whose read RPCs are best effort (version
// hygiene): they go on only if a token is free now.
type giveWayKey struct{}

func giveWay(ctx context.Context) context.Context {
	return context.WithValue(ctx, giveWayKey{}, true)
}

// quotaName names the project's quota of kind for providers.Quotas as
// Secret Manager scopes it, per project:
// "google_secret_manager/PROJECT/KIND", e.g.
// "google_secret_manager/my-project/write".
func (p *Provider) quotaName(kind string) string {
	return Name + "/" + p.cfg.Project + "/" + kind
}

// quotaProbe bounds how long quotaNow waits for providers.Quotas.
const quotaProbe = 50 * time.Millisecond

// quotaNow takes a token of the project's quota of kind from the
// cluster-wide quotas only if one is free now (true without quotas): for
// best-effort calls that give way to the others, like version hygiene.
func (p *Provider) quotaNow(ctx context.Context, kind string) bool {
	if p.quotas == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, quotaProbe)
	defer cancel()
	_, err := p.quotas.Wait(ctx, p.quotaName(kind), p.quotaRate(kind))
	return err == nil
}
