package keyvault

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Key Vault's naming rules for secrets: 1..127 characters from
// [0-9a-zA-Z-], compared case-insensitively.
const (
	// MaxKVNameLength is Key Vault's limit on secret names.
	MaxKVNameLength = 127
	// MaxNameLength is the longest keyrelay name accepted, in bytes.
	MaxNameLength = 4096
	// nameHashLen is the number of hex digits of SHA-256 appended to a
	// mapped name (64 bits).
	nameHashLen = 16
)

// KVName maps a keyrelay secret name to a Key Vault secret name,
// deterministically and without collisions:
//
//   - A name made only of lower-case ASCII letters, digits and single
//     dashes ("--" never appears), at most 127 characters, is used as is,
//     so names a person or LiteLLM chose stay readable.
//   - Every other name becomes: the name lower-cased, each run of
//     characters outside [a-z0-9] replaced by one dash, leading and trailing
//     dashes trimmed, cut to fit, then "--" and the first 16 hex digits of
//     the SHA-256 of the original name (empty becomes "k").
//
// Mapped names always contain "--" and names used as is never do, so the
// two sets cannot meet; two mapped names only meet if 64 bits of SHA-256
// collide. Every output is lower case, so Key Vault's case-insensitive
// names do not merge "A-b" with "a-b" (the upper-case one is mapped). The
// mapping is one-way: Get returns the caller's name, and Put records the
// original in the keyrelay-name tag when it fits (256 characters).
func KVName(name string) string {
	if kvNameAsIs(name) {
		return name
	}
	s := strings.Trim(mapChars(name), "-")
	if keep := MaxKVNameLength - 2 - nameHashLen; len(s) > keep {
		s = strings.TrimRight(s[:keep], "-")
	}
	if s == "" {
		s = "k"
	}
	sum := sha256.Sum256([]byte(name))
	return s + "--" + hex.EncodeToString(sum[:])[:nameHashLen]
}

func kvNameAsIs(name string) bool {
	if name == "" || len(name) > MaxKVNameLength || strings.Contains(name, "--") {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// versionOK reports whether v looks like a Key Vault version id (32 hex
// digits in practice; any short alphanumeric string is passed on).
func versionOK(v string) bool {
	if len(v) == 0 || len(v) > 64 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// mapChars lowers letters, keeps digits and turns every run of other bytes
// into one dash: the character mapping of KVName, before trimming and the
// hash.
func mapChars(name string) string {
	var b strings.Builder
	dash := false
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c >= 'a' && c <= 'z' || c >= '0' && c <= '9':
			b.WriteByte(c)
			dash = false
		case c >= 'A' && c <= 'Z':
			b.WriteByte(c + 'a' - 'A')
			dash = false
		default:
			if !dash {
				b.WriteByte('-')
				dash = true
			}
		}
	}
	return b.String()
}
