package kms

import (
	"context"
	"errors"
	"fmt"
	"net"

	smithy "github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/aws/awsconfig"
	"github.com/keyrelay/keyrelay/seal"
)

// Provider is the name errors carry: LiteLLM's key_management_system name.
const Provider = "aws_kms"

// Errors callers branch on with errors.Is, besides the providers sentinels
// (ErrAccessDenied, ErrInvalid, ErrThrottled, ErrUnavailable) and, from
// Sealer.Open, events.ErrOpenFailed / events.ErrUnknownKeyID /
// events.ErrUnsupportedAlg.
var (
	// ErrInvalidCiphertext: KMS refused to decrypt the ciphertext (or the
	// wrapped data key): tampered, encrypted under another key, or under
	// another encryption context. KMS's InvalidCiphertextException and
	// IncorrectKeyException. Permanent.
	ErrInvalidCiphertext = errors.New("KMS cannot decrypt this ciphertext (tampered, another key or another encryption context)")
	// ErrKeyUnusable: the KMS key does not exist, is disabled, pending
	// deletion or import, or not a symmetric encryption key. Permanent
	// until someone fixes the key.
	ErrKeyUnusable = errors.New("KMS key not found, disabled, or not usable for this operation")
	// ErrMalformedValue: an aws_kms value or environment variable is not
	// base64 (as Python's base64.b64decode reads it). Permanent.
	ErrMalformedValue = errors.New("not a base64 KMS ciphertext")
	// ErrNoKey: Seal was called on a Sealer configured without a KMS key.
	ErrNoKey = errors.New("no KMS key configured for sealing (key_id)")
	// ErrClockSkew marks a request KMS refused for its signing time: more
	// than 15 minutes from AWS's clock (InvalidSignatureException
	// "Signature expired" or "Signature not yet current",
	// RequestTimeTooSkewed, or a signature error the SDK's retryer
	// attributed to clock skew). The SDK corrects its signing time from
	// the refusal's Date header, so such errors are retryable; they also
	// match providers.ErrAccessDenied.
	ErrClockSkew = errors.New("request signing time too far from AWS's clock (check the host's clock)")
	// ErrQuotaExceeded marks a LimitExceededException: KMS refused the
	// request for one of its quotas on what an account holds (keys,
	// aliases, grants per key, key policy size) or a length constraint,
	// not for a request rate (that is ThrottlingException). Retrying soon
	// does not help; the error also matches providers.ErrInvalid and is
	// permanent.
	ErrQuotaExceeded = errors.New("a KMS quota would be exceeded (not a request rate: retrying does not help)")
)

// limitExceeded is the error code of ErrQuotaExceeded.
const limitExceeded = awsconfig.LimitExceeded

// callError is the sanitized cause inside a *providers.Error: the KMS error
// code, the HTTP status and, for a few codes whose messages are known to
// name only keys and principals, KMS's message. It never holds request
// parameters, request ids, ciphertexts or key material.
type callError struct {
	code   string
	status int
	msg    string
	causes []error
}

func (e *callError) Error() string   { return e.msg }
func (e *callError) Unwrap() []error { return e.causes }

// Code returns the KMS error code (such as "InvalidCiphertextException")
// carried by an error from this package, or "".
func Code(err error) string {
	var ce *callError
	if errors.As(err, &ce) {
		return ce.code
	}
	return ""
}

// HTTPStatus returns the HTTP status of the KMS response behind err, or 0.
func HTTPStatus(err error) int {
	var ce *callError
	if errors.As(err, &ce) {
		return ce.status
	}
	return 0
}

// Error codes by class. Codes not listed fall back on the HTTP status:
// 429 throttled, 5xx retryable, other 4xx permanent.
var (
	// LimitExceededException is not among them, although the SDK counts
	// it as throttling: in KMS it is a quota (see classify).
	throttleCodes = codes("ThrottlingException", "Throttling", "ThrottledException",
		"TooManyRequestsException", "RequestLimitExceeded", "RequestThrottled", "RequestThrottledException",
		"SlowDown", "PriorRequestNotComplete", "EC2ThrottledException", "ProvisionedThroughputExceededException")
	transientCodes = codes("KMSInternalException", "DependencyTimeoutException", "KeyUnavailableException",
		"InternalFailure", "InternalFailureException", "InternalError", "InternalServerError", "ServiceUnavailable",
		"ServiceUnavailableException", "RequestTimeout", "RequestTimeoutException", "ExpiredTokenException",
		"ExpiredToken", "RequestExpired", "IDPCommunicationError", "XksProxyUriUnreachableException",
		"XksProxyInvalidResponseException", "CustomKeyStoreInvalidStateException")
	ciphertextCodes = codes("InvalidCiphertextException", "IncorrectKeyException")
	accessCodes     = codes("AccessDeniedException", "AccessDenied", "UnrecognizedClientException",
		"InvalidSignatureException", "IncompleteSignature", "MissingAuthenticationToken", "InvalidClientTokenId",
		"NotAuthorized", "NotAuthorizedException", "SignatureDoesNotMatch", "KMSInvalidSignatureException")
	keyCodes = codes("NotFoundException", "DisabledException", "KMSInvalidStateException", "InvalidKeyUsageException",
		"InvalidArnException", "UnsupportedOperationException", "XksKeyNotFoundException", "XksKeyInvalidConfigurationException")
	// Codes whose messages name keys, regions and principals but never a
	// request parameter: their message is kept (sanitized) for operators.
	keepMessage = codes("AccessDeniedException", "AccessDenied", "NotFoundException", "DisabledException",
		"KMSInvalidStateException", "InvalidKeyUsageException", "KeyUnavailableException", "UnsupportedOperationException")
)

