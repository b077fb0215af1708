package events

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"strings"
)

// KMS-wrapped data keys (AlgA256GCMKMS). The value is sealed exactly as with
// the local keyring (AES-256-GCM, 12-byte random nonce, the same AAD), but
// the key is a data key that AWS KMS generated and wrapped: the envelope
// carries it wrapped in edk, and whoever opens the value asks KMS to unwrap
// it. The calls to KMS live in providers/aws/kms; this file holds what the
// wire format fixes: the encryption context and the AES-GCM part.

// Encryption context keys of A256GCM-KMS data keys.
const (
	KMSContextAlg    = "keyrelay:alg"
	KMSContextTeamID = "keyrelay:team_id"
)

// KMSEncryptionContext returns the AWS KMS encryption context an
// A256GCM-KMS data key for a value bound to b is generated and unwrapped
// under:
//
//	{"keyrelay:alg": "A256GCM-KMS", "keyrelay:team_id": b.TeamID}
//
// KMS refuses to unwrap the data key under any other context, so a wrapped
// key is useless for another team, KMS key policies and grants can limit a
// principal to some teams (kms:EncryptionContext:keyrelay:team_id), and
// CloudTrail records the team of every unwrap. The key id and generation
// are not part of it, so one data key can seal several events of a team
// (that is what makes caching data keys worth it); the AES-GCM associated
// data (Binding.AAD) binds every value to its own event.
func (b Binding) KMSEncryptionContext() map[string]string {
	return map[string]string{KMSContextAlg: AlgA256GCMKMS, KMSContextTeamID: b.TeamID}
}

// DataKey seals and opens A256GCM-KMS values with one data key that KMS
// generated or unwrapped. It keeps the AES-GCM cipher built from the key,
// never the key bytes, so the caller can wipe the plaintext key as soon as
// NewDataKey returns. It is safe for concurrent use.
type DataKey struct {
	alg  string
	kid  string
	edk  []byte
	aead cipher.AEAD
}

// NewDataKey builds a DataKey from key, the 32-byte plaintext data key, and
// edk, the same key as KMS encrypted it under the KMS key whose ARN is kid.
// It keeps neither key nor edk: wipe key (clear(key)) after the call.
func NewDataKey(kid string, key, edk []byte) (*DataKey, error) {
	return newDataKey(AlgA256GCMKMS, kid, key, edk)
}

// NewEnvelopeDataKey builds a DataKey sealing and opening values of the
// envelope algorithm alg (IsEnvelopeAlg) from key, the 32-byte plaintext
// data key, and edk, the same key as the key-encryption key named kid
// wrapped it. It keeps neither key nor edk: wipe key after the call.
func NewEnvelopeDataKey(alg, kid string, key, edk []byte) (*DataKey, error) {
	if !IsEnvelopeAlg(alg) {
		return nil, fmt.Errorf("data key: %q is not an envelope algorithm", alg)
	}
	return newDataKey(alg, kid, key, edk)
}

// Envelope algorithms are "A256GCM-" followed by 2 to 16 capitals or
// digits naming the key wrapper: the value is AES-256-GCM under a 32-byte
// data key (12-byte random nonce, the AAD of Binding.AAD with the value's
// alg and kid), and edk carries the data key as the key-encryption key
// named by kid wrapped it. AlgA256GCMKMS and AlgA256GCMGCPKMS are two;
// the wrappers (package seal and providers/...) own the others. events
// checks the shape; which wrapper opens a value is the opener's business.
const (
	envelopePrefix     = AlgA256GCM + "-"
	maxEnvelopeNameLen = 16
)

