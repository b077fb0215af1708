// Package credential classifies the errors of azidentity's credentials
// for the Key Vault secrets provider and the Key Vault keys sealer, so the
// two retry the same token failures and give up on the same ones.
package credential

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/keyrelay/keyrelay/providers"
)

// Failure is a classified credential error. Msg names the failure without
// the SDK's text beyond a sanitized transport error: no URL, response
// body, token or secret.
type Failure struct {
	// Kind is providers.Retryable or providers.Permanent.
	Kind providers.Kind
	// Err is the sentinel: providers.ErrUnavailable or
	// providers.ErrAccessDenied.
	Err error
	// Msg describes the failure, e.g. "authentication failed (token
	// endpoint HTTP 401 AADSTS7000215)".
	Msg string
	// RetryAfter is the token endpoint's Retry-After (0: none).
	RetryAfter time.Duration
	// TLS: the token endpoint's certificate is not trusted (Kind
	// Permanent, Err ErrUnavailable); the caller names its CA option.
	TLS bool
}

// transientCodes are Entra ID error codes that say "try again" whatever
// the HTTP status they come with.
var transientCodes = map[int]bool{
	90006: true, // ExternalServerRetryableError
	90024: true, // RequestBudgetExceededError
	90033: true, // MsodsServiceUnavailable
}

// unavailableType is azidentity's unexported credentialUnavailableError,
// which every credential returns when it cannot even try (no environment
// variables, no managed identity endpoint answering, no Azure CLI) and
// DefaultAzureCredential returns when all of its sources did. azidentity
// exports only its constructor.
var unavailableType = reflect.TypeOf(azidentity.NewCredentialUnavailableError(""))

// imdsTimedOut is azidentity's message for a managed identity endpoint
// that did not answer DefaultAzureCredential's probe in time.
const imdsTimedOut = "managed identity timed out"

// Classify reports whether err is a credential's failure and, if so, how
// to treat it:
//
//	no credential source available yet   -> Retryable, ErrUnavailable
//	token endpoint unreachable           -> Retryable, ErrUnavailable
//	token endpoint TLS not trusted       -> Permanent, ErrUnavailable (TLS)
//	token endpoint 5xx, 408, 429, or a
//	  transient Entra ID code (AADSTS90033...) -> Retryable, ErrUnavailable
//	token endpoint other 4xx (invalid client
//	  secret AADSTS7000215, unknown app or
//	  tenant, expired secret...)         -> Permanent, ErrAccessDenied
//
// A credential that is unavailable (DefaultAzureCredential with every
// source unavailable) is retried: at boot the managed identity endpoint
// (IMDS, or a pod identity agent) may not answer yet, and azidentity does
// not say which sources are missing for good. A credential that was
// refused is permanent: the token endpoint will refuse it until an
// operator fixes the configuration.
func Classify(err error) (Failure, bool) {
	var afe *azidentity.AuthenticationFailedError
	if errors.As(err, &afe) {
		return authFailed(afe), true
	}
	target := reflect.New(unavailableType)
	if errors.As(err, target.Interface()) {
		text := target.Elem().Interface().(error).Error()
		if strings.Contains(text, imdsTimedOut) {
			return Failure{Kind: providers.Retryable, Err: providers.ErrUnavailable,
				Msg: "credential: the managed identity endpoint did not answer in time"}, true
		}
		return Failure{Kind: providers.Retryable, Err: providers.ErrUnavailable,
			Msg: "credential: no credential source is available (yet): " + Clip(Scrub(text), 300)}, true
	}
	return Failure{}, false
}

func authFailed(afe *azidentity.AuthenticationFailedError) Failure {
	if afe.RawResponse == nil {
		// No HTTP response from the token endpoint: azidentity keeps only
		// the text of the transport error (DNS, refused or reset
		// connection, timeout). A certificate the system does not trust
		// is configuration; anything else is an outage.
		text := afe.Error()
		if strings.Contains(text, "x509:") || strings.Contains(text, "tls:") {
			return Failure{Kind: providers.Permanent, Err: providers.ErrUnavailable, TLS: true,
				Msg: "credential: TLS: the token endpoint's certificate is not trusted"}
		}
		return Failure{Kind: providers.Retryable, Err: providers.ErrUnavailable,
			Msg: "credential: token endpoint unreachable: " + Clip(Scrub(text), 200)}
	}
	st := afe.RawResponse.StatusCode
	codes := entraCodes(afe.RawResponse)
	msg := fmt.Sprintf("authentication failed (token endpoint HTTP %d", st)
	transient := false
	for _, c := range codes {
		msg += " AADSTS" + strconv.Itoa(c)
		transient = transient || transientCodes[c]
	}
	msg = "credential: " + msg + ")"
	if st >= 500 || st == http.StatusTooManyRequests || st == http.StatusRequestTimeout || transient {
		return Failure{Kind: providers.Retryable, Err: providers.ErrUnavailable, Msg: msg, RetryAfter: retryAfter(afe.RawResponse.Header)}
	}
	return Failure{Kind: providers.Permanent, Err: providers.ErrAccessDenied, Msg: msg}
}

// entraCodes returns the error_codes of an Entra ID error response (at
// most three), or nil. runtime.Payload keeps the body readable for
// azidentity's own Error.
func entraCodes(resp *http.Response) []int {
	body, err := runtime.Payload(resp)
	if err != nil || len(body) == 0 {
		return nil
	}
	var e struct {
		Codes []int `json:"error_codes"`
	}
	if json.Unmarshal(body, &e) != nil {
		return nil
	}
	if len(e.Codes) > 3 {
		e.Codes = e.Codes[:3]
	}
	return e.Codes
}

// retryAfter reads Retry-After (seconds or an HTTP date) and the
// millisecond variants Azure sends.
func retryAfter(h http.Header) time.Duration {
	for _, k := range []string{"retry-after-ms", "x-ms-retry-after-ms"} {
		if n, err := strconv.Atoi(h.Get(k)); err == nil && n > 0 {
			return time.Duration(n) * time.Millisecond
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

var (
	urlRE    = regexp.MustCompile(`(?i)https?://[^\s"']+`)
	bearerRE = regexp.MustCompile(`(?i)bearer\s+[A-Za-z0-9\-._~+/]+=*`)
)

// Scrub removes URLs and bearer tokens from s.
func Scrub(s string) string {
	s = bearerRE.ReplaceAllString(s, "Bearer <redacted>")
	return urlRE.ReplaceAllString(s, "<url>")
}

// Clip collapses white space in s and cuts it to n bytes.
func Clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= n {
		return s
	}
	r := []rune(s[:n])
	return string(r[:len(r)-1]) + "..."
}
