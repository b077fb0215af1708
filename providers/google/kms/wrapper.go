package kms

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"

	"cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/seal"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func crc32c(b []byte) *wrapperspb.Int64Value {
	return wrapperspb.Int64(int64(crc32.Checksum(b, crcTable)))
}

// Wrapper wraps data keys with Cloud KMS Encrypt and Decrypt
// (events.AlgA256GCMGCPKMS values): the kid of a value is the CryptoKey's
// resource name, the edk the Cloud KMS ciphertext (which records the
// CryptoKeyVersion that made it, so rotating the CryptoKey's primary
// version is keyring-style rotation), and the additional authenticated
// data seal.Context.AdditionalData, exactly as before the envelope sealer
// existed. Every request carries CRC32C checksums and every response's are
// checked.
type Wrapper struct {
	api     API
	keyName string
}

var _ seal.Wrapper = (*Wrapper)(nil)

// NewWrapper returns a Wrapper calling api, wrapping with keyName (a
// CryptoKey or CryptoKeyVersion; "" for open only).
func NewWrapper(api API, keyName string) (*Wrapper, error) {
	if api == nil {
		return nil, errors.New("google_kms: no Cloud KMS client")
	}
	if keyName != "" && CryptoKeyOf(keyName) == "" {
		return nil, fmt.Errorf("google_kms config: KeyName (%s): must be projects/P/locations/L/keyRings/R/cryptoKeys/K[/cryptoKeyVersions/N]", OptionKeyName)
	}
	return &Wrapper{api: api, keyName: keyName}, nil
}

// NewSealer returns the envelope sealer over a Wrapper for api and keyName.
func NewSealer(api API, keyName string, cfg seal.Config) (*seal.Sealer, error) {
	w, err := NewWrapper(api, keyName)
	if err != nil {
		return nil, err
	}
	for i, n := range cfg.AllowedKeyIDs {
		if !cryptoKeyRe.MatchString(n) {
			return nil, fmt.Errorf("google_kms config: AllowedKeyNames[%d] (%s): must be a CryptoKey name (projects/P/locations/L/keyRings/R/cryptoKeys/K)", i, OptionAllowedKeyNames)
		}
	}
	return seal.New(w, cfg)
}

// New builds a Sealer from one options map: "key_name",
// "allowed_key_names", the Sealer's options (seal.FromOptions) and the
// connection options of NewClient. getenv is unused (Application Default
// Credentials read the process environment themselves) and taken for
// symmetry with providers/aws/kms.New.
func New(ctx context.Context, opts map[string]string, getenv func(string) string) (*seal.Sealer, error) {
	_ = getenv
	cfg, err := seal.FromOptions(opts, OptionAllowedKeyNames)
	if err != nil {
		return nil, fmt.Errorf("google_kms config: %w", err)
	}
	client, err := NewClient(ctx, opts)
	if err != nil {
		return nil, err
	}
	return NewSealer(client, opts[OptionKeyName], cfg)
}

// Name implements seal.Wrapper.
func (w *Wrapper) Name() string { return Provider }

// Alg implements seal.Wrapper: events.AlgA256GCMGCPKMS.
func (w *Wrapper) Alg() string { return events.AlgA256GCMGCPKMS }

// KeyID implements seal.Wrapper: the configured key_name.
func (w *Wrapper) KeyID() string { return w.keyName }

// Wrap implements seal.Wrapper with Encrypt.
func (w *Wrapper) Wrap(ctx context.Context, dataKey []byte, wc seal.Context) (seal.Wrapped, error) {
	aad := wc.AdditionalData()
	resp, err := w.api.Encrypt(ctx, &kmspb.EncryptRequest{
		Name:                              w.keyName,
		Plaintext:                         dataKey,
		PlaintextCrc32C:                   crc32c(dataKey),
		AdditionalAuthenticatedData:       aad,
		AdditionalAuthenticatedDataCrc32C: crc32c(aad),
	})
	if err != nil {
		return seal.Wrapped{}, wrapErr("Encrypt", w.keyName, err)
	}
	if !resp.GetVerifiedPlaintextCrc32C() || !resp.GetVerifiedAdditionalAuthenticatedDataCrc32C() ||
		resp.GetCiphertextCrc32C() == nil || resp.GetCiphertextCrc32C().GetValue() != crc32c(resp.GetCiphertext()).GetValue() {
		return seal.Wrapped{}, providers.NewError(Provider, "Encrypt", w.keyName, providers.Retryable,
			&callError{msg: "the Encrypt request or response failed its CRC32C check", causes: []error{ErrChecksum, providers.ErrUnavailable}})
	}
	kid := CryptoKeyOf(resp.GetName())
	if kid == "" {
		kid = CryptoKeyOf(w.keyName)
	}
	return seal.Wrapped{KID: kid, EDK: resp.GetCiphertext()}, nil
}

// Unwrap implements seal.Wrapper with Decrypt (name = kid).
func (w *Wrapper) Unwrap(ctx context.Context, kid string, edk []byte, wc seal.Context) ([]byte, error) {
	if !cryptoKeyRe.MatchString(kid) {
		return nil, permanent("Decrypt", kid, "kid is not a Cloud KMS CryptoKey name", events.ErrUnknownKeyID)
	}
	aad := wc.AdditionalData()
	resp, err := w.api.Decrypt(ctx, &kmspb.DecryptRequest{
		Name:                              kid,
		Ciphertext:                        edk,
		CiphertextCrc32C:                  crc32c(edk),
		AdditionalAuthenticatedData:       aad,
		AdditionalAuthenticatedDataCrc32C: crc32c(aad),
	})
	if err != nil {
		return nil, wrapErr("Decrypt", kid, err, events.ErrOpenFailed)
	}
	pt := resp.GetPlaintext()
	if resp.GetPlaintextCrc32C() == nil || resp.GetPlaintextCrc32C().GetValue() != crc32c(pt).GetValue() {
		clear(pt)
		return nil, providers.NewError(Provider, "Decrypt", kid, providers.Retryable,
			&callError{msg: "the Decrypt response failed its CRC32C check", causes: []error{ErrChecksum, providers.ErrUnavailable}})
	}
	return pt, nil
}

// Classify implements seal.Wrapper: the class wrapErr gave; a ciphertext
// Cloud KMS refused is a refusal.
func (w *Wrapper) Classify(err error) seal.Class {
	c := seal.ClassifyProviderError(err)
	c.Refused = errors.Is(err, ErrInvalidCiphertext)
	return c
}
