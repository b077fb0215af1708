package jobs

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
)

// KeyFormat is the shape of generated values.
type KeyFormat struct {
	// Prefix starts every value. Default (the zero format): "sk-", as
	// LiteLLM's keys.
	Prefix string `json:"prefix"`
	// Bytes of crypto/rand entropy, written in unpadded base64url after
	// the prefix. Default: 16 (LiteLLM's secrets.token_urlsafe(16): 22
	// characters); at least 16.
	Bytes int `json:"bytes"`
}

// DefaultKeyFormat is LiteLLM's virtual key format.
var DefaultKeyFormat = KeyFormat{Prefix: "sk-", Bytes: 16}

// withDefaults: the zero format is DefaultKeyFormat; a format with a
// prefix and no size takes the default size.
func (f KeyFormat) withDefaults() KeyFormat {
	if f == (KeyFormat{}) {
		return DefaultKeyFormat
	}
	if f.Bytes == 0 {
		f.Bytes = DefaultKeyFormat.Bytes
	}
	return f
}

// Validate refuses formats too weak or too long for a key.
func (f KeyFormat) Validate() error {
	f = f.withDefaults()
	switch {
	case f.Bytes < 16:
		return fmt.Errorf("jobs: a generated key needs at least 16 random bytes, not %d", f.Bytes)
	case f.Bytes > 256 || len(f.Prefix) > 64:
		return fmt.Errorf("jobs: key format too long (at most 256 bytes of entropy and a 64-byte prefix)")
	}
	for _, c := range []byte(f.Prefix) {
		if c < 0x21 || c > 0x7e {
			return fmt.Errorf("jobs: the key prefix must be printable ASCII without spaces")
		}
	}
	return nil
}

// NewKey returns a fresh value in format f. The caller clears it after use.
func (f KeyFormat) NewKey() ([]byte, error) {
	f = f.withDefaults()
	b := make([]byte, f.Bytes)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	out := make([]byte, len(f.Prefix)+base64.RawURLEncoding.EncodedLen(len(b)))
	copy(out, f.Prefix)
	base64.RawURLEncoding.Encode(out[len(f.Prefix):], b)
	clear(b)
	return out, nil
}
