package kms

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"sync/atomic"
	"time"

	"github.com/keyrelay/keyrelay/providers/internal/datakeys"

	"cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func crc32c(b []byte) *wrapperspb.Int64Value {
	return wrapperspb.Int64(int64(crc32.Checksum(b, crcTable)))
}

// Sealer seals event values with random data keys wrapped by Cloud KMS
// (events.AlgA256GCMGCPKMS), and opens such values. It implements
// events.Sealer, events.Opener and events.AlgOpener; combine it with the
// local keyring (and AWS KMS) as events.Multi{...} to open every kind. It
// is safe for concurrent use.
type Sealer struct {
	api     API
	cfg     Config
	allowed map[string]bool
	now     func() time.Time
	rand    func([]byte) error

	// sealKeys: per team (additional data), the data key new values are
	// sealed with. openKeys: unwrapped data keys by (kid, aad, edk).
	sealKeys *datakeys.Cache[string]
	openKeys *datakeys.Cache[[sha256.Size]byte]

	encryptCalls, decryptCalls, sealHits, openHits atomic.Uint64
}

// Stats counts a Sealer's Cloud KMS calls and cache hits.
type Stats struct {
	EncryptCalls  uint64
	DecryptCalls  uint64
	SealCacheHits uint64
	OpenCacheHits uint64
}