func codes(cs ...string) map[string]bool {
	m := make(map[string]bool, len(cs))
	for _, c := range cs {
		m[c] = true
	}
	return m
}

// wrapErr classifies and sanitizes an SDK error of op (GenerateDataKey,
// Decrypt) on the KMS key name. extra sentinels are added to the chain for
// the given codes class (Sealer.Open adds events.ErrOpenFailed to invalid
// ciphertexts).
func wrapErr(op, name string, err error, onCiphertext ...error) error {
	if err == nil {
		return nil
	}
	kind, ce := classify(err)
	if ciphertextCodes[ce.code] {
		ce.causes = append(ce.causes, onCiphertext...)
	}
	return providers.NewError(Provider, op, name, kind, ce)
}

func classify(err error) (providers.Kind, *callError) {
	ce := &callError{}
	switch {
	case errors.Is(err, context.Canceled):
		ce.msg, ce.causes = "canceled", []error{context.Canceled}
		return providers.Retryable, ce
	case errors.Is(err, context.DeadlineExceeded):
		ce.msg, ce.causes = "timed out", []error{context.DeadlineExceeded, providers.ErrUnavailable}
		return providers.Retryable, ce
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		ce.status = re.Response.StatusCode
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		ce.code = ae.ErrorCode()
		ce.msg = ce.code
		if ce.status != 0 {
			ce.msg += fmt.Sprintf(" (HTTP %d)", ce.status)
		}
		if keepMessage[ce.code] {
			if m := sanitizeMessage(ae.ErrorMessage()); m != "" {
				ce.msg += ": " + m
			}
		}
		switch {
		case ce.code == limitExceeded:
			// KMS answers request rates with ThrottlingException;
			// LimitExceededException is its quota error (CreateKey,
			// CreateAlias, CreateGrant, PutKeyPolicy and the like).
			// None of the operations keyrelay calls (GenerateDataKey,
			// Encrypt, Decrypt) lists it or adds anything a quota
			// counts, so from them it is a quota or length constraint
			// a person has to raise or clear: permanent for all three,
			// dead-lettered with a reason rather than retried until the
			// event's budget runs out.
			ce.causes = []error{ErrQuotaExceeded, providers.ErrInvalid}
			return providers.Permanent, ce
		case throttleCodes[ce.code]:
			ce.causes = []error{providers.ErrThrottled}
			return providers.Throttled, ce
		case transientCodes[ce.code]:
			ce.causes = []error{providers.ErrUnavailable}
			return providers.Retryable, ce
		case ciphertextCodes[ce.code]:
			ce.causes = []error{ErrInvalidCiphertext, providers.ErrInvalid}
			return providers.Permanent, ce
		case awsconfig.IsClockSkew(ce.code, ae.ErrorMessage(), err.Error()):
			ce.msg += ": clock skew (check the host's clock)"
			ce.causes = []error{ErrClockSkew, providers.ErrAccessDenied}
			return providers.Retryable, ce
		case accessCodes[ce.code]:
			ce.causes = []error{providers.ErrAccessDenied}
			return providers.Permanent, ce
		case keyCodes[ce.code]:
			ce.causes = []error{ErrKeyUnusable, providers.ErrInvalid}
			return providers.Permanent, ce
		}
		return byStatus(ce)
	}
	if ce.status != 0 {
		ce.msg = fmt.Sprintf("HTTP %d", ce.status)
		return byStatus(ce)
	}
	var se *smithyhttp.RequestSendError
	var ne net.Error
	if errors.As(err, &se) || errors.As(err, &ne) {
		ce.msg, ce.causes = "network error", []error{providers.ErrUnavailable}
		if ne != nil {
			ce.msg += ": " + sanitizeMessage(ne.Error())
		}
		return providers.Retryable, ce
	}
	// Anything else (credentials that cannot be loaded, a request the SDK
	// refused to build) needs a person. Its text comes from the SDK, not
	// from KMS; keep only its first line, sanitized.
	ce.msg, ce.causes = "request failed: "+sanitizeMessage(firstLine(err.Error())), []error{providers.ErrInvalid}
	return providers.Permanent, ce
}

func byStatus(ce *callError) (providers.Kind, *callError) {
	switch {
	case ce.status == 429:
		ce.causes = []error{providers.ErrThrottled}
		return providers.Throttled, ce
	case ce.status >= 500:
		ce.causes = []error{providers.ErrUnavailable}
		return providers.Retryable, ce
	}
	ce.causes = []error{providers.ErrInvalid}
	return providers.Permanent, ce
}

func firstLine(s string) string { return seal.FirstLine(s) }

// sanitizeMessage is seal.Sanitize with "/" counted as base64 (KMS
// messages name ARNs, which survive as short runs).
func sanitizeMessage(s string) string { return seal.Sanitize(s, false) }

func isAlnumByte(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}
