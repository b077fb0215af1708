package seal

import (
	"context"
	"strings"
	"time"

	"github.com/keyrelay/keyrelay/providers"
)

// Wrapper is a key-encryption key (KEK): the only thing a KMS implements.
// It wraps and unwraps 32-byte data keys and classifies its own errors;
// everything else (data keys, AES-GCM, caching, wiping, retries, metrics)
// is the Sealer's.
//
// A Wrapper is a keyring: KeyID names the KEK ring new values are sealed
// under, and stays the same when the KEK rotates (a new version of the
// Vault Transit key, the Azure key or the Cloud KMS CryptoKey, a new active
// key of the local keyring); the wrapped data key records which version
// wrapped it, so Unwrap opens data keys of every version still kept, and
// Wrap always uses the newest.
type Wrapper interface {
	// Name is the wrapper's name in errors and metrics, e.g. "aws_kms".
	Name() string
	// Alg is the sealed-value algorithm of the values whose data keys this
	// wrapper wraps, "A256GCM-" and 2 to 16 capitals or digits (see
	// events.IsEnvelopeAlg), e.g. "A256GCM-VAULT".
	Alg() string
	// KeyID is the kid of values sealed now; "" means the wrapper only
	// unwraps (no key configured for sealing).
	KeyID() string
	// Wrap encrypts dataKey (32 bytes) under the newest version of the
	// KEK, bound to wc where the KMS can bind additional data. It must
	// not keep dataKey.
	Wrap(ctx context.Context, dataKey []byte, wc Context) (Wrapped, error)
	// Unwrap decrypts edk, the wrapped data key of a value whose kid is
	// kid, bound to wc. The caller wipes the returned key.
	Unwrap(ctx context.Context, kid string, edk []byte, wc Context) ([]byte, error)
	// Classify tells the Sealer what an error of Wrap or Unwrap means for
	// the retry policy.
	Classify(err error) Class
}

// Generator is a Wrapper that can make a data key and wrap it in one call
// (AWS KMS GenerateDataKey). The Sealer prefers it to drawing a random key
// and calling Wrap, so the principal needs the permission it always had.
type Generator interface {
	Generate(ctx context.Context, wc Context) (dataKey []byte, w Wrapped, err error)
}

// Wrapped is a data key as a KEK wrapped it.
type Wrapped struct {
	// KID is the kid of the value: the KEK ring (see Wrapper).
	KID string
	// EDK is the wrapped data key, recording the KEK version that wrapped
	// it.
	EDK []byte
}

// Context is what a wrapped data key is bound to: the algorithm of the
// values it seals and their team. A data key seals values of one team
// only; the AES-GCM associated data binds each value to its own team, key
// id and generation.
type Context struct {
	Alg    string
	TeamID string
}

// EncryptionContext is Context as an AWS KMS encryption context:
//
//	{"keyrelay:alg": alg, "keyrelay:team_id": team_id}
//
// For alg A256GCM-KMS it is events.Binding.KMSEncryptionContext.
func (c Context) EncryptionContext() map[string]string {
	return map[string]string{ContextAlg: c.Alg, ContextTeamID: c.TeamID}
}

// AdditionalData is Context as bytes, for KMSs that take additional
// authenticated data (Cloud KMS, Vault Transit, the local keyring):
//
//	"keyrelay:alg=" alg 0x00 "keyrelay:team_id=" team_id
//
// For alg A256GCM-GCPKMS it is events.Binding.GCPKMSAdditionalData. Ids
// cannot contain NUL, so the encoding is unambiguous.
func (c Context) AdditionalData() []byte {
	var b strings.Builder
	b.WriteString(ContextAlg + "=" + c.Alg)
	b.WriteByte(0)
	b.WriteString(ContextTeamID + "=" + c.TeamID)
	return []byte(b.String())
}

// Keys of the wrap context.
const (
	ContextAlg    = "keyrelay:alg"
	ContextTeamID = "keyrelay:team_id"
)

// Class is a Wrapper's verdict on one of its errors.
type Class struct {
	// Kind is providers.Permanent, Retryable or Throttled.
	Kind providers.Kind
	// RetryAfter is the KMS's hint when throttled (0: none).
	RetryAfter time.Duration
	// Refused means the KMS refused the wrapped key itself (tampered,
	// another key, another context): the value cannot open, ever. The
	// Sealer adds events.ErrOpenFailed to such errors.
	Refused bool
}

// ClassifyProviderError is the classification of an error that is (or
// wraps) a *providers.Error: its Kind and RetryAfter; anything else is
// retryable when providers.IsRetryable says so, else permanent. Wrappers
// whose errors are *providers.Error can use it as their Classify, adding
// Refused.
func ClassifyProviderError(err error) Class {
	var pe *providers.Error
	if asProviderError(err, &pe) {
		return Class{Kind: pe.Kind, RetryAfter: pe.RetryAfter}
	}
	if providers.IsRetryable(err) {
		return Class{Kind: providers.Retryable}
	}
	return Class{Kind: providers.Permanent}
}
