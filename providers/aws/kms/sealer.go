package kms

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	"github.com/keyrelay/keyrelay/providers/internal/datakeys"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
)

// Sealer seals event values with data keys that AWS KMS generates and
// wraps (events.AlgA256GCMKMS), and opens such values. It implements
// events.Sealer, events.Opener and events.AlgOpener; combine it with the
// local keyring as events.Multi{keyring, sealer} to open both kinds. It is
// safe for concurrent use.
type Sealer struct {
	api     API
	cfg     Config
	allowed map[string]bool
	now     func() time.Time

	// sealKeys: per encryption context (per team), the data key new values
	// are sealed with. openKeys: unwrapped data keys by (kid, context, edk).
	sealKeys *datakeys.Cache[string]
	openKeys *datakeys.Cache[[sha256.Size]byte]

	generateCalls, decryptCalls, sealHits, openHits atomic.Uint64
}

// Stats counts a Sealer's KMS calls and cache hits since it was made.
type Stats struct {
	// GenerateDataKeyCalls and DecryptCalls count KMS requests, failed
	// ones included.
	GenerateDataKeyCalls uint64
	DecryptCalls         uint64
	// SealCacheHits and OpenCacheHits count Seal and Open calls served by
	// a cached data key.
	SealCacheHits uint64
	OpenCacheHits uint64
}

