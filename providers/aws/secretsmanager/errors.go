package secretsmanager

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/aws/awsconfig"
)

// Retry hints.
const (
	// DefaultThrottleRetryAfter is the RetryAfter of a throttling error
	// that carries no hint of its own (X-Amz-Retry-After, Retry-After).
	DefaultThrottleRetryAfter = time.Second
	// MaxRetryAfter caps the hints taken from responses.
	MaxRetryAfter = time.Minute
	// VersionQuotaRetryAfter is the RetryAfter of a write refused for the
	// secret's versions quota (LimitExceededException from PutSecretValue
	// or UpdateSecret). AWS gives no hint, and makes room only as the
	// secret's deprecated versions turn a day old: a retry within seconds
	// would be refused again.
	VersionQuotaRetryAfter = time.Minute
)

// APIError is a Secrets Manager (or STS) failure reduced to what is safe to
// log: the operation, the AWS error code, the HTTP status and AWS's
// message with quoted text, access key ids and the request's value
// removed. Request ids and the SDK's own wrapping are dropped. It arrives
// inside a *providers.Error and unwraps to the providers sentinel that
// classifies it (and to context.Canceled or context.DeadlineExceeded when
// the caller's context ended).
type APIError struct {
	// Operation is the AWS operation, e.g. "PutSecretValue".
	Operation string
	// Code is the AWS error code (the response's __type), "" when no
	// response arrived.
	Code string
	// StatusCode is the HTTP status, 0 when no response arrived.
	StatusCode int
	// Message is AWS's message, sanitized and at most 200 characters, or a
	// description of a transport failure.
	Message string

	causes []error
}

func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString(e.Operation)
	if e.Code != "" {
		b.WriteString(": " + e.Code)
	}
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, " (HTTP %d)", e.StatusCode)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	return b.String()
}

// Unwrap returns the providers sentinel and any context error.
func (e *APIError) Unwrap() []error { return e.causes }

var (
	accessDeniedCodes = codes("AccessDeniedException", "AccessDenied", "UnrecognizedClientException", "InvalidClientTokenId",
		"InvalidSignatureException", "SignatureDoesNotMatch", "MissingAuthenticationToken", "MissingAuthenticationTokenException",
		"IncompleteSignature", "IncompleteSignatureException", "NotAuthorized", "AuthFailure", "OptInRequired",
		"DecryptionFailure", "EncryptionFailure", "InvalidIdentityToken", "IDPRejectedClaim", "RegionDisabledException")
	expiredCodes = codes("ExpiredTokenException", "ExpiredToken", "RequestExpired", "IDPCommunicationError")
	invalidCodes = codes("InvalidParameterException", "InvalidRequestException", "ValidationException",
		"MalformedPolicyDocumentException", "PreconditionNotMetException", "PublicPolicyException",
		"InvalidNextTokenException", "SerializationException", "UnknownOperationException", "InvalidAction",
		"InvalidParameterValue", "MissingParameter", "MalformedPolicyDocument", "PackedPolicyTooLarge")
	unavailableCodes = codes("InternalServiceError", "InternalFailure", "InternalServerError", "ServiceUnavailable",
		"ServiceUnavailableException", "RequestTimeout", "RequestTimeoutException")
)

func codes(cs ...string) map[string]bool {
	m := make(map[string]bool, len(cs))
	for _, c := range cs {
		m[c] = true
	}
	return m
}

