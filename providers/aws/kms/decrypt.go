package kms

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/seal"
)

// ValuePrefix marks a value encrypted with AWS KMS, as LiteLLM writes it:
// "aws_kms/<base64 CiphertextBlob>".
const ValuePrefix = "aws_kms/"

// EnvPrefix marks an environment variable holding a KMS ciphertext
// (LiteLLM's LITELLM_SECRET_AWS_KMS_<NAME>, matched case-insensitively);
// its decrypted value is exposed as <NAME>.
const EnvPrefix = "LITELLM_SECRET_AWS_KMS_"

// EnvEnable is the variable that turns LiteLLM's environment decryption on
// when it is exactly "True" (see EnvEnabled).
const EnvEnable = "USE_AWS_KMS"

// IsKMSValue reports whether v is an "aws_kms/..." value.
func IsKMSValue(v string) bool { return strings.HasPrefix(v, ValuePrefix) }

// EnvEnabled reports whether LiteLLM would decrypt the environment:
// USE_AWS_KMS is exactly "True". getenv nil means no environment.
func EnvEnabled(getenv func(string) string) bool {
	return getenv != nil && getenv(EnvEnable) == "True"
}

// IsKMSEnv reports whether LiteLLM's decrypt_env_var decrypts the variable
// name=value: the lower-cased name starts with "litellm_secret_aws_kms", or
// the value starts with "aws_kms/".
func IsKMSEnv(name, value string) bool {
	return pyLowerHasPrefix(name, "litellm_secret_aws_kms") || IsKMSValue(value)
}

// EnvName returns the name a decrypted variable is exposed under, as
// LiteLLM computes it: every occurrence of "litellm_secret_aws_kms_" in
// name, matched case-insensitively, removed (re.sub with re.IGNORECASE).
// LITELLM_SECRET_AWS_KMS_DATABASE_URL becomes DATABASE_URL; a variable
// that only matched by its aws_kms/ value keeps its name.
func EnvName(name string) string {
	const pat = "litellm_secret_aws_kms_"
	var b strings.Builder
	for i := 0; i < len(name); {
		if n := pyFoldMatch(name[i:], pat); n > 0 {
			i += n
			continue
		}
		_, size := utf8.DecodeRuneInString(name[i:])
		b.WriteString(name[i : i+size])
		i += size
	}
	return b.String()
}

// Decrypter decrypts values that LiteLLM reads through AWS KMS:
// "aws_kms/<base64>" values and LITELLM_SECRET_AWS_KMS_* environment
// variables. It is safe for concurrent use and caches nothing.
type Decrypter struct {
	api     API
	keyID   string
	timeout time.Duration
}

// NewDecrypter returns a Decrypter over api. keyID, when not empty, is
// passed to KMS Decrypt as KeyId so only ciphertexts of that key decrypt
// (LiteLLM passes none; KMS then uses the key recorded in the ciphertext).
func NewDecrypter(api API, keyID string) *Decrypter {
	return &Decrypter{api: api, keyID: keyID, timeout: seal.CallTimeoutDefault}
}

// Decrypt decrypts one value the way LiteLLM's AWSKeyManagementService_V2
// decrypt_value does:
//
//   - a value starting with "aws_kms/" has every "aws_kms/" removed; any
//     other value is taken as the base64 ciphertext itself;
//   - the base64 is decoded as Python's base64.b64decode does by default
//     (characters outside the alphabet are skipped, padding is required,
//     decoding stops at the padding);
//   - KMS Decrypt gets the CiphertextBlob alone: no encryption context, no
//     KeyId (unless the Decrypter was given one);
//   - the plaintext must be UTF-8 and loses leading and trailing
//     whitespace (Python's str.strip()).
//
// LiteLLM then turns "True"/"False" into booleans; Decrypt returns the
// text. Unlike LiteLLM's older get_secret path, a failure is an error, not
// a silent fallback to the ciphertext. Errors never contain the value.
func (d *Decrypter) Decrypt(ctx context.Context, value string) ([]byte, error) {
	if IsKMSValue(value) {
		value = strings.ReplaceAll(value, ValuePrefix, "")
	}
	blob, err := pyB64Decode(value)
	if err == nil && len(blob) == 0 {
		// boto3 refuses an empty CiphertextBlob before sending it.
		err = errors.New("empty ciphertext")
	}
	if err != nil {
		return nil, providers.NewError(Provider, "Decrypt", d.keyID, providers.Permanent,
			&callError{msg: err.Error(), causes: []error{ErrMalformedValue, providers.ErrInvalid}})
	}
	in := &awskms.DecryptInput{CiphertextBlob: blob}
	if d.keyID != "" {
		in.KeyId = aws.String(d.keyID)
	}
	cctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	out, err := d.api.Decrypt(cctx, in)
	if err != nil {
		return nil, wrapErr("Decrypt", d.keyID, err)
	}
	pt := out.Plaintext
	if !utf8.Valid(pt) {
		clear(pt)
		return nil, providers.NewError(Provider, "Decrypt", d.keyID, providers.Permanent,
			&callError{msg: "decrypted value is not UTF-8", causes: []error{providers.ErrInvalid}})
	}
	return pyStrip(pt), nil
}

