package secretmanager

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keyrelay/keyrelay/providers"
)

// Retry hints.
const (
	// DefaultThrottleRetryAfter is the RetryAfter of a RESOURCE_EXHAUSTED
	// error without a google.rpc.RetryInfo detail.
	DefaultThrottleRetryAfter = time.Second
	// MaxRetryAfter caps the hints taken from responses.
	MaxRetryAfter = time.Minute
)

// APIError is a Secret Manager failure reduced to what is safe to log: the
// RPC, the gRPC code and Google's message with quoted text removed, cut to
// 200 characters. It unwraps to the providers sentinel that classifies it.
type APIError struct {
	RPC     string
	Code    codes.Code
	Message string

	cause error
}

func (e *APIError) Error() string {
	s := e.RPC + ": " + e.Code.String()
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Unwrap returns the providers sentinel.
func (e *APIError) Unwrap() error { return e.cause }

var quoted = regexp.MustCompile(`"[^"]*"|'[^']*'`)

func sanitize(msg string) string {
	msg = quoted.ReplaceAllString(msg, `"…"`)
	msg = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, msg)
	if r := []rune(msg); len(r) > 200 {
		msg = string(r[:200]) + "…"
	}
	return msg
}

// isEtagMismatch reports whether a FAILED_PRECONDITION is an etag
// mismatch (a concurrent modification), not a state problem.
func isEtagMismatch(msg string) bool {
	return strings.Contains(strings.ToLower(msg), "etag")
}

// isChecksumMismatch reports whether an INVALID_ARGUMENT message is
// Secret Manager refusing a payload whose data_crc32c does not match.
func isChecksumMismatch(msg string) bool {
	m := strings.ToLower(msg)
	return strings.Contains(m, "checksum") || strings.Contains(m, "crc32c")
}

// classify turns an RPC error into a *providers.Error.
func classify(ctx context.Context, op, name, rpc string, err error) error {
	if err == nil {
		return nil
	}
	if ce := ctx.Err(); ce != nil {
		return ctxErr(op, name, ce)
	}
	if e, ok := asLimitError(op, name, err); ok {
		return e
	}
	st, ok := status.FromError(err)
	if !ok {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return ctxErr(op, name, err)
		}
		return providers.NewError(Name, op, name, providers.Retryable,
			&APIError{RPC: rpc, Code: codes.Unknown, Message: "transport failure", cause: providers.ErrUnavailable})
	}
	ae := &APIError{RPC: rpc, Code: st.Code(), Message: sanitize(st.Message())}
	kind := providers.Permanent
	var retryAfter time.Duration
	switch st.Code() {
	case codes.NotFound:
		ae.cause = providers.ErrNotFound
	case codes.AlreadyExists:
		ae.cause, kind = providers.ErrConflict, providers.Retryable
	case codes.FailedPrecondition:
		if isEtagMismatch(st.Message()) {
			ae.cause, kind = providers.ErrConflict, providers.Retryable
		} else {
			ae.cause = providers.ErrInvalid
		}
	case codes.Aborted:
		ae.cause, kind = providers.ErrConflict, providers.Retryable
	case codes.ResourceExhausted:
		ae.cause, kind = providers.ErrThrottled, providers.Throttled
		retryAfter = DefaultThrottleRetryAfter
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
				if v := ri.GetRetryDelay().AsDuration(); v > 0 {
					retryAfter = min(v, MaxRetryAfter)
				}
			}
		}
	case codes.Internal:
		ae.cause, kind = providers.ErrUnavailable, providers.Retryable
		if strings.Contains(st.Message(), "error while marshaling") {
			// The client could not encode the request (a string that is
			// not UTF-8): it never left, and never will.
			ae.cause, kind = providers.ErrInvalid, providers.Permanent
		}
	case codes.Unavailable, codes.DeadlineExceeded, codes.Unknown, codes.Canceled:
		ae.cause, kind = providers.ErrUnavailable, providers.Retryable
	case codes.InvalidArgument:
		ae.cause = providers.ErrInvalid
		if rpc == "AddSecretVersion" && isChecksumMismatch(st.Message()) {
			// keyrelay computes data_crc32c from the bytes it sends: a
			// mismatch is the payload corrupted in transit, and nothing
			// was written. The same request sent again is intact.
			ae.cause, kind = providers.ErrUnavailable, providers.Retryable
		}
	case codes.PermissionDenied, codes.Unauthenticated:
		// UNAUTHENTICATED gets here only when the call, sent once more
		// with a new access token, was refused again (tokens.Source).
		ae.cause = providers.ErrAccessDenied
	default: // InvalidArgument, OutOfRange, Unimplemented, DataLoss, ...
		ae.cause = providers.ErrInvalid
	}
	e := providers.NewError(Name, op, name, kind, ae)
	e.RetryAfter = retryAfter
	return e
}

// ctxErr wraps the caller's context error: cancellation is permanent (the
// caller gave up), a deadline retryable.
func ctxErr(op, name string, err error) error {
	kind := providers.Retryable
	if errors.Is(err, context.Canceled) {
		kind = providers.Permanent
	}
	return providers.NewError(Name, op, name, kind, err)
}

func newErr(op, name string, kind providers.Kind, sentinel error, format string, args ...any) error {
	if format == "" {
		return providers.NewError(Name, op, name, kind, sentinel)
	}
	return providers.NewError(Name, op, name, kind, fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...))
}

// ErrClosed is returned (wrapped, permanent) by a closed provider.
var ErrClosed = errors.New("provider closed")
