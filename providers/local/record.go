package local

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/keyrelay/keyrelay/providers"
)

// recordFormat is the version of the on-disk record layout.
const recordFormat = 1

// record is everything stored for one secret: one JSON file in file mode.
// Metadata is plaintext; each version's value is AES-256-GCM ciphertext
// whose associated data binds the secret name and the version.
type record struct {
	Format      int               `json:"format"`
	Name        string            `json:"name"`
	KeyID       string            `json:"key_id"`
	Description string            `json:"description,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
	CreatedAt   time.Time         `json:"created_at"`
	UpdatedAt   time.Time         `json:"updated_at"`
	Deleted     bool              `json:"deleted,omitempty"`
	DeletedAt   *time.Time        `json:"deleted_at,omitempty"`
	// Versions are "1", "2", ... in order; the last one is current.
	Versions []version `json:"versions"`
}

type version struct {
	Version        string    `json:"version"`
	IdempotencyKey string    `json:"idempotency_key,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
	Nonce          []byte    `json:"nonce"`
	Ciphertext     []byte    `json:"ciphertext"`
	// RetiredAt is when Retire dropped the version's value (Nonce and
	// Ciphertext are then empty); nil for a live version.
	RetiredAt *time.Time `json:"retired_at,omitempty"`
}

func (v *version) retired() bool { return v.RetiredAt != nil }

func (r *record) clone() *record {
	if r == nil {
		return nil
	}
	c := *r
	// The tags are shared: every change replaces the map (mergeTags), and
	// what leaves the provider is a copy (Get). The versions are shared
	// too: a version is never changed in place except by retire, which
	// copies first (writableVersion), and a new one is appended only
	// under the store's lock on the name (Put), past the length every
	// other holder sees. A full copy of every version on each load and
	// save made a write cost grow with the key's history; a clipped share
	// still copied them on every append.
	c.Versions = r.Versions
	if r.DeletedAt != nil {
		t := *r.DeletedAt
		c.DeletedAt = &t
	}
	return &c
}

// writableVersion returns the version named v in a copy of the versions
// this record owns alone (see clone), or nil.
func (r *record) writableVersion(v string) *version {
	if r.find(v) == nil {
		return nil
	}
	r.Versions = slices.Clone(r.Versions)
	return r.find(v)
}

func (r *record) current() *version { return &r.Versions[len(r.Versions)-1] }

// find returns the version named v, or nil.
func (r *record) find(v string) *version {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > len(r.Versions) || r.Versions[n-1].Version != v {
		return nil
	}
	return &r.Versions[n-1]
}

// check verifies the structure of a record read for name.
func (r *record) check(name string) error {
	switch {
	case r.Format != recordFormat:
		return fmt.Errorf("%w: unknown format %d", ErrCorrupt, r.Format)
	case r.Name != name:
		return fmt.Errorf("%w: file holds another secret", ErrCorrupt)
	case r.KeyID == "":
		return fmt.Errorf("%w: no key id", ErrCorrupt)
	case len(r.Versions) == 0:
		return fmt.Errorf("%w: no versions", ErrCorrupt)
	}
	for i, v := range r.Versions {
		if v.Version != strconv.Itoa(i+1) {
			return fmt.Errorf("%w: version %d is numbered %q", ErrCorrupt, i+1, v.Version)
		}
		if v.retired() {
			if i == len(r.Versions)-1 {
				return fmt.Errorf("%w: the current version %s is retired", ErrCorrupt, v.Version)
			}
			if len(v.Nonce) != 0 || len(v.Ciphertext) != 0 {
				return fmt.Errorf("%w: retired version %s still holds a ciphertext", ErrCorrupt, v.Version)
			}
			continue
		}
		if len(v.Nonce) != nonceSize || len(v.Ciphertext) < tagSize {
			return fmt.Errorf("%w: version %s: bad nonce or ciphertext length", ErrCorrupt, v.Version)
		}
	}
	return nil
}

