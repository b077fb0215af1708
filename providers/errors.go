package providers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// Sentinel errors callers branch on with errors.Is.
var (
	ErrNotFound     = errors.New("secret not found")
	ErrNotOwned     = errors.New("secret is not managed by keyrelay for this key")
	ErrConflict     = errors.New("concurrent modification")
	ErrAccessDenied = errors.New("access denied")
	ErrInvalid      = errors.New("invalid request")
	ErrThrottled    = errors.New("throttled")
	// ErrOwnLimit marks a throttle by keyrelay's own limits (the
	// per-process limiters, the cluster-wide Quotas) that made no call:
	// the backend is fine, the call waits for its turn. Such errors also
	// match ErrThrottled. Callers do not count them against the backend
	// (circuit breaker) or the event (retry budget).
	ErrOwnLimit    = errors.New("held back by keyrelay's own rate limit (no call was made)")
	ErrUnavailable = errors.New("backend unavailable")
	// ErrSecretLimit marks a retryable refusal that concerns one secret
	// only, from a backend that is up and answering: a per-secret quota
	// (AWS Secrets Manager's versions quota) that frees up with time.
	// Callers retry it with the event's budget, but do not count it
	// against the backend (circuit breaker): one busy secret must not stop
	// every team's writes to a healthy backend.
	ErrSecretLimit = errors.New("a limit of this one secret is reached (the backend is up)")
	// ErrUnnamed: a listing of every name (ListRequest.Every) met a secret
	// whose keyrelay name cannot be told from the backend's name (a name
	// the backend had to map, stored by someone else without keyrelay's
	// name tag), so it cannot show which names are free. Callers read the
	// names they need instead.
	ErrUnnamed = errors.New("a listed secret's name cannot be told")
)

// Kind classifies an error for the retry policy.
type Kind int

// Error kinds.
const (
	// Permanent errors are not retried: the event goes to the DLQ.
	Permanent Kind = iota
	// Retryable errors (5xx, network, timeout, conflict) are retried with
	// backoff.
	Retryable
	// Throttled errors are retried no earlier than RetryAfter.
	Throttled
)

func (k Kind) String() string {
	switch k {
	case Retryable:
		return "retryable"
	case Throttled:
		return "throttled"
	}
	return "permanent"
}

// Error is what providers return. Its message names the provider, the
// operation and the cause; it never contains a value or a credential.
type Error struct {
	Provider string
	Op       string
	Name     string
	Kind     Kind
	// RetryAfter is the backend's retry hint, if it gave one.
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string {
	s := e.Provider + " " + e.Op
	if e.Name != "" {
		s += " " + fmt.Sprintf("%q", e.Name)
	}
	s += ": " + e.Kind.String()
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// NewError wraps err with its classification.
func NewError(provider, op, name string, kind Kind, err error) *Error {
	return &Error{Provider: provider, Op: op, Name: name, Kind: kind, Err: err}
}

// IsRetryable reports whether err is worth retrying: a retryable or
// throttled *Error, a timeout, or a network error. Cancellation of the
// caller's own context is not retryable.
func IsRetryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Kind != Permanent
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrThrottled) ||
		errors.Is(err, ErrUnavailable) || errors.Is(err, ErrConflict) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne)
}

// RetryAfter returns the backend's retry hint carried by err, or zero.
func RetryAfter(err error) time.Duration {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.RetryAfter
	}
	return 0
}
