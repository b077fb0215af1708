package events

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
)

// Sealing algorithms.
const (
	// AlgA256GCM is AES-256-GCM with a 96-bit random nonce and a key from the
	// keyring named by kid.
	AlgA256GCM = "A256GCM"
	// AlgPlaintext carries the value unencrypted (base64 in ct). Refused
	// unless the opener allows plaintext: development only.
	AlgPlaintext = "plaintext"
	// AlgA256GCMKMS is AES-256-GCM with a 96-bit random nonce under a data
	// key that AWS KMS generated (GenerateDataKey, AES_256) under the KMS
	// key whose ARN is kid. edk carries the data key as KMS encrypted it
	// (its CiphertextBlob), under the encryption context
	// Binding.KMSEncryptionContext. The local keyring does not open it;
	// providers/aws/kms does.
	AlgA256GCMKMS = "A256GCM-KMS"
)

// MaxEDKBytes bounds the wrapped data key of an A256GCM-KMS value (the
// largest CiphertextBlob AWS KMS accepts).
const MaxEDKBytes = 6144

// MaxKMSKeyIDLen bounds the kid of an A256GCM-KMS value (the longest KeyId
// AWS KMS accepts).
const MaxKMSKeyIDLen = 2048

// MaxValueBytes bounds a secret value (AWS Secrets Manager's limit is 64 KiB;
// virtual keys are tiny).
const MaxValueBytes = 16 << 10

// SealedValue is the envelope a secret value travels in.
type SealedValue struct {
	// Alg is AlgA256GCM, an envelope algorithm (IsEnvelopeAlg:
	// AlgA256GCMKMS, AlgA256GCMGCPKMS, "A256GCM-VAULT", ...) or, in
	// development, AlgPlaintext.
	Alg string `json:"alg"`
	// KID names the keyring key that sealed the value (AlgA256GCM) or, for
	// an envelope algorithm, the key-encryption key that wrapped its data
	// key (the ARN of the KMS key for AlgA256GCMKMS).
	KID string `json:"kid,omitempty"`
	// EDK is the encrypted (wrapped) data key of an envelope value (the
	// KMS CiphertextBlob for AlgA256GCMKMS, the Cloud KMS ciphertext for
	// AlgA256GCMGCPKMS, ...), base64. Absent for the other algorithms.
	EDK []byte `json:"edk,omitempty"`
	// Nonce is the 12-byte GCM nonce, base64 (standard, padded).
	Nonce []byte `json:"nonce,omitempty"`
	// Ciphertext is the GCM output (ciphertext || 16-byte tag), base64.
	Ciphertext []byte `json:"ct"`
}

// String never prints the contents, so a SealedValue in a log line or an
// error says only what it is.
func (s *SealedValue) String() string {
	if s == nil {
		return "<nil sealed value>"
	}
	return fmt.Sprintf("sealed(%s,kid=%s,%dB)", s.Alg, s.KID, len(s.Ciphertext))
}

func (s *SealedValue) validate(field string) error {
	switch {
	case s.Alg == AlgA256GCM || IsEnvelopeAlg(s.Alg):
		if s.Alg == AlgA256GCM {
			if err := ValidateID("kid", s.KID); err != nil {
				return under(field, err)
			}
			if len(s.EDK) != 0 {
				return invalid(field+".edk", "must be absent for %s", AlgA256GCM)
			}
		} else {
			if err := validateKMSKeyID(field+".kid", s.KID); err != nil {
				return err
			}
			if len(s.EDK) == 0 {
				return invalid(field+".edk", "is required for %s", s.Alg)
			}
			if len(s.EDK) > MaxEDKBytes {
				return invalid(field+".edk", "is %d bytes, larger than %d", len(s.EDK), MaxEDKBytes)
			}
		}
		if len(s.Nonce) != 12 {
			return invalid(field+".nonce", "must be 12 bytes, got %d", len(s.Nonce))
		}
		if len(s.Ciphertext) < 16 {
			return invalid(field+".ct", "is shorter than the GCM tag")
		}
		if len(s.Ciphertext) > MaxValueBytes+16 {
			return invalid(field+".ct", "is %d bytes, larger than %d", len(s.Ciphertext), MaxValueBytes+16)
		}
	case s.Alg == AlgPlaintext:
		if s.KID != "" {
			return invalid(field+".kid", "must be absent for %s", AlgPlaintext)
		}
		if len(s.Nonce) != 0 {
			return invalid(field+".nonce", "must be absent for %s", AlgPlaintext)
		}
		if len(s.EDK) != 0 {
			return invalid(field+".edk", "must be absent for %s", AlgPlaintext)
		}
		if len(s.Ciphertext) > MaxValueBytes {
			return invalid(field+".ct", "is %d bytes, larger than %d", len(s.Ciphertext), MaxValueBytes)
		}
	case s.Alg == "":
		return invalid(field+".alg", "is required")
	default:
		return invalid(field+".alg", "is not a supported algorithm (%s, %s-<WRAPPER> such as %s or %s, or %s)", AlgA256GCM, AlgA256GCM, AlgA256GCMKMS, AlgA256GCMGCPKMS, AlgPlaintext)
	}
	return nil
}