func (r *record) versionInfos() []providers.VersionInfo {
	out := make([]providers.VersionInfo, len(r.Versions))
	for i, v := range r.Versions {
		out[i] = providers.VersionInfo{
			Version:        v.Version,
			IdempotencyKey: v.IdempotencyKey,
			CreatedAt:      v.CreatedAt,
			Current:        i == len(r.Versions)-1,
			Destroyed:      v.retired(),
		}
	}
	return out
}

func isOwnerTag(k string) bool {
	return k == providers.ManagedByTag || k == providers.TeamTag || k == providers.KeyTag
}

// mergeTags computes a secret's new tags. Extra tags come from extra, or
// from old when keepExtra; callers cannot set ownership tags through them.
// The ownership tags name o; without adopt, an owner field o leaves empty
// keeps the old value (a request by "any keyrelay owner" does not erase
// the recorded team or key). When the result equals old, old itself is
// returned: a record's tags are never changed in place (see record.clone),
// and a rotation that changes no tag then builds no map.
func mergeTags(old map[string]string, o providers.Owner, extra map[string]string, keepExtra, adopt bool) map[string]string {
	src := extra
	if keepExtra {
		src = old
	}
	kept := providers.KeptOwner(old, o, adopt)
	if sameTags(old, src, kept) {
		return old
	}
	t := make(map[string]string, len(src)+3)
	for k, v := range src {
		if !isOwnerTag(k) {
			t[k] = v
		}
	}
	providers.SetOwnerTags(t, kept)
	return t
}

// sameTags reports whether old equals what mergeTags builds from src and
// owner: src's tags other than the ownership tags, and owner's.
func sameTags(old, src map[string]string, owner providers.Owner) bool {
	if old[providers.ManagedByTag] != providers.ManagedByValue {
		return false
	}
	n := 1
	for _, ot := range [...]struct{ tag, want string }{{providers.TeamTag, owner.TeamID}, {providers.KeyTag, owner.KeyID}} {
		v, ok := old[ot.tag]
		if ot.want == "" {
			if ok {
				return false
			}
			continue
		}
		if !ok || v != ot.want {
			return false
		}
		n++
	}
	for k, v := range src {
		if isOwnerTag(k) {
			continue
		}
		if w, ok := old[k]; !ok || w != v {
			return false
		}
		n++
	}
	return len(old) == n
}

const (
	keySize   = 32
	nonceSize = 12
	tagSize   = 16
)

// sealer encrypts and decrypts values with one AES-256-GCM key.
type sealer struct {
	aead  cipher.AEAD
	keyID string
}

func newSealer(key []byte) (*sealer, error) {
	if len(key) != keySize {
		return nil, fmt.Errorf("key is %d bytes, want %d", len(key), keySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead, keyID: keyID(key)}, nil
}

// keyID is a public identifier of key: a truncated hash, enough to tell
// keys apart in error messages, useless for recovering the key.
func keyID(key []byte) string {
	h := sha256.New()
	h.Write([]byte("keyrelay-local key id\x00"))
	h.Write(key)
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// aad binds a ciphertext to its secret name and version, so it cannot be
// moved to another secret or version undetected.
func aad(name, ver string) []byte {
	b := make([]byte, 0, 32+len(name)+len(ver))
	b = append(b, "keyrelay-local/v1\x00"...)
	b = binary.AppendUvarint(b, uint64(len(name)))
	b = append(b, name...)
	b = append(b, ver...)
	return b
}

func (s *sealer) seal(name, ver string, value []byte) (nonce, ct []byte, err error) {
	nonce = make([]byte, nonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, nil, err
	}
	return nonce, s.aead.Seal(nil, nonce, value, aad(name, ver)), nil
}

func (s *sealer) open(name string, v *version) ([]byte, error) {
	pt, err := s.aead.Open(nil, v.Nonce, v.Ciphertext, aad(name, v.Version))
	if err != nil {
		// Never wrap the cipher's error: keep the message fixed.
		return nil, fmt.Errorf("%w: version %s failed authentication (tampered, or moved from another secret or version)", ErrCorrupt, v.Version)
	}
	if pt == nil {
		pt = []byte{}
	}
	return pt, nil
}
