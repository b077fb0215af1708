package keyvault

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault/internal/credential"
)

// classify turns an SDK error into a *providers.Error. The message holds
// the HTTP status and Key Vault's error code, never the SDK's own text
// (which quotes the request URL and response body), a token or value.
//
//	401, 403, rejected credentials   -> Permanent, ErrAccessDenied
//	403 SecretDisabled               -> Permanent, ErrSecretDisabled and ErrAccessDenied
//	404                              -> Permanent, ErrNotFound
//	409                              -> Retryable, ErrConflict
//	429                              -> Throttled, ErrThrottled, RetryAfter
//	400 and other 4xx                -> Permanent, ErrInvalid
//	5xx, network, timeouts           -> Retryable, ErrUnavailable
//	token endpoint 5xx, 408, 429, a
//	  transient AADSTS code, or
//	  unreachable (no HTTP response) -> Retryable, ErrUnavailable
//	token endpoint other 4xx
//	  (AADSTS7000215 invalid secret) -> Permanent, ErrAccessDenied
//	no credential source available
//	  (DefaultAzureCredential: IMDS
//	  not answering yet at boot)     -> Retryable, ErrUnavailable
//	TLS certificate errors           -> Permanent, ErrUnavailable
//
// A 401 reaches classify only after the provider retried the call once
// with a new token (see vaultClient).
func classify(op, name string, err error, value []byte) *providers.Error {
	if err == nil {
		return nil
	}
	var pe *providers.Error
	if errors.As(err, &pe) {
		return pe
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		if errors.Is(err, context.Canceled) {
			return ctxErr(op, name, context.Canceled)
		}
		return ctxErr(op, name, context.DeadlineExceeded)
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		st := re.StatusCode
		msg := fmt.Sprintf("HTTP %d", st)
		if code := sanitize(re.ErrorCode, value); code != "" {
			msg += " " + code
		}
		var e *providers.Error
		switch {
		case isDisabled(err):
			e = newErr(op, name, providers.Permanent, fmt.Errorf("%w: %w: HTTP 403 Forbidden SecretDisabled (an operator disabled it; enable it, or write a new version)", ErrSecretDisabled, providers.ErrAccessDenied))
		case st == http.StatusUnauthorized || st == http.StatusForbidden:
			e = newErr(op, name, providers.Permanent, fmt.Errorf("%w: %s", providers.ErrAccessDenied, msg))
		case st == http.StatusNotFound:
			e = newErr(op, name, providers.Permanent, fmt.Errorf("%w: %s", providers.ErrNotFound, msg))
		case st == http.StatusConflict:
			e = newErr(op, name, providers.Retryable, fmt.Errorf("%w: %s", providers.ErrConflict, msg))
		case st == http.StatusTooManyRequests:
			e = newErr(op, name, providers.Throttled, fmt.Errorf("%w: %s", providers.ErrThrottled, msg))
		case st >= 500 || st == http.StatusRequestTimeout:
			e = newErr(op, name, providers.Retryable, fmt.Errorf("%w: %s", providers.ErrUnavailable, msg))
		default:
			e = newErr(op, name, providers.Permanent, fmt.Errorf("%w: %s", providers.ErrInvalid, msg))
		}
		if re.RawResponse != nil {
			e.RetryAfter = retryAfter(re.RawResponse.Header)
		}
		return e
	}
	if f, ok := credential.Classify(err); ok {
		// Shared with the keys sealer, so both treat a token failure alike.
		if f.TLS {
			return newErr(op, name, f.Kind, fmt.Errorf("%w: %s (set %q?)", f.Err, f.Msg, OptionCABundle))
		}
		e := newErr(op, name, f.Kind, fmt.Errorf("%w: %s", f.Err, sanitize(f.Msg, value)))
		e.RetryAfter = f.RetryAfter
		return e
	}
	text := err.Error()
	if strings.Contains(text, "challenge resource") {
		return newErr(op, name, providers.Permanent, fmt.Errorf("%w: the vault's bearer challenge names a resource outside the vault's domain (for a vault behind a custom domain set %q)", providers.ErrAccessDenied, OptionDisableChallengeResourceVerification))
	}
	if strings.Contains(text, "WWW-Authenticate") || strings.Contains(text, "WWW-Authenticate") ||
		strings.Contains(text, "non TLS") || strings.Contains(strings.ToLower(text), "credential") {
		return newErr(op, name, providers.Permanent, fmt.Errorf("%w: authentication: %s", providers.ErrAccessDenied, clip(sanitize(text, value), 300)))
	}
	if isTLS(err) {
		return newErr(op, name, providers.Permanent, fmt.Errorf("%w: TLS: the vault's certificate is not trusted (set %q?)", providers.ErrUnavailable, OptionCABundle))
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return newErr(op, name, providers.Retryable, fmt.Errorf("%w: network: %s", providers.ErrUnavailable, networkSummary(err, value)))
	}
	return newErr(op, name, providers.Retryable, fmt.Errorf("%w: %s", providers.ErrUnavailable, clip(sanitize(text, value), 300)))
}

// retryAfter reads Retry-After (seconds or an HTTP date) and the
// millisecond variants Azure sends.
func retryAfter(h http.Header) time.Duration {
	for _, k := range []string{"retry-after-ms", "x-ms-retry-after-ms"} {
		if v := h.Get(k); v != "" {
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				return time.Duration(n) * time.Millisecond
			}
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

func isTLS(err error) bool {
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	var rec tls.RecordHeaderError
	var tv *tls.CertificateVerificationError
	return errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci) || errors.As(err, &rec) || errors.As(err, &tv)
}

// networkSummary describes a network error without its URL.
func networkSummary(err error, value []byte) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return clip(sanitize(oe.Op+": "+oe.Err.Error(), value), 200)
	}
	return clip(sanitize(err.Error(), value), 200)
}

// sanitize removes URLs, bearer tokens and the value from s.
func sanitize(s string, value []byte) string {
	if len(value) >= 4 {
		s = strings.ReplaceAll(s, string(value), "<redacted>")
	}
	return credential.Scrub(s)
}

// clip collapses white space in s and cuts it to n bytes.
func clip(s string, n int) string { return credential.Clip(s, n) }

func newErr(op, name string, kind providers.Kind, err error) *providers.Error {
	return providers.NewError(Name, op, name, kind, err)
}

func errInvalid(op, name, format string, args ...any) error {
	return newErr(op, name, providers.Permanent, fmt.Errorf("%w: "+format, append([]any{providers.ErrInvalid}, args...)...))
}

func errNotOwned(op, name string) error {
	return newErr(op, name, providers.Permanent, providers.ErrNotOwned)
}

// ctxErr wraps the caller's context error: a cancellation is not
// retryable (providers.IsRetryable), a deadline is.
func ctxErr(op, name string, err error) *providers.Error {
	return newErr(op, name, providers.Retryable, err)
}

// statusOf returns the HTTP status of a classified or SDK error, or 0.
func statusOf(err error) int {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

// ErrSecretDisabled marks a read of a secret whose current version (or the
// version asked for) is disabled: Key Vault answers 403 Forbidden with the
// inner error code SecretDisabled. It is permanent, and comes with
// providers.ErrAccessDenied for the current version, with
// providers.ErrNotFound for an earlier version (retired, see Retire). Put,
// Delete, UpdateTags, Versions and Retire do not fail on a disabled current
// version: they read its tags from the list of versions.
var ErrSecretDisabled = errors.New("the secret's version is disabled")