// NewSealer returns a Sealer calling api. cfg is completed with defaults
// and validated.
func NewSealer(api API, cfg Config) (*Sealer, error) {
	if api == nil {
		return nil, errors.New("aws_kms: no KMS client")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newSealer(api, cfg.WithDefaults(), time.Now), nil
}

func newSealer(api API, cfg Config, now func() time.Time) *Sealer {
	s := &Sealer{api: api, cfg: cfg, now: now}
	if len(cfg.AllowedKeyARNs) > 0 {
		s.allowed = make(map[string]bool, len(cfg.AllowedKeyARNs))
		for _, arn := range cfg.AllowedKeyARNs {
			s.allowed[arn] = true
		}
	}
	s.sealKeys = datakeys.New[string](cfg.SealCacheSize, cfg.DataKeyTTL, cfg.DataKeyMaxUses, cfg.CallTimeout, now)
	s.openKeys = datakeys.New[[sha256.Size]byte](cfg.OpenCacheSize, cfg.OpenCacheTTL, 0, cfg.CallTimeout, now)
	return s
}

// New builds a Sealer from one options map: the sealing options of
// FromOptions ("key_id", "data_key_ttl", ...) and the AWS connection
// options of NewClient ("aws_region_name", "endpoint", "ca_bundle",
// credentials and roles). getenv nil means os.Getenv.
func New(ctx context.Context, opts map[string]string, getenv func(string) string) (*Sealer, error) {
	cfg, err := FromOptions(opts)
	if err != nil {
		return nil, err
	}
	client, err := NewClient(ctx, opts, getenv)
	if err != nil {
		return nil, err
	}
	return NewSealer(client, cfg)
}

// KeyID returns the configured KMS key new values are sealed under ("" for
// an open-only Sealer).
func (s *Sealer) KeyID() string { return s.cfg.KeyID }

// Stats returns the call and cache counters.
func (s *Sealer) Stats() Stats {
	return Stats{GenerateDataKeyCalls: s.generateCalls.Load(), DecryptCalls: s.decryptCalls.Load(),
		SealCacheHits: s.sealHits.Load(), OpenCacheHits: s.openHits.Load()}
}

// Purge drops every cached data key, e.g. after rotating or revoking a
// KMS key: the next Seal generates a new one and the next Open unwraps
// again.
func (s *Sealer) Purge() {
	s.sealKeys.Purge()
	s.openKeys.Purge()
}

// OpensAlg reports whether Open handles alg: events.AlgA256GCMKMS only.
func (s *Sealer) OpensAlg(alg string) bool { return alg == events.AlgA256GCMKMS }

// Seal encrypts plaintext under a data key for b's team, bound to b. The
// data key comes from GenerateDataKey (AES_256) under the configured key
// with b.KMSEncryptionContext(), and seals further values of the team for
// DataKeyTTL or DataKeyMaxUses values, whichever ends first; concurrent
// Seals for a team share one GenerateDataKey call.
func (s *Sealer) Seal(ctx context.Context, plaintext []byte, b events.Binding) (*events.SealedValue, error) {
	if s.cfg.KeyID == "" {
		return nil, providers.NewError(Provider, "GenerateDataKey", "", providers.Permanent,
			&callError{msg: ErrNoKey.Error(), causes: []error{ErrNoKey, providers.ErrInvalid}})
	}
	if len(plaintext) > events.MaxValueBytes {
		return nil, fmt.Errorf("seal: value is %d bytes, larger than %d", len(plaintext), events.MaxValueBytes)
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	ec := b.KMSEncryptionContext()
	dk, hit, err := s.sealKeys.Get(ctx, canonicalContext(ec), func(ctx context.Context) (*events.DataKey, error) {
		return s.generate(ctx, ec)
	})
	if err != nil {
		return nil, s.ctxErr("GenerateDataKey", s.cfg.KeyID, err)
	}
	if hit {
		s.sealHits.Add(1)
	}
	return dk.Seal(plaintext, b)
}

func (s *Sealer) generate(ctx context.Context, ec map[string]string) (*events.DataKey, error) {
	s.generateCalls.Add(1)
	out, err := s.api.GenerateDataKey(ctx, &awskms.GenerateDataKeyInput{
		KeyId:             aws.String(s.cfg.KeyID),
		KeySpec:           types.DataKeySpecAes256,
		EncryptionContext: ec,
	})
	if err != nil {
		return nil, wrapErr("GenerateDataKey", s.cfg.KeyID, err)
	}
	defer clear(out.Plaintext)
	kid := aws.ToString(out.KeyId)
	dk, err := events.NewDataKey(kid, out.Plaintext, out.CiphertextBlob)
	if err != nil {
		// events' messages name sizes and the kid, never key bytes.
		return nil, providers.NewError(Provider, "GenerateDataKey", s.cfg.KeyID, providers.Permanent,
			&callError{msg: "KMS returned an unusable data key: " + err.Error(), causes: []error{providers.ErrInvalid}})
	}
	// This process can open what it seals without asking KMS.
	s.openKeys.Put(openKey(kid, ec, out.CiphertextBlob), dk)
	return dk, nil
}

// Open unwraps sv's data key with KMS Decrypt (KeyId = sv.KID, the
// encryption context of b's team) and opens sv bound to b. Unwrapped data
// keys are cached by (kid, context, edk) for OpenCacheTTL; concurrent Opens
// of one edk share one Decrypt call.
//
// Errors: events.ErrUnsupportedAlg for values that are not A256GCM-KMS;
// events.ErrUnknownKeyID for a kid outside AllowedKeyARNs;
// events.ErrOpenFailed (a permanent *providers.Error wrapping
// ErrInvalidCiphertext when KMS refused the edk) for tampered values,
// another key, or a value moved to another event; other KMS failures are
// *providers.Error, retryable or not.
func (s *Sealer) Open(ctx context.Context, sv *events.SealedValue, b events.Binding) ([]byte, error) {
	if sv == nil {
		return nil, errors.New("open: no sealed value")
	}
	if err := sv.Validate(); err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	if sv.Alg != events.AlgA256GCMKMS {
		return nil, fmt.Errorf("open: %s values are not opened by AWS KMS (the local keyring opens A256GCM): %w", sv.Alg, events.ErrUnsupportedAlg)
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	if s.allowed != nil && !s.allowed[sv.KID] {
		return nil, fmt.Errorf("open: KMS key %s is not in %s: %w", sv.KID, OptionAllowedKeyARNs, events.ErrUnknownKeyID)
	}
	ec := b.KMSEncryptionContext()
	kid, edk := sv.KID, bytes.Clone(sv.EDK)
	dk, hit, err := s.openKeys.Get(ctx, openKey(kid, ec, edk), func(ctx context.Context) (*events.DataKey, error) {
		return s.unwrap(ctx, kid, edk, ec)
	})
	if err != nil {
		return nil, s.ctxErr("Decrypt", kid, err)
	}
	if hit {
		s.openHits.Add(1)
	}
	return dk.Open(sv, b)
}

func (s *Sealer) unwrap(ctx context.Context, kid string, edk []byte, ec map[string]string) (*events.DataKey, error) {
	s.decryptCalls.Add(1)
	out, err := s.api.Decrypt(ctx, &awskms.DecryptInput{
		CiphertextBlob:    edk,
		KeyId:             aws.String(kid),
		EncryptionContext: ec,
	})
	if err != nil {
		return nil, wrapErr("Decrypt", kid, err, events.ErrOpenFailed)
	}
	defer clear(out.Plaintext)
	dk, err := events.NewDataKey(kid, out.Plaintext, edk)
	if err != nil {
		return nil, providers.NewError(Provider, "Decrypt", kid, providers.Permanent,
			&callError{msg: "KMS returned an unusable data key: " + err.Error(), causes: []error{providers.ErrInvalid, events.ErrOpenFailed}})
	}
	return dk, nil
}

// ctxErr turns the caller's own cancellation or deadline while waiting for
// a KMS call into a classified error; errors from the call pass through.
func (s *Sealer) ctxErr(op, name string, err error) error {
	var pe *providers.Error
	if errors.As(err, &pe) {
		return err
	}
	return wrapErr(op, name, err)
}

// canonicalContext encodes an encryption context as sorted "k=v" pairs
// separated by NUL (ids cannot contain NUL).
func canonicalContext(ec map[string]string) string {
	keys := make([]string, 0, len(ec))
	for k := range ec {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(ec[k])
		b.WriteByte(0)
	}
	return b.String()
}

// openKey identifies an unwrapped data key: the same edk under another
// kid or another encryption context is another cache entry, so a cache hit
// never grants what KMS would refuse.
func openKey(kid string, ec map[string]string, edk []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(kid))
	h.Write([]byte{0})
	h.Write([]byte(canonicalContext(ec)))
	h.Write([]byte{0})
	h.Write(edk)
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}
