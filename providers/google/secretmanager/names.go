package secretmanager

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// MaxSecretIDLength is Secret Manager's limit on secret ids.
const MaxSecretIDLength = 255

// nameHashLen is the number of hex digits of SHA-256 in a mapped name.
const nameHashLen = 32

// SecretID maps a keyrelay secret name to a Secret Manager secret id. A
// name Secret Manager accepts as it is (1 to 255 of A-Z a-z 0-9 _ -) is
// used unchanged, so names match the ones LiteLLM writes. Any other name
// becomes its allowed characters (others replaced by '_'), cut to fit,
// then "--" and 32 hex digits of the name's SHA-256: deterministic, within
// Secret Manager's rules and distinct for distinct names (unless a secret
// is named after another name's mapping on purpose).
func SecretID(name string) string {
	if secretIDOK(name) {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	suffix := "--" + hex.EncodeToString(sum[:])[:nameHashLen]
	var b strings.Builder
	for i := 0; i < len(name) && b.Len() < MaxSecretIDLength-len(suffix); i++ {
		c := name[i]
		if !idByte(c) {
			c = '_'
		}
		b.WriteByte(c)
	}
	return b.String() + suffix
}

func secretIDOK(id string) bool {
	if id == "" || len(id) > MaxSecretIDLength {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !idByte(id[i]) {
			return false
		}
	}
	return true
}

func idByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}
