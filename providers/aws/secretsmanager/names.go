package secretsmanager

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/google/uuid"
)

// TokenNamespace is the UUIDv5 namespace of ClientRequestToken: keyrelay's
// tokens are UUIDv5(TokenNamespace, idempotency key). It never changes, so
// every keyrelay process, and every retry, derives the same token (and
// VersionId) from one event id.
var TokenNamespace = uuid.MustParse("87bbd0f5-5294-5526-9fb9-452d32645032")

// ClientRequestToken returns the token, and so the VersionId, keyrelay
// sends for an idempotency key (the event id): a UUIDv5 in TokenNamespace.
// An empty key gives "": the SDK then generates a random token.
func ClientRequestToken(idempotencyKey string) string {
	if idempotencyKey == "" {
		return ""
	}
	return uuid.NewSHA1(TokenNamespace, []byte(idempotencyKey)).String()
}

// nameHashLen is the number of hex digits of SHA-256 in a mapped name.
const nameHashLen = 32

// SecretID maps a keyrelay secret name to the AWS secret name. A name AWS
// accepts as it is (1 to 512 bytes of A-Z a-z 0-9 and /_+=.@-) is used
// unchanged, so names are the ones LiteLLM writes. Any other name becomes
// its allowed characters (others replaced by '_'), cut to fit, then '@' and
// 32 hex digits of its SHA-256: deterministic, within AWS's rules, and
// distinct for distinct names (unless someone names a secret after another
// name's mapping on purpose).
func SecretID(name string) string {
	if awsNameOK(name) {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	suffix := "@" + hex.EncodeToString(sum[:])[:nameHashLen]
	b := make([]byte, 0, MaxAWSNameLength)
	for i := 0; i < len(name) && len(b) < MaxAWSNameLength-len(suffix); i++ {
		c := name[i]
		if !awsNameByte(c) {
			c = '_'
		}
		b = append(b, c)
	}
	return string(b) + suffix
}

func awsNameOK(name string) bool {
	if name == "" || len(name) > MaxAWSNameLength {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !awsNameByte(name[i]) {
			return false
		}
	}
	return true
}

func awsNameByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '/', '_', '+', '=', '.', '@', '-':
		return true
	}
	return false
}

// versionIDOK reports whether v can be a VersionId (32 to 64 characters);
// anything else names no version.
func versionIDOK(v string) bool { return len(v) >= 32 && len(v) <= 64 }
