package providers

import (
	"context"
	"time"
)

// Quotas shares a backend's request quotas between every keyrelay process
// calling the same account, project or vault, so that N processes together
// stay under the quota the backend enforces (package quota implements it
// on NATS). A provider asks it for a token before each call counted
// against a quota, on top of its own per-process limiter.
type Quotas interface {
	// Wait takes one token of the quota named name, whose cluster-wide
	// rate is perSecond calls per second (burst: one second's worth). Names
	// identify the quota's owner and kind, provider first, e.g.
	// "aws_secret_manager/123456789012/us-east-1/write".
	//
	// Like WaitTokens: when ctx's deadline comes before the token, Wait
	// takes none and returns at once the wait needed with an error
	// wrapping ErrThrottled; a context ended while waiting returns its
	// error. It never fails because NATS is slow or down: it falls back to
	// a conservative share of perSecond instead.
	Wait(ctx context.Context, name string, perSecond float64) (time.Duration, error)
}

// Retirer is implemented by providers that can retire one earlier version
// of a secret once a rotation's grace period is over: the version stops
// being readable (or, where the backend keeps values of unlabelled
// versions, stops being the one AWSPREVIOUS-style lookups find), in the
// way the backend allows:
//
//   - AWS Secrets Manager: the AWSPREVIOUS staging label is moved off the
//     version (AWS deprecates unlabelled versions itself).
//   - HashiCorp Vault KV v2: the version is destroyed.
//   - Google Secret Manager: the version is disabled, then destroyed.
//   - Azure Key Vault: the version is disabled.
//   - local: the version is dropped.
//
// Retire is idempotent: retiring a version already retired, or one the
// backend has already dropped, succeeds. It refuses (ErrConflict,
// permanent) to retire the secret's current version, and checks ownership
// like Put (ErrNotOwned unless adopt). A missing secret is ErrNotFound.
type Retirer interface {
	Retire(ctx context.Context, req RetireRequest) error
}

// RetireRequest names the version to retire.
type RetireRequest struct {
	Name    string
	Version string
	Owner   Owner
	Adopt   bool
	// ReplacedBy is the PutResult.Stamp of the write that replaced
	// Version (the rotation that scheduled the retirement), "" when the
	// caller has none. A provider whose version ids come back after the
	// secret is deleted and re-created (Google) retires Version only when
	// it was created before that write, and otherwise does nothing, as for
	// a version already gone: a retirement scheduled before the secret was
	// re-created must not retire the new secret's version of that number.
	// Without it such a provider cannot tell, and retires Version as named.
	ReplacedBy string
}

// AsRetirer returns p's Retirer, looking through wrappers that implement
// Unwrap() Provider.
func AsRetirer(p Provider) (Retirer, bool) {
	for i := 0; p != nil && i < maxUnwrap; i++ {
		if r, ok := p.(Retirer); ok {
			return r, true
		}
		u, ok := p.(interface{ Unwrap() Provider })
		if !ok {
			return nil, false
		}
		p = u.Unwrap()
	}
	return nil, false
}

// Priority orders calls waiting for the same quota: a bulk job's calls
// take only what the gateway's own calls leave.
type Priority int

const (
	// PriorityInteractive: the gateway's events (the default).
	PriorityInteractive Priority = iota
	// PriorityBulk: bulk jobs (the bulk lane). A Quotas implementation
	// serves them only when no interactive call of this process waits for
	// the same quota, and keeps a small part of its share for interactive
	// calls to come; WaitTokens, the providers' own limiters, never books
	// a future token for them.
	PriorityBulk
)

type priorityKey struct{}

// WithPriority marks ctx's calls with p.
func WithPriority(ctx context.Context, p Priority) context.Context {
	return context.WithValue(ctx, priorityKey{}, p)
}

// PriorityOf is the priority WithPriority set on ctx (interactive when
// none).
func PriorityOf(ctx context.Context) Priority {
	p, _ := ctx.Value(priorityKey{}).(Priority)
	return p
}