// IsEnvelopeAlg reports whether alg names an envelope algorithm:
// "A256GCM-" and 2 to 16 characters from A-Z and 0-9.
func IsEnvelopeAlg(alg string) bool {
	name, ok := strings.CutPrefix(alg, envelopePrefix)
	if !ok || len(name) < 2 || len(name) > maxEnvelopeNameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !(c >= 'A' && c <= 'Z') && !(c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func newDataKey(alg, kid string, key, edk []byte) (*DataKey, error) {
	if err := validateKMSKeyID("kid", kid); err != nil {
		return nil, fmt.Errorf("data key: %w", err)
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("data key: key is %d bytes, want 32", len(key))
	}
	if len(edk) == 0 || len(edk) > MaxEDKBytes {
		return nil, fmt.Errorf("data key: edk is %d bytes, want 1 to %d", len(edk), MaxEDKBytes)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("data key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("data key: %w", err)
	}
	return &DataKey{alg: alg, kid: kid, edk: bytes.Clone(edk), aead: aead}, nil
}

// Alg returns the algorithm of the values the data key seals:
// AlgA256GCMKMS (NewDataKey), AlgA256GCMGCPKMS (NewGCPKMSDataKey) or the
// envelope algorithm given to NewEnvelopeDataKey.
func (k *DataKey) Alg() string { return k.alg }

// KID returns the key-encryption key that wrapped the data key (for
// A256GCM-KMS, the KMS key's ARN).
func (k *DataKey) KID() string { return k.kid }

// EDK returns a copy of the wrapped data key.
func (k *DataKey) EDK() []byte { return bytes.Clone(k.edk) }

// Seal encrypts plaintext with a fresh random nonce, bound to b.
func (k *DataKey) Seal(plaintext []byte, b Binding) (*SealedValue, error) {
	nonce, err := newNonce()
	if err != nil {
		return nil, err
	}
	return k.sealWithNonce(plaintext, b, nonce)
}

func (k *DataKey) sealWithNonce(plaintext []byte, b Binding, nonce []byte) (*SealedValue, error) {
	if err := checkSeal(plaintext, b, nonce); err != nil {
		return nil, err
	}
	ct := k.aead.Seal(nil, nonce, plaintext, b.AAD(k.alg, k.kid))
	return &SealedValue{Alg: k.alg, KID: k.kid, EDK: bytes.Clone(k.edk), Nonce: nonce, Ciphertext: ct}, nil
}

// Open decrypts sv, which must be a value of the data key's algorithm
// (A256GCM-KMS, or A256GCM-GCPKMS for NewGCPKMSDataKey) wrapped as this
// data key (same kid and edk), and checks that it is bound to b.
func (k *DataKey) Open(sv *SealedValue, b Binding) ([]byte, error) {
	if sv == nil {
		return nil, errors.New("open: no sealed value")
	}
	if err := sv.validate("value"); err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	if err := b.validate(); err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	if sv.Alg != k.alg {
		return nil, fmt.Errorf("open: a %s data key does not open %s values: %w", k.alg, sv.Alg, ErrUnsupportedAlg)
	}
	if sv.KID != k.kid || !bytes.Equal(sv.EDK, k.edk) {
		return nil, fmt.Errorf("open: the value's wrapped data key is not this data key: %w", ErrOpenFailed)
	}
	pt, err := k.aead.Open(nil, sv.Nonce, sv.Ciphertext, b.AAD(sv.Alg, sv.KID))
	if err != nil {
		return nil, ErrOpenFailed
	}
	return pt, nil
}

// Validate checks that sv is a well-formed sealed value (the same rules as
// Decode: algorithm, kid, nonce, edk and ct sizes), for openers outside
// this package. Its *ValidationError names the field as "value.<member>".
func (s *SealedValue) Validate() error { return s.validate("value") }

// Validate checks that b can be encoded unambiguously: the team id (and the
// key id, when set) must be valid ids.
func (b Binding) Validate() error { return b.validate() }

// AlgOpener is an Opener that says which algorithms it opens; Multi
// dispatches on it.
type AlgOpener interface {
	Opener
	OpensAlg(alg string) bool
}

// Multi opens values sealed under several schemes, for a worker that must
// read both local-keyring and KMS-sealed values:
//
//	opener := events.Multi{keyring, kmsSealer}
//
// Open validates the value, then hands it to the first element whose
// OpensAlg(sv.Alg) is true. An element that is not an AlgOpener is a
// catch-all, used only when no AlgOpener claims the algorithm; nil elements
// are skipped. With no taker, Open fails with ErrUnsupportedAlg.
type Multi []Opener

// Open implements Opener.
func (m Multi) Open(ctx context.Context, sv *SealedValue, b Binding) ([]byte, error) {
	if sv == nil {
		return nil, errors.New("open: no sealed value")
	}
	if err := sv.validate("value"); err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	if o := m.openerFor(sv.Alg); o != nil {
		return o.Open(ctx, sv, b)
	}
	return nil, fmt.Errorf("open: no opener configured for %s values: %w", sv.Alg, ErrUnsupportedAlg)
}

// OpensAlg reports whether some element opens alg.
func (m Multi) OpensAlg(alg string) bool { return m.openerFor(alg) != nil }

func (m Multi) openerFor(alg string) Opener {
	var fallback Opener
	for _, o := range m {
		switch o := o.(type) {
		case nil:
		case AlgOpener:
			if o.OpensAlg(alg) {
				return o
			}
		default:
			if fallback == nil {
				fallback = o
			}
		}
	}
	return fallback
}