// DecryptEnv decrypts the environment as LiteLLM's decrypt_env_var does:
// every variable for which IsKMSEnv holds is decrypted with Decrypt and
// returned under EnvName(name). environ is in os.Environ form
// ("NAME=value"); for a name given twice the first occurrence counts, and
// when two variables map to the same name the later one wins, as in
// LiteLLM. The first failure fails the whole call (LiteLLM raises), naming
// the variable but never its value. Callers that follow LiteLLM only call
// it when EnvEnabled.
func (d *Decrypter) DecryptEnv(ctx context.Context, environ []string) (map[string]string, error) {
	out := map[string]string{}
	seen := map[string]bool{}
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || name == "" || seen[name] {
			continue
		}
		seen[name] = true
		if !IsKMSEnv(name, value) {
			continue
		}
		pt, err := d.Decrypt(ctx, value)
		if err != nil {
			return nil, fmt.Errorf("environment variable %s: %w", name, err)
		}
		out[EnvName(name)] = string(pt)
		clear(pt)
	}
	return out, nil
}

// ---- Python semantics LiteLLM relies on ----

// pyB64Decode mirrors Python's base64.b64decode(s) with validate=False
// (binascii.a2b_base64 in non-strict mode): s must be ASCII; characters
// outside the standard alphabet are skipped; a complete padding sequence
// ends the input; a final group of one character is an error, and two or
// three characters without padding are "Incorrect padding".
func pyB64Decode(s string) ([]byte, error) {
	out := make([]byte, 0, len(s)*3/4)
	var quad, pads int
	var left byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 {
			return nil, errors.New("string argument should contain only ASCII characters")
		}
		if c == '=' {
			if quad >= 2 {
				pads++
				if quad+pads >= 4 {
					return out, nil
				}
			}
			continue
		}
		v, ok := b64Value(c)
		if !ok {
			continue
		}
		pads = 0
		switch quad {
		case 0:
			quad, left = 1, v
		case 1:
			quad = 2
			out = append(out, left<<2|v>>4)
			left = v & 0x0f
		case 2:
			quad = 3
			out = append(out, left<<4|v>>2)
			left = v & 0x03
		case 3:
			quad = 0
			out = append(out, left<<6|v)
			left = 0
		}
	}
	switch quad {
	case 0:
		return out, nil
	case 1:
		return nil, errors.New("invalid base64: the number of data characters cannot be 1 more than a multiple of 4")
	}
	return nil, errors.New("invalid base64: incorrect padding")
}

func b64Value(c byte) (byte, bool) {
	switch {
	case c >= 'A' && c <= 'Z':
		return c - 'A', true
	case c >= 'a' && c <= 'z':
		return c - 'a' + 26, true
	case c >= '0' && c <= '9':
		return c - '0' + 52, true
	case c == '+':
		return 62, true
	case c == '/':
		return 63, true
	}
	return 0, false
}

// pyIsSpace is Python's str.isspace for one character: Go's unicode.IsSpace
// plus the information separators U+001C..U+001F.
func pyIsSpace(r rune) bool { return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f) }

// pyStrip is Python's str.strip() on valid UTF-8, returning a sub-slice.
func pyStrip(b []byte) []byte {
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if !pyIsSpace(r) {
			break
		}
		b = b[size:]
	}
	for len(b) > 0 {
		r, size := utf8.DecodeLastRune(b)
		if !pyIsSpace(r) {
			break
		}
		b = b[:len(b)-size]
	}
	return b
}

// pyLowerHasPrefix reports whether Python's name.lower() starts with the
// ASCII lower-case prefix. Python lower-cases U+212A KELVIN SIGN to "k" and
// U+0130 to "i" followed by U+0307; every other character that lower-cases
// into ASCII is an ASCII letter.
func pyLowerHasPrefix(name, prefix string) bool {
	var low []byte
	for _, r := range name {
		if len(low) >= len(prefix) {
			break
		}
		switch {
		case r < 0x80:
			low = append(low, byte(unicode.ToLower(r)))
		case r == 0x212a:
			low = append(low, 'k')
		case r == 0x130:
			low = append(low, 'i', 0xff) // "i" + U+0307, which never matches
		default:
			low = append(low, 0xff)
		}
	}
	return len(low) >= len(prefix) && string(low[:len(prefix)]) == prefix
}

// pyFoldMatch reports how many bytes of s match the ASCII lower-case
// pattern the way Python's re does with re.IGNORECASE on a str pattern,
// or 0. Besides ASCII case, Python's re lets "i" match U+0130 and U+0131,
// "s" match U+017F and "k" match U+212A.
func pyFoldMatch(s, pat string) int {
	n := 0
	for i := 0; i < len(pat); i++ {
		if n >= len(s) {
			return 0
		}
		r, size := utf8.DecodeRuneInString(s[n:])
		p := rune(pat[i])
		switch {
		case r < 0x80 && unicode.ToLower(r) == p:
		case p == 'i' && (r == 0x130 || r == 0x131):
		case p == 's' && r == 0x17f:
		case p == 'k' && r == 0x212a:
		default:
			return 0
		}
		n += size
	}
	return n
}