// classify turns an SDK error from awsOp into a *providers.Error. value is
// the request's secret value (or nil): a message quoting it is withheld.
func classify(op, name, awsOp string, err error, value []byte) *providers.Error {
	ae := &APIError{Operation: awsOp}
	kind, sentinel := providers.Retryable, providers.ErrUnavailable
	var retryAfter time.Duration

	var api smithy.APIError
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		ae.StatusCode = re.HTTPStatusCode()
	}
	credentials := strings.Contains(err.Error(), "get identity: ")
	switch {
	case errors.Is(err, context.Canceled):
		ae.Message = "canceled"
		ae.causes = []error{context.Canceled}
		return providers.NewError(Name, op, name, providers.Retryable, ae)
	case errors.As(err, &api):
		ae.Code = api.ErrorCode()
		ae.Message = sanitizeMessage(api.ErrorMessage(), value)
		if credentials {
			ae.Message = "credentials: " + ae.Message
		}
		switch c := ae.Code; {
		case c == limitExceeded:
			// Not a rate: checked before the throttle codes, which
			// list it (the SDK's DefaultThrottleErrorCodes).
			kind, retryAfter, sentinel = quotaKind(awsOp)
			ae.causes = append(ae.causes, ErrQuotaExceeded)
		case isThrottle(c) || ae.StatusCode == http.StatusTooManyRequests:
			kind, sentinel = providers.Throttled, providers.ErrThrottled
			retryAfter = retryHint(re)
		case c == "ResourceNotFoundException":
			kind, sentinel = providers.Permanent, providers.ErrNotFound
		case c == "ResourceExistsException":
			kind, sentinel = providers.Retryable, providers.ErrConflict
		case awsconfig.IsClockSkew(c, api.ErrorMessage(), err.Error()):
			// The host's clock is over 15 minutes from AWS's. The SDK
			// corrects its signing time from the refusal's Date header
			// and keeps the correction for the client's later calls, so
			// a retry signs anew; so does a corrected host clock.
			kind, sentinel = providers.Retryable, providers.ErrAccessDenied
			ae.causes = append(ae.causes, ErrClockSkew)
			ae.Message = "clock skew (check the host's clock): " + ae.Message
		case expiredCodes[c]:
			// The SDK refreshes expiring credentials; a retry signs anew.
			// Checked before the 403 below: STS and the query services
			// answer an expired token with HTTP 403.
			kind, sentinel = providers.Retryable, providers.ErrAccessDenied
		case accessDeniedCodes[c] || ae.StatusCode == http.StatusForbidden || ae.StatusCode == http.StatusUnauthorized:
			kind, sentinel = providers.Permanent, providers.ErrAccessDenied
		case invalidCodes[c]:
			kind, sentinel = providers.Permanent, providers.ErrInvalid
		case unavailableCodes[c] || ae.StatusCode >= 500:
			kind, sentinel = providers.Retryable, providers.ErrUnavailable
		case ae.StatusCode >= 400:
			kind, sentinel = providers.Permanent, providers.ErrInvalid
		}
	case errors.Is(err, context.DeadlineExceeded):
		ae.Message = "timed out"
		ae.causes = []error{context.DeadlineExceeded}
	case credentials && !isNetwork(err):
		// No credential source worked (none configured, a bad profile, a
		// missing token file): configuration, not worth retrying.
		kind, sentinel = providers.Permanent, providers.ErrAccessDenied
		ae.Message = "credentials could not be obtained; check the aws_* settings and the environment"
	case isTLS(err):
		// A certificate the client does not trust is configuration
		// (ca_bundle, endpoint), not a passing failure.
		kind, sentinel = providers.Permanent, providers.ErrInvalid
		ae.Message = "TLS: the server's certificate is not trusted for this endpoint; check ca_bundle and endpoint"
	case isInvalidParams(err):
		kind, sentinel = providers.Permanent, providers.ErrInvalid
		ae.Message = "request rejected by the SDK's parameter validation"
	case isNetwork(err):
		ae.Message = "network: " + networkSummary(err)
	case ae.StatusCode >= 400 && ae.StatusCode < 500 && ae.StatusCode != http.StatusTooManyRequests:
		kind, sentinel = providers.Permanent, providers.ErrInvalid
		ae.Message = "unexpected response"
	case ae.StatusCode == http.StatusTooManyRequests:
		kind, sentinel = providers.Throttled, providers.ErrThrottled
		retryAfter = retryHint(re)
	default:
		// Undecodable answers, proxies in the way: worth another try, and
		// the worker bounds the tries.
		ae.Message = "unexpected failure"
	}
	ae.causes = append([]error{sentinel}, ae.causes...)
	pe := providers.NewError(Name, op, name, kind, ae)
	pe.RetryAfter = retryAfter
	return pe
}

// ErrClockSkew marks a request AWS refused for its signing time: more than
// 15 minutes from AWS's clock (InvalidSignatureException "Signature
// expired" or "Signature not yet current", RequestTimeTooSkewed, or a
// signature error the SDK's retryer attributed to clock skew). Such errors
// also match providers.ErrAccessDenied and are retryable.
var ErrClockSkew = errors.New("request signing time too far from AWS's clock")

// ErrQuotaExceeded marks a LimitExceededException: the request would
// take the secret or the account over one of Secrets Manager's quotas on
// what it stores (versions of a secret, secrets per Region, staging
// labels), not over a request rate (ThrottlingException). Retrying soon
// does not help. Such errors also match providers.ErrSecretLimit
// (Retryable) or providers.ErrInvalid (Permanent), see quotaKind.
var ErrQuotaExceeded = errors.New("a Secrets Manager quota would be exceeded")

// limitExceeded is the error code of ErrQuotaExceeded.
const limitExceeded = awsconfig.LimitExceeded

