package vault

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode"

	"github.com/hashicorp/vault/api"

	"github.com/keyrelay/keyrelay/providers"
)

// Errors specific to this provider. They arrive wrapped in a
// *providers.Error; match them with errors.Is.
var (
	// ErrNoValue: the secret's KV data has no string field named
	// Config.DataKey ("key"), so it was not written by LiteLLM or keyrelay.
	// Permanent.
	ErrNoValue = errors.New("secret data has no string value field")
	// ErrLogin: logging in (AppRole or cert) failed. Its Kind follows the
	// cause: a rejected credential is permanent, an unreachable Vault
	// retryable.
	ErrLogin = errors.New("vault login failed")
	// ErrClosed: the provider was closed.
	ErrClosed = errors.New("provider closed")
)

// casMismatch is the text Vault's KV v2 returns when the cas parameter does
// not match the current version.
const casMismatch = "check-and-set parameter did not match"

// maxErrText bounds the server text kept in an error.
const maxErrText = 300

func newErr(op, name string, kind providers.Kind, err error) *providers.Error {
	return providers.NewError(Name, op, name, kind, err)
}

func errInvalid(op, name, format string, args ...any) error {
	return newErr(op, name, providers.Permanent, fmt.Errorf("%w: "+format, append([]any{providers.ErrInvalid}, args...)...))
}

func errNotFound(op, name string) error {
	return newErr(op, name, providers.Permanent, providers.ErrNotFound)
}

func errNotOwned(op, name string) error {
	return newErr(op, name, providers.Permanent, providers.ErrNotOwned)
}

// classify turns an error from the Vault client into a *providers.Error.
// The message keeps the HTTP status and Vault's own error text (trimmed,
// with any configured credential masked); it never carries the request URL,
// its query, headers, the token or a value. info holds what the transport
// saw of the response (status, Retry-After).
func (p *Provider) classify(ctx context.Context, op, name string, err error, info *callInfo) *providers.Error {
	var pe *providers.Error
	if errors.As(err, &pe) {
		return pe
	}
	if cerr := ctx.Err(); cerr != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || isTransport(err)) {
		// The caller's context ended: Canceled is never retried, a deadline
		// is (providers.IsRetryable).
		return newErr(op, name, providers.Retryable, cerr)
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		return p.classifyStatus(op, name, re.StatusCode, strings.Join(re.Errors, "; "), info)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		// url.Error's text repeats the request URL; keep only the cause.
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		// The per-request timeout (Config.Timeout) fired.
		return newErr(op, name, providers.Retryable, fmt.Errorf("%w: request timed out after %v: %w", providers.ErrUnavailable, p.cfg.Timeout, context.DeadlineExceeded))
	}
	if isTLSConfigError(err) {
		// A certificate Vault presents that we do not trust will not fix
		// itself: an operator must change ca_cert or Vault's certificate.
		return newErr(op, name, providers.Permanent, fmt.Errorf("%w: TLS: %s", providers.ErrAccessDenied, p.scrub(err.Error())))
	}
	return newErr(op, name, providers.Retryable, fmt.Errorf("%w: %s", providers.ErrUnavailable, p.scrub(err.Error())))
}

// classifyStatus maps an HTTP status and Vault's error text to a kind and a
// sentinel.
func (p *Provider) classifyStatus(op, name string, status int, text string, info *callInfo) *providers.Error {
	msg := fmt.Sprintf("HTTP %d", status)
	if t := p.scrub(text); t != "" {
		msg += ": " + t
	}
	var retryAfter time.Duration
	if info != nil {
		retryAfter = info.retryAfter
	}
	var e *providers.Error
	switch {
	case status == 400 && strings.Contains(text, casMismatch):
		e = newErr(op, name, providers.Retryable, fmt.Errorf("%w: another writer changed the secret (%s)", providers.ErrConflict, msg))
	case status == 409:
		e = newErr(op, name, providers.Retryable, fmt.Errorf("%w: %s", providers.ErrConflict, msg))
	case status == 401 || status == 403:
		e = newErr(op, name, providers.Permanent, fmt.Errorf("%w: %s", providers.ErrAccessDenied, msg))
	case status == 404:
		e = newErr(op, name, providers.Permanent, fmt.Errorf("%w: %s", providers.ErrNotFound, msg))
	case status == 429:
		e = newErr(op, name, providers.Throttled, fmt.Errorf("%w: %s", providers.ErrThrottled, msg))
		e.RetryAfter = retryAfter
	case status == 412 || status == 408 || (status >= 500 && status != 501 && status != 505):
		// 412: a performance standby has not caught up; 503: sealed,
		// standby or overloaded; other 5xx: transient server trouble.
		e = newErr(op, name, providers.Retryable, fmt.Errorf("%w: %s", providers.ErrUnavailable, msg))
		e.RetryAfter = retryAfter
	default:
		// 400 (validation), 405 (not a KV v2 mount), 413 (too large), 501...
		e = newErr(op, name, providers.Permanent, fmt.Errorf("%w: %s", providers.ErrInvalid, msg))
	}
	return e
}

// Patterns scrub removes from server text: URLs (with their query), bare
// query strings, and anything shaped like a Vault token (hvs., hvb., hvr.).
var (
	urlPattern   = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>]*`)
	queryPattern = regexp.MustCompile(`\?[^\s"'<>]*`)
	tokenPattern = regexp.MustCompile(`\bhv[sbr]\.[A-Za-z0-9_\-.]+`)
)

// scrub trims server text to one line of at most maxErrText bytes, masks
// every credential the provider holds and anything token-shaped, and drops
// URLs and query strings (a proxy may echo the request).
func (p *Provider) scrub(s string) string {
	for _, secret := range p.secrets() {
		if len(secret) >= 4 {
			s = strings.ReplaceAll(s, secret, "[redacted]")
		}
	}
	s = urlPattern.ReplaceAllString(s, "[url]")
	s = queryPattern.ReplaceAllString(s, "")
	s = tokenPattern.ReplaceAllString(s, "[redacted]")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > maxErrText {
		cut := maxErrText
		for cut > 0 && !isRuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// secrets lists the credentials that must never appear in an error.
func (p *Provider) secrets() []string {
	out := []string{p.cfg.Token, p.cfg.AppRoleSecretID}
	if p.auth != nil {
		out = append(out, p.auth.current())
	}
	return out
}

func isTransport(err error) bool {
	var ue *url.Error
	var ne net.Error
	return errors.As(err, &ue) || errors.As(err, &ne)
}

func isTLSConfigError(err error) bool {
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	var cv *tls.CertificateVerificationError
	return errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci) || errors.As(err, &cv)
}