// validateKMSKeyID checks the kid of an AlgA256GCMKMS value: a KMS key ARN
// (or key id, alias name or alias ARN), 1 to MaxKMSKeyIDLen characters from
// letters, digits and ":/_-", starting with a letter or digit. It cannot
// contain NUL, so the AAD stays unambiguous.
func validateKMSKeyID(field, id string) error {
	switch {
	case id == "":
		return invalid(field, "is required")
	case len(id) > MaxKMSKeyIDLen:
		return invalid(field, "is %d bytes, longer than %d", len(id), MaxKMSKeyIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c < 0x80 && isAlnum(rune(c)):
		case i == 0:
			return invalid(field, "must start with a letter or digit")
		case c == ':' || c == '/' || c == '_' || c == '-':
		default:
			return invalid(field, "contains a character other than letters, digits and :/_- at byte %d", i)
		}
	}
	return nil
}

// Binding is the event identity a sealed value is bound to.
type Binding struct {
	TeamID     string
	KeyID      string
	Generation uint64
}

// BindingOf returns the binding of ev.
func BindingOf(ev *Event) Binding {
	return Binding{TeamID: ev.TeamID, KeyID: ev.KeyID, Generation: ev.Generation}
}

// AAD is the associated data authenticated with the value:
//
//	"keyrelay-seal-v1" 0x00 alg 0x00 kid 0x00 team_id 0x00 key_id 0x00 generation(decimal)
//
// Ids cannot contain NUL, so the encoding is unambiguous.
func (b Binding) AAD(alg, kid string) []byte {
	out := make([]byte, 0, 64)
	out = append(out, "keyrelay-seal-v1"...)
	for _, s := range []string{alg, kid, b.TeamID, b.KeyID, strconv.FormatUint(b.Generation, 10)} {
		out = append(out, 0)
		out = append(out, s...)
	}
	return out
}

// validate checks that b can be encoded unambiguously: the team id (and the
// key id, when set) must be valid ids, so none contains the NUL separator.
func (b Binding) validate() error {
	if err := ValidateID("team_id", b.TeamID); err != nil {
		return fmt.Errorf("binding: %w", err)
	}
	if b.KeyID != "" {
		if err := ValidateID("key_id", b.KeyID); err != nil {
			return fmt.Errorf("binding: %w", err)
		}
	}
	return nil
}

// Sealer seals values for new events.
type Sealer interface {
	Seal(ctx context.Context, plaintext []byte, b Binding) (*SealedValue, error)
}

// Opener opens sealed values.
type Opener interface {
	Open(ctx context.Context, sv *SealedValue, b Binding) ([]byte, error)
}

// Errors from opening sealed values. They never contain the value.
var (
	ErrPlaintextRefused = errors.New("plaintext value refused: sealing is required (allow_plaintext_values is off)")
	ErrUnknownKeyID     = errors.New("sealing key not in keyring")
	ErrOpenFailed       = errors.New("sealed value failed authentication (wrong key, tampered, or bound to another event)")
	// ErrUnsupportedAlg: the value is well-formed but sealed with an
	// algorithm this opener does not handle (an A256GCM-KMS value given to
	// the local keyring, for example). Configure the matching opener, or
	// combine openers with Multi.
	ErrUnsupportedAlg = errors.New("sealed value's algorithm is not handled by this opener")
)

