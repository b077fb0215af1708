package conjur

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/keyrelay/keyrelay/providers"
)

// classify turns err into a *providers.Error. Conjur's own messages are not
// copied (they may echo request data); only the HTTP status and Conjur's
// error code are kept.
func classify(ctx context.Context, op, name string, err error) error {
	if err == nil {
		return nil
	}
	var pe *providers.Error
	if errors.As(err, &pe) {
		return err
	}
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || !isConjur(err)) {
		kind := providers.Permanent
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			kind = providers.Retryable
		}
		return providers.NewError(Name, op, name, kind, ctx.Err())
	}
	var ce *apiError
	if errors.As(err, &ce) {
		e := fromStatus(op, name, ce.Status, ce.Code, "")
		e.RetryAfter = ce.RetryAfter
		return e
	}
	var ue x509.UnknownAuthorityError
	var he x509.HostnameError
	var ve *tls.CertificateVerificationError
	var re *tls.RecordHeaderError
	if errors.As(err, &ue) || errors.As(err, &he) || errors.As(err, &ve) || errors.As(err, &re) {
		return providers.NewError(Name, op, name, providers.Permanent, fmt.Errorf("%w: TLS verification of the Conjur appliance failed (check ca_bundle)", providers.ErrUnavailable))
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "remote error" {
		// A TLS alert from the appliance (certificate required, bad
		// certificate, unknown CA): a configuration problem.
		return providers.NewError(Name, op, name, providers.Permanent, fmt.Errorf("%w: the Conjur appliance rejected the TLS handshake (check CYBERARK_CLIENT_CERT and CYBERARK_CLIENT_KEY)", providers.ErrAccessDenied))
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, net.ErrClosed) {
		what := "network error"
		if ne != nil && ne.Timeout() {
			what = "timeout"
		}
		return providers.NewError(Name, op, name, providers.Retryable, fmt.Errorf("%w: %s talking to Conjur", providers.ErrUnavailable, what))
	}
	return providers.NewError(Name, op, name, providers.Retryable, fmt.Errorf("%w: unexpected response from Conjur", providers.ErrUnavailable))
}

func isConjur(err error) bool {
	var ce *apiError
	return errors.As(err, &ce)
}

// apiError is a non-2xx Conjur response: the status, the "code" of
// Conjur's JSON error body ({"error":{"code":...,"message":...}}) and the
// Retry-After header (Conjur sends one with 409 policy_conflict). The
// message is not kept.
type apiError struct {
	Status     int
	Code       string
	RetryAfter time.Duration
}

func (e *apiError) Error() string { return fmt.Sprintf("conjur: HTTP %d %s", e.Status, e.Code) }

// fromStatus classifies an HTTP status; why is an optional explanation.
func fromStatus(op, name string, status int, code, why string) *providers.Error {
	return statusErr(op, name, status, status, code, why)
}

// statusErr reports HTTP status shown, classified as status as.
func statusErr(op, name string, shown, status int, code, why string) *providers.Error {
	msg := fmt.Sprintf("HTTP %d", shown)
	if code != "" && len(code) < 64 {
		msg += " (" + code + ")"
	}
	if why != "" {
		msg += ": " + why
	}
	var sentinel error
	kind := providers.Permanent
	switch {
	case status == 401:
		sentinel = providers.ErrAccessDenied
		if why == "" {
			msg += ": authentication rejected (check CYBERARK_USERNAME and CYBERARK_API_KEY)"
		}
	case status == 403:
		sentinel = providers.ErrAccessDenied
	case status == 404:
		sentinel = providers.ErrNotFound
	case status == 409:
		sentinel, kind = providers.ErrConflict, providers.Retryable
		if why == "" && code == "policy_conflict" {
			msg += ": another client was loading policy into the branch"
		}
	case status == 429:
		sentinel, kind = providers.ErrThrottled, providers.Throttled
	case status == 400 || status == 422:
		sentinel = providers.ErrInvalid
	case status >= 500:
		sentinel, kind = providers.ErrUnavailable, providers.Retryable
	default:
		sentinel = providers.ErrInvalid
	}
	return providers.NewError(Name, op, name, kind, fmt.Errorf("%w: %s", sentinel, msg))
}

func invalid(op, name string, err error) error {
	return providers.NewError(Name, op, name, providers.Permanent, fmt.Errorf("%w: %v", providers.ErrInvalid, err))
}
