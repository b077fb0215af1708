package kms

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/seal"
)

// Provider is the name errors carry: LiteLLM's key_management_system name.
const Provider = "google_kms"

// Errors callers branch on with errors.Is, besides the providers sentinels
// (ErrAccessDenied, ErrInvalid, ErrThrottled, ErrUnavailable) and, from
// Sealer.Open, events.ErrOpenFailed / events.ErrUnknownKeyID /
// events.ErrUnsupportedAlg.
var (
	// ErrInvalidCiphertext: Cloud KMS refused to decrypt (INVALID_ARGUMENT
	// on Decrypt, or INTERNAL/UNKNOWN whose message says the decryption
	// or its authentication failed): the ciphertext is tampered, belongs
	// to another key, or the additional authenticated data differs.
	// Permanent.
	ErrInvalidCiphertext = errors.New("Cloud KMS cannot decrypt this ciphertext (tampered, another key or other additional data)")
	// ErrKeyUnusable: the key does not exist (NOT_FOUND) or its version is
	// disabled or destroyed (FAILED_PRECONDITION). Permanent until someone
	// fixes the key.
	ErrKeyUnusable = errors.New("Cloud KMS key not found, disabled, or not usable for this operation")
	// ErrMalformedValue: a value is not base64 the way LiteLLM requires.
	// Permanent.
	ErrMalformedValue = errors.New("not a base64 Cloud KMS ciphertext")
	// ErrChecksum: a CRC32C integrity check of a request or response
	// failed (data corrupted in transit). Retryable.
	ErrChecksum = errors.New("Cloud KMS CRC32C integrity check failed")
	// ErrNoKey: Seal was called on a Sealer configured without a key, or
	// Decrypter without GOOGLE_KMS_RESOURCE_NAME.
	ErrNoKey = errors.New("no Cloud KMS key configured (key_name / GOOGLE_KMS_RESOURCE_NAME)")
)

// callError is the sanitized cause inside a *providers.Error: the gRPC
// code and, for codes whose messages name only resources and principals,
// Cloud KMS's message. It never holds ciphertexts, plaintexts or keys.
type callError struct {
	code   codes.Code
	msg    string
	causes []error
}

func (e *callError) Error() string   { return e.msg }
func (e *callError) Unwrap() []error { return e.causes }

// Code returns the gRPC status code behind an error from this package, or
// codes.OK.
func Code(err error) codes.Code {
	var ce *callError
	if errors.As(err, &ce) {
		return ce.code
	}
	return codes.OK
}

func permanent(op, name, msg string, causes ...error) error {
	return providers.NewError(Provider, op, name, providers.Permanent, &callError{msg: msg, causes: causes})
}

// wrapErr classifies and sanitizes a client error of op (Encrypt, Decrypt)
// on the key name. onCiphertext are added to the chain when Decrypt
// refused the ciphertext (Sealer.Open adds events.ErrOpenFailed).
func wrapErr(op, name string, err error, onCiphertext ...error) error {
	if err == nil {
		return nil
	}
	kind, ce := classify(op, err)
	if errors.Is(ce, ErrInvalidCiphertext) {
		ce.causes = append(ce.causes, onCiphertext...)
	}
	return providers.NewError(Provider, op, name, kind, ce)
}

func classify(op string, err error) (providers.Kind, *callError) {
	ce := &callError{}
	st, isStatus := status.FromError(err)
	switch {
	case errors.Is(err, context.Canceled) && (!isStatus || st.Code() == codes.Canceled):
		ce.code, ce.msg, ce.causes = codes.Canceled, "canceled", []error{context.Canceled}
		return providers.Retryable, ce
	case errors.Is(err, context.DeadlineExceeded) && (!isStatus || st.Code() == codes.DeadlineExceeded):
		ce.code, ce.msg, ce.causes = codes.DeadlineExceeded, "timed out", []error{context.DeadlineExceeded, providers.ErrUnavailable}
		return providers.Retryable, ce
	case !isStatus:
		// Not from the server (credentials that cannot be loaded, a dial
		// that cannot start): keep only its first line, sanitized.
		ce.code, ce.msg, ce.causes = codes.Unknown, "request failed: "+sanitizeMessage(firstLine(err.Error())), []error{providers.ErrUnavailable}
		return providers.Retryable, ce
	}
	ce.code = st.Code()
	ce.msg = st.Code().String()
	switch st.Code() {
	case codes.NotFound, codes.PermissionDenied, codes.FailedPrecondition, codes.Unauthenticated:
		if m := sanitizeMessage(st.Message()); m != "" {
			ce.msg += ": " + m
		}
	}
	if op == "Decrypt" && (st.Code() == codes.Internal || st.Code() == codes.Unknown) && authFailure(st.Message()) {
		// Cloud KMS answers a ciphertext that does not authenticate with
		// INVALID_ARGUMENT; servers that answer INTERNAL or UNKNOWN with
		// the same cause (emulators pass Go's "cipher: message
		// authentication failed" through) are refusing the ciphertext
		// too, and retrying cannot change the answer.
		ce.msg += ": decryption failed (the ciphertext does not authenticate)"
		ce.causes = []error{ErrInvalidCiphertext, providers.ErrInvalid}
		return providers.Permanent, ce
	}
	switch st.Code() {
	case codes.ResourceExhausted:
		ce.causes = []error{providers.ErrThrottled}
		return providers.Throttled, ce
	case codes.Unavailable, codes.DeadlineExceeded, codes.Internal, codes.Aborted, codes.Unknown, codes.Canceled:
		ce.causes = []error{providers.ErrUnavailable}
		return providers.Retryable, ce
	case codes.PermissionDenied, codes.Unauthenticated:
		// UNAUTHENTICATED gets here only when the call, sent once more
		// with a new access token, was refused again (tokens.Source).
		ce.causes = []error{providers.ErrAccessDenied}
		return providers.Permanent, ce
	case codes.NotFound, codes.FailedPrecondition:
		ce.causes = []error{ErrKeyUnusable, providers.ErrInvalid}
		return providers.Permanent, ce
	case codes.InvalidArgument:
		if strings.Contains(st.Message(), "checksum") {
			ce.causes = []error{ErrChecksum, providers.ErrUnavailable}
			return providers.Retryable, ce
		}
		if op == "Decrypt" {
			ce.causes = []error{ErrInvalidCiphertext, providers.ErrInvalid}
			return providers.Permanent, ce
		}
	}
	ce.causes = []error{providers.ErrInvalid}
	return providers.Permanent, ce
}

// authFailure reports whether a Decrypt error message says the ciphertext
// failed to decrypt or authenticate: Cloud KMS's own wordings ("Decryption
// failed: the ciphertext is invalid.", "Decryption failed: verify that
// 'name' refers to the correct CryptoKey.") and Go's AES-GCM error
// ("cipher: message authentication failed").
func authFailure(msg string) bool {
	m := strings.ToLower(msg)
	for _, s := range []string{"decryption failed", "message authentication failed", "ciphertext is invalid", "invalid ciphertext"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

func firstLine(s string) string { return seal.FirstLine(s) }

// sanitizeMessage is seal.Sanitize keeping resource paths.
func sanitizeMessage(s string) string { return seal.Sanitize(s, true) }