// Keyring holds AES-256 sealing keys. New values are sealed with the active
// key; every key stays available to open retained history. It is safe for
// concurrent use.
type Keyring struct {
	mu             sync.RWMutex
	active         string
	aeads          map[string]cipher.AEAD
	allowPlaintext bool
}

// KeyringFile is the on-disk keyring format:
//
//	{"active": "k2", "keys": {"k1": "<base64 32 bytes>", "k2": "<base64 32 bytes>"}}
type KeyringFile struct {
	Active string            `json:"active"`
	Keys   map[string]string `json:"keys"`
}

// NewKeyring builds a keyring from raw keys. active must be one of keys.
func NewKeyring(active string, keys map[string][]byte) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("keyring: no keys")
	}
	kr := &Keyring{active: active, aeads: make(map[string]cipher.AEAD, len(keys))}
	for kid, k := range keys {
		if err := ValidateID("keyring kid", kid); err != nil {
			return nil, fmt.Errorf("keyring: %w", err)
		}
		if len(k) != 32 {
			return nil, fmt.Errorf("keyring: key %q is %d bytes, want 32", kid, len(k))
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("keyring: key %q: %w", kid, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("keyring: key %q: %w", kid, err)
		}
		kr.aeads[kid] = aead
	}
	if _, ok := kr.aeads[active]; !ok {
		return nil, fmt.Errorf("keyring: active key %q is not in the keyring", active)
	}
	return kr, nil
}

// ParseKeyring decodes the KeyringFile format.
func ParseKeyring(b []byte) (*Keyring, error) {
	var f KeyringFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("keyring: malformed JSON or unknown field")
	}
	keys := make(map[string][]byte, len(f.Keys))
	for kid, enc := range f.Keys {
		k, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			return nil, fmt.Errorf("keyring: key %q is not base64", kid)
		}
		keys[kid] = k
	}
	return NewKeyring(f.Active, keys)
}

// LoadKeyring reads a keyring file.
func LoadKeyring(path string) (*Keyring, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	return ParseKeyring(b)
}

// GenerateKeyringFile creates a keyring file with one fresh key, readable by
// its owner only. It fails if the file exists.
func GenerateKeyringFile(path, kid string) error {
	f, err := NewKeyringFile(kid)
	if err != nil {
		return err
	}
	b, _ := json.MarshalIndent(f, "", "  ")
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	if _, err := fh.Write(append(b, '\n')); err != nil {
		fh.Close()
		return fmt.Errorf("keyring: %w", err)
	}
	return fh.Close()
}