// NewSealer returns a Sealer calling api. cfg is completed with defaults
// and validated.
func NewSealer(api API, cfg Config) (*Sealer, error) {
	if api == nil {
		return nil, errors.New("google_kms: no Cloud KMS client")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newSealer(api, cfg.WithDefaults(), time.Now), nil
}

func newSealer(api API, cfg Config, now func() time.Time) *Sealer {
	s := &Sealer{api: api, cfg: cfg, now: now, rand: func(b []byte) error { _, err := rand.Read(b); return err }}
	if len(cfg.AllowedKeyNames) > 0 {
		s.allowed = make(map[string]bool, len(cfg.AllowedKeyNames))
		for _, n := range cfg.AllowedKeyNames {
			s.allowed[n] = true
		}
	}
	s.sealKeys = datakeys.New[string](cfg.SealCacheSize, cfg.DataKeyTTL, cfg.DataKeyMaxUses, cfg.CallTimeout, now)
	s.openKeys = datakeys.New[[sha256.Size]byte](cfg.OpenCacheSize, cfg.OpenCacheTTL, 0, cfg.CallTimeout, now)
	return s
}

// New builds a Sealer from one options map: the sealing options of
// FromOptions ("key_name", "data_key_ttl", ...) and the connection options
// of NewClient ("endpoint", "insecure", "ca_bundle", "credentials_file").
// getenv (nil means os.Getenv) is consulted for nothing but is taken for
// symmetry with providers/aws/kms.New; Application Default Credentials
// read the process environment themselves.
func New(ctx context.Context, opts map[string]string, getenv func(string) string) (*Sealer, error) {
	_ = getenv
	cfg, err := FromOptions(opts)
	if err != nil {
		return nil, err
	}
	client, err := NewClient(ctx, opts)
	if err != nil {
		return nil, err
	}
	return NewSealer(client, cfg)
}

// KeyName returns the configured key new values are wrapped with ("" for
// an open-only Sealer).
func (s *Sealer) KeyName() string { return s.cfg.KeyName }

// Stats returns the call and cache counters.
func (s *Sealer) Stats() Stats {
	return Stats{EncryptCalls: s.encryptCalls.Load(), DecryptCalls: s.decryptCalls.Load(),
		SealCacheHits: s.sealHits.Load(), OpenCacheHits: s.openHits.Load()}
}

// Purge drops every cached data key.
func (s *Sealer) Purge() {
	s.sealKeys.Purge()
	s.openKeys.Purge()
}

// OpensAlg reports whether Open handles alg: events.AlgA256GCMGCPKMS only.
func (s *Sealer) OpensAlg(alg string) bool { return alg == events.AlgA256GCMGCPKMS }

// Seal encrypts plaintext under a data key for b's team, bound to b. The
// data key is 32 random bytes wrapped by Cloud KMS Encrypt under KeyName
// with b.GCPKMSAdditionalData() as additional authenticated data (and
// CRC32C checksums both ways); it seals further values of the team for
// DataKeyTTL or DataKeyMaxUses values, whichever ends first. Concurrent
// Seals for a team share one Encrypt call.
func (s *Sealer) Seal(ctx context.Context, plaintext []byte, b events.Binding) (*events.SealedValue, error) {
	if s.cfg.KeyName == "" {
		return nil, permanent("Encrypt", "", ErrNoKey.Error(), ErrNoKey, providers.ErrInvalid)
	}
	if len(plaintext) > events.MaxValueBytes {
		return nil, fmt.Errorf("seal: value is %d bytes, larger than %d", len(plaintext), events.MaxValueBytes)
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	aad := b.GCPKMSAdditionalData()
	dk, hit, err := s.sealKeys.Get(ctx, string(aad), func(ctx context.Context) (*events.DataKey, error) {
		return s.wrap(ctx, aad)
	})
	if err != nil {
		return nil, s.ctxErr("Encrypt", s.cfg.KeyName, err)
	}
	if hit {
		s.sealHits.Add(1)
	}
	return dk.Seal(plaintext, b)
}

func (s *Sealer) wrap(ctx context.Context, aad []byte) (*events.DataKey, error) {
	key := make([]byte, 32)
	defer clear(key)
	if err := s.rand(key); err != nil {
		return nil, permanent("Encrypt", s.cfg.KeyName, "cannot generate a data key: no randomness", providers.ErrUnavailable)
	}
	s.encryptCalls.Add(1)
	resp, err := s.api.Encrypt(ctx, &kmspb.EncryptRequest{
		Name:                              s.cfg.KeyName,
		Plaintext:                         key,
		PlaintextCrc32C:                   crc32c(key),
		AdditionalAuthenticatedData:       aad,
		AdditionalAuthenticatedDataCrc32C: crc32c(aad),
	})
	if err != nil {
		return nil, wrapErr("Encrypt", s.cfg.KeyName, err)
	}
	if !resp.GetVerifiedPlaintextCrc32C() || !resp.GetVerifiedAdditionalAuthenticatedDataCrc32C() ||
		resp.GetCiphertextCrc32C() == nil || resp.GetCiphertextCrc32C().GetValue() != crc32c(resp.GetCiphertext()).GetValue() {
		return nil, providers.NewError(Provider, "Encrypt", s.cfg.KeyName, providers.Retryable,
			&callError{msg: "the Encrypt request or response failed its CRC32C check", causes: []error{ErrChecksum, providers.ErrUnavailable}})
	}
	kid := CryptoKeyOf(resp.GetName())
	if kid == "" {
		kid = CryptoKeyOf(s.cfg.KeyName)
	}
	dk, err := events.NewGCPKMSDataKey(kid, key, resp.GetCiphertext())
	if err != nil {
		// events' messages name sizes and the kid, never key bytes.
		return nil, permanent("Encrypt", s.cfg.KeyName, "Cloud KMS returned an unusable ciphertext: "+err.Error(), providers.ErrInvalid)
	}
	// This process can open what it seals without asking Cloud KMS.
	s.openKeys.Put(openKey(kid, aad, resp.GetCiphertext()), dk)
	return dk, nil
}

// Open unwraps sv's data key with Cloud KMS Decrypt (name = sv.KID, the
// additional data of b's team) and opens sv bound to b. Unwrapped data
// keys are cached by (kid, additional data, edk) for OpenCacheTTL;
// concurrent Opens of one edk share one Decrypt call.
//
// Errors: events.ErrUnsupportedAlg for values that are not A256GCM-GCPKMS;
// events.ErrUnknownKeyID for a kid outside AllowedKeyNames;
// events.ErrOpenFailed (a permanent *providers.Error wrapping
// ErrInvalidCiphertext when Cloud KMS refused the edk) for tampered values,
// another key, or a value moved to another team's or key's event; other
// failures are *providers.Error, retryable or not.
func (s *Sealer) Open(ctx context.Context, sv *events.SealedValue, b events.Binding) ([]byte, error) {
	if sv == nil {
		return nil, errors.New("open: no sealed value")
	}
	if err := sv.Validate(); err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	if sv.Alg != events.AlgA256GCMGCPKMS {
		return nil, fmt.Errorf("open: %s values are not opened by Google Cloud KMS: %w", sv.Alg, events.ErrUnsupportedAlg)
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	if s.allowed != nil && !s.allowed[sv.KID] {
		return nil, fmt.Errorf("open: Cloud KMS key %s is not in %s: %w", sv.KID, OptionAllowedKeyNames, events.ErrUnknownKeyID)
	}
	if !cryptoKeyRe.MatchString(sv.KID) {
		return nil, fmt.Errorf("open: kid is not a Cloud KMS CryptoKey name: %w", events.ErrUnknownKeyID)
	}
	aad := b.GCPKMSAdditionalData()
	kid, edk := sv.KID, bytes.Clone(sv.EDK)
	dk, hit, err := s.openKeys.Get(ctx, openKey(kid, aad, edk), func(ctx context.Context) (*events.DataKey, error) {
		return s.unwrap(ctx, kid, edk, aad)
	})
	if err != nil {
		return nil, s.ctxErr("Decrypt", kid, err)
	}
	if hit {
		s.openHits.Add(1)
	}
	pt, err := dk.Open(sv, b)
	if errors.Is(err, events.ErrOpenFailed) {
		// The data key is the one Cloud KMS unwrapped (or this process
		// wrapped) for this key and team: a value that fails AES-GCM
		// authentication under it is tampered or bound to another
		// event, and stays so however often it is tried.
		return nil, permanent("Open", kid, "the sealed value failed AES-GCM authentication (tampered, or bound to another key or generation)",
			events.ErrOpenFailed, providers.ErrInvalid)
	}
	return pt, err
}

func (s *Sealer) unwrap(ctx context.Context, kid string, edk, aad []byte) (*events.DataKey, error) {
	s.decryptCalls.Add(1)
	resp, err := s.api.Decrypt(ctx, &kmspb.DecryptRequest{
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
	defer clear(pt)
	if resp.GetPlaintextCrc32C() == nil || resp.GetPlaintextCrc32C().GetValue() != crc32c(pt).GetValue() {
		return nil, providers.NewError(Provider, "Decrypt", kid, providers.Retryable,
			&callError{msg: "the Decrypt response failed its CRC32C check", causes: []error{ErrChecksum, providers.ErrUnavailable}})
	}
	dk, err := events.NewGCPKMSDataKey(kid, pt, edk)
	if err != nil {
		return nil, permanent("Decrypt", kid, "Cloud KMS returned an unusable data key: "+err.Error(), providers.ErrInvalid, events.ErrOpenFailed)
	}
	return dk, nil
}

// ctxErr turns the caller's own cancellation or deadline while waiting for
// a call into a classified error; errors from the call pass through.
func (s *Sealer) ctxErr(op, name string, err error) error {
	var pe *providers.Error
	if errors.As(err, &pe) {
		return err
	}
	return wrapErr(op, name, err)
}

// openKey identifies an unwrapped data key: the same edk under another
// key or other additional data is another cache entry, so a cache hit
// never grants what Cloud KMS would refuse.
func openKey(kid string, aad, edk []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(kid))
	h.Write([]byte{0})
	h.Write(aad)
	h.Write([]byte{0})
	h.Write(edk)
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}
