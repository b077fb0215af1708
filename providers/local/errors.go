package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/keyrelay/keyrelay/providers"
)

// Errors specific to the local provider. They arrive wrapped in a
// *providers.Error of Kind Permanent; match them with errors.Is.
var (
	// ErrCorrupt: a secret file cannot be parsed, holds another secret, or
	// a value fails authentication (tampering, or data moved between
	// secrets or versions).
	ErrCorrupt = errors.New("corrupt secret file")
	// ErrWrongKey: the secret was encrypted with a key other than the one
	// in key_file.
	ErrWrongKey = errors.New("secret was encrypted with a different key")
	// ErrClosed: the provider was closed.
	ErrClosed = errors.New("provider closed")
)

func newErr(op, name string, kind providers.Kind, err error) *providers.Error {
	return providers.NewError(Name, op, name, kind, err)
}

func errNotFound(op, name string) error {
	return newErr(op, name, providers.Permanent, providers.ErrNotFound)
}

func errNotOwned(op, name string) error {
	return newErr(op, name, providers.Permanent, providers.ErrNotOwned)
}

func errInvalid(op, name, format string, args ...any) error {
	return newErr(op, name, providers.Permanent, fmt.Errorf("%w: "+format, append([]any{providers.ErrInvalid}, args...)...))
}

func errCorrupt(op, name, format string, args ...any) error {
	return newErr(op, name, providers.Permanent, fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...))
}

// errCtx wraps the caller's context error. IsRetryable reports a cancelled
// context as not retryable whatever the Kind; a deadline is retryable.
func errCtx(op, name string, err error) error {
	return newErr(op, name, providers.Retryable, err)
}

// errIO classifies a file-system error. Permission problems and read-only
// file systems need an operator: permanent (ErrAccessDenied). Everything
// else (ENOSPC, EIO, EMFILE, EINTR, a directory removed under us) may pass:
// retryable (ErrUnavailable), bounded by the worker's MaxDeliver.
func errIO(op, name string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return errCtx(op, name, err)
	}
	if errors.Is(err, fs.ErrPermission) || isReadOnlyFS(err) {
		return newErr(op, name, providers.Permanent, fmt.Errorf("%w: %w", providers.ErrAccessDenied, err))
	}
	return newErr(op, name, providers.Retryable, fmt.Errorf("%w: %w", providers.ErrUnavailable, err))
}