// NewKeyringFile returns a keyring with one fresh random key.
func NewKeyringFile(kid string) (*KeyringFile, error) {
	if err := ValidateID("kid", kid); err != nil {
		return nil, err
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	return &KeyringFile{Active: kid, Keys: map[string]string{kid: base64.StdEncoding.EncodeToString(k)}}, nil
}

// AllowPlaintext makes Open accept AlgPlaintext values. Development only.
func (kr *Keyring) AllowPlaintext(allow bool) {
	kr.mu.Lock()
	kr.allowPlaintext = allow
	kr.mu.Unlock()
}

// Active returns the id of the key new values are sealed with.
func (kr *Keyring) Active() string {
	kr.mu.RLock()
	defer kr.mu.RUnlock()
	return kr.active
}

// KeyIDs lists the keyring's key ids, sorted.
func (kr *Keyring) KeyIDs() []string {
	kr.mu.RLock()
	defer kr.mu.RUnlock()
	ids := make([]string, 0, len(kr.aeads))
	for id := range kr.aeads {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Seal encrypts plaintext with the active key, bound to b.
func (kr *Keyring) Seal(_ context.Context, plaintext []byte, b Binding) (*SealedValue, error) {
	nonce, err := newNonce()
	if err != nil {
		return nil, err
	}
	return kr.sealWithNonce(plaintext, b, nonce)
}

// newNonce draws a random 12-byte GCM nonce.
func newNonce() ([]byte, error) {
	nonce := make([]byte, 12)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return nonce, nil
}

// checkSeal checks what every AES-GCM seal checks: the value's size, the
// nonce's and the binding.
func checkSeal(plaintext []byte, b Binding, nonce []byte) error {
	if len(plaintext) > MaxValueBytes {
		return fmt.Errorf("seal: value is %d bytes, larger than %d", len(plaintext), MaxValueBytes)
	}
	if len(nonce) != 12 {
		return fmt.Errorf("seal: nonce is %d bytes, want 12", len(nonce))
	}
	if err := b.validate(); err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	return nil
}

func (kr *Keyring) sealWithNonce(plaintext []byte, b Binding, nonce []byte) (*SealedValue, error) {
	if err := checkSeal(plaintext, b, nonce); err != nil {
		return nil, err
	}
	kr.mu.RLock()
	kid, aead := kr.active, kr.aeads[kr.active]
	kr.mu.RUnlock()
	ct := aead.Seal(nil, nonce, plaintext, b.AAD(AlgA256GCM, kid))
	return &SealedValue{Alg: AlgA256GCM, KID: kid, Nonce: nonce, Ciphertext: ct}, nil
}

// Open decrypts sv and checks that it is bound to b.
func (kr *Keyring) Open(_ context.Context, sv *SealedValue, b Binding) ([]byte, error) {
	if sv == nil {
		return nil, errors.New("open: no sealed value")
	}
	if err := sv.validate("value"); err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	if err := b.validate(); err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	if !kr.OpensAlg(sv.Alg) {
		return nil, fmt.Errorf("open: %s values are opened by their KMS opener, not the local keyring: %w", sv.Alg, ErrUnsupportedAlg)
	}
	kr.mu.RLock()
	allow := kr.allowPlaintext
	aead, ok := kr.aeads[sv.KID]
	kr.mu.RUnlock()
	if sv.Alg == AlgPlaintext {
		if !allow {
			return nil, ErrPlaintextRefused
		}
		return append([]byte(nil), sv.Ciphertext...), nil
	}
	if !ok {
		return nil, fmt.Errorf("open: kid %q: %w", sv.KID, ErrUnknownKeyID)
	}
	pt, err := aead.Open(nil, sv.Nonce, sv.Ciphertext, b.AAD(sv.Alg, sv.KID))
	if err != nil {
		return nil, ErrOpenFailed
	}
	return pt, nil
}

// OpensAlg reports whether the keyring opens values sealed with alg:
// AlgA256GCM, and AlgPlaintext (refused unless AllowPlaintext).
func (kr *Keyring) OpensAlg(alg string) bool {
	return alg == AlgA256GCM || alg == AlgPlaintext
}

// PlaintextValue wraps a value without encryption. Only a keyring that
// allows plaintext will open it.
func PlaintextValue(v []byte) *SealedValue {
	return &SealedValue{Alg: AlgPlaintext, Ciphertext: append([]byte{}, v...)}
}

// WrapKey encrypts a data key with the active keyring key and a fresh
// nonce, with aad as associated data, for key wrappers built on the
// keyring (package seal). It returns the active kid and nonce || ct.
func (kr *Keyring) WrapKey(dataKey, aad []byte) (kid string, blob []byte, err error) {
	nonce := make([]byte, 12)
	if _, err := rand.Read(nonce); err != nil {
		return "", nil, fmt.Errorf("wrap: %w", err)
	}
	kr.mu.RLock()
	kid, aead := kr.active, kr.aeads[kr.active]
	kr.mu.RUnlock()
	return kid, aead.Seal(nonce, nonce, dataKey, aad), nil
}

// UnwrapKey is the inverse of WrapKey with the key kid: ErrUnknownKeyID
// when the keyring does not hold it, ErrOpenFailed when blob does not
// authenticate.
func (kr *Keyring) UnwrapKey(kid string, blob, aad []byte) ([]byte, error) {
	kr.mu.RLock()
	aead, ok := kr.aeads[kid]
	kr.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("unwrap: kid %q: %w", kid, ErrUnknownKeyID)
	}
	if len(blob) < 12+16 {
		return nil, fmt.Errorf("unwrap: wrapped key is too short: %w", ErrOpenFailed)
	}
	pt, err := aead.Open(nil, blob[:12], blob[12:], aad)
	if err != nil {
		return nil, ErrOpenFailed
	}
	return pt, nil
}