// quotaKind classifies a LimitExceededException from awsOp. AWS names no
// quota in it, but the operation tells them apart:
//
//   - PutSecretValue and UpdateSecret add a version: the secret's versions
//     quota. AWS removes unlabelled versions beyond 100 once they are a
//     day old (every version but AWSCURRENT's and AWSPREVIOUS's, unless
//     someone labelled more), so this clears by itself within a day of
//     the burst of writes that caused it. Retryable, with
//     VersionQuotaRetryAfter: the event's retry budget (worker.retry_for)
//     bounds the retries, and it is dead-lettered if the quota outlasts
//     it.
//   - Anything else, CreateSecret above all (secrets per Region), waits
//     for someone to delete secrets or labels: Permanent.
func quotaKind(awsOp string) (kind providers.Kind, retryAfter time.Duration, sentinel error) {
	switch awsOp {
	case "PutSecretValue", "UpdateSecret":
		// One secret's versions quota: the service is up (the breaker
		// must not count it), the secret frees up as versions age out.
		return providers.Retryable, VersionQuotaRetryAfter, providers.ErrSecretLimit
	}
	return providers.Permanent, 0, providers.ErrInvalid
}

func isThrottle(code string) bool {
	_, ok := retry.DefaultThrottleErrorCodes[code]
	return ok
}

// retryHint reads the service's retry hint from the last response:
// X-Amz-Retry-After (milliseconds, what the SDK's retryer honours) or
// Retry-After (seconds or an HTTP date); DefaultThrottleRetryAfter without
// one; capped at MaxRetryAfter.
func retryHint(re *smithyhttp.ResponseError) time.Duration {
	d := DefaultThrottleRetryAfter
	if re != nil && re.Response != nil {
		h := re.Response.Header
		if v := h.Get("X-Amz-Retry-After"); v != "" {
			if ms, err := strconv.ParseInt(v, 10, 64); err == nil && ms >= 0 {
				d = time.Duration(ms) * time.Millisecond
			}
		} else if v := h.Get("Retry-After"); v != "" {
			if s, err := strconv.ParseInt(v, 10, 64); err == nil && s >= 0 {
				d = time.Duration(s) * time.Second
			} else if t, err := http.ParseTime(v); err == nil {
				d = time.Until(t)
			}
		}
	}
	return min(max(d, 0), MaxRetryAfter)
}

func isTLS(err error) bool {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	return errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci)
}

func isInvalidParams(err error) bool {
	var ip smithy.InvalidParamsError
	return errors.As(err, &ip)
}

func isNetwork(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "connection reset") || strings.Contains(s, "connection refused") ||
		strings.Contains(s, "broken pipe") || strings.Contains(s, "use of closed network connection")
}

// networkSummary names a transport failure without the SDK's wrapping.
func networkSummary(err error) string {
	var op *net.OpError
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.As(err, &op):
		return clip(op.Error(), 200)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by the server"
	case strings.Contains(err.Error(), "connection reset"):
		return "connection reset"
	case strings.Contains(err.Error(), "connection refused"):
		return "connection refused"
	}
	return "transport error"
}

var (
	// quotedRE matches quoted text that opens after a space or punctuation,
	// so apostrophes inside words ("can't") are left alone.
	quotedRE = regexp.MustCompile("(^|[\\s(\\[{=:,])(?:'[^']*'|\"[^\"]*\"|`[^`]*`)")
	keyIDRE  = regexp.MustCompile(`\b(AKIA|ASIA|AIDA|AROA|AGPA|ANPA|ANVA|APKA)[A-Z0-9]{12,}\b`)
)

// sanitizeMessage makes an AWS message safe to log: a message quoting the
// request's value is withheld, quoted text (where validation messages
// echo input) and access key ids are replaced, control characters removed,
// and the rest cut to 200 characters.
func sanitizeMessage(msg string, value []byte) string {
	if len(value) >= 4 && (strings.Contains(msg, string(value)) || strings.Contains(msg, base64.StdEncoding.EncodeToString(value))) {
		return "(message withheld: it quoted the request)"
	}
	msg = quotedRE.ReplaceAllString(msg, "${1}'<redacted>'")
	msg = keyIDRE.ReplaceAllString(msg, "<access-key-id>")
	msg = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, msg)
	return clip(strings.TrimSpace(msg), 200)
}

func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "..."
}

// Errors made by the provider itself.

func newErr(op, name string, kind providers.Kind, err error) *providers.Error {
	return providers.NewError(Name, op, name, kind, err)
}

func errInvalid(op, name, format string, args ...any) error {
	return newErr(op, name, providers.Permanent, fmt.Errorf("%w: "+format, append([]any{providers.ErrInvalid}, args...)...))
}

func errNotFound(op, name, why string) error {
	if why == "" {
		return newErr(op, name, providers.Permanent, providers.ErrNotFound)
	}
	return newErr(op, name, providers.Permanent, fmt.Errorf("%w: %s", providers.ErrNotFound, why))
}

func errNotOwned(op, name string) error {
	return newErr(op, name, providers.Permanent, providers.ErrNotOwned)
}

// ctxErr wraps the caller's context error: a cancellation is not
// retryable (providers.IsRetryable), a deadline is.
func ctxErr(op, name string, err error) error {
	return newErr(op, name, providers.Retryable, err)
}

// ErrClosed is returned (wrapped, permanent) by a closed provider.
var ErrClosed = errors.New("provider closed")
