package seal

import (
	"errors"
	"strings"

	"github.com/keyrelay/keyrelay/providers"
)

// ErrNoKey: Seal or Rewrap on a Sealer whose wrapper has no key configured
// for sealing (it only opens).
var ErrNoKey = errors.New("no key-encryption key configured for sealing")

// sealError is the cause inside the Sealer's *providers.Error: a message
// that names no secret, and the sentinels callers branch on.
type sealError struct {
	msg    string
	causes []error
}

func (e *sealError) Error() string   { return e.msg }
func (e *sealError) Unwrap() []error { return e.causes }

func asProviderError(err error, pe **providers.Error) bool { return errors.As(err, pe) }

// Sanitize keeps a KMS's error message only if it is printable ASCII,
// replaces every run of tokenThreshold or more base64 or base64url
// characters (a ciphertext, a key, a token) by "[redacted]" and bounds the
// length. With paths, "/" ends a run, so resource names
// ("projects/p/locations/l/...") survive; without, "/" is a base64
// character like any other. A "." between two such characters joins their
// runs, so a JWT's dotted parts go as one.
//
// "-" and "_" are base64url characters, so a token holding them is redacted
// whole: counting them as separators let a token's tail past its first "-"
// or "_" through. A run that splits, at those and the other non-alphanumeric
// run characters, into words of readable shape only (lowercase, UPPERCASE,
// Capitalized or camelCase, with trailing digits; numbers; a UUID) is
// kept, so hyphenated-names, snake_case identifiers, dotted host names and
// ARNs with a key id stay readable. One random segment of 8 characters has
// such a shape with a chance under 1%, so a token's segments practically
// never all do.
func Sanitize(s string, paths bool) string {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return "[message withheld: not printable]"
		}
	}
	inRun := func(c byte) bool {
		return isAlnum(c) || c == '+' || c == '=' || c == '-' || c == '_' || (c == '/' && !paths)
	}
	var b strings.Builder
	run := 0
	flush := func(end int) {
		if t := s[end-run : end]; run >= tokenThreshold && !readable(t) {
			b.WriteString("[redacted]")
		} else {
			b.WriteString(t)
		}
		run = 0
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if inRun(c) || (c == '.' && run > 0 && i+1 < len(s) && inRun(s[i+1])) {
			run++
			continue
		}
		flush(i)
		b.WriteByte(c)
	}
	flush(len(s))
	out := b.String()
	if len(out) > 240 {
		out = out[:240] + "..."
	}
	return out
}

// tokenThreshold is the shortest run Sanitize redacts: 20 characters are
// 15 bytes in base64, 10 in hex, less than any key or token it hides.
const tokenThreshold = 20

// readable reports whether a run of base64url characters consists of
// words of readable shape only (see Sanitize), each shorter than
// tokenThreshold.
func readable(run string) bool {
	segs := strings.FieldsFunc(run, func(r rune) bool { return r > 0x7f || !isAlnum(byte(r)) })
	for i := 0; i < len(segs); i++ {
		if isUUIDAt(segs, i) {
			i += 4
			continue
		}
		if len(segs[i]) >= tokenThreshold || !wordShaped(segs[i]) {
			return false
		}
	}
	return true
}

// wordShaped: digits only, or letters in the shape of a word (all
// lowercase, all UPPERCASE, or Capitalized/camelCase humps of one capital
// and lowercase letters, no two of them with a single one in a row)
// followed by digits.
func wordShaped(w string) bool {
	i := 0
	for i < len(w) && isLetter(w[i]) {
		i++
	}
	letters, digits := w[:i], w[i:]
	for j := 0; j < len(digits); j++ {
		if digits[j] < '0' || digits[j] > '9' {
			return false
		}
	}
	if letters == "" || strings.ToUpper(letters) == letters || strings.ToLower(letters) == letters {
		return true
	}
	// camelCase or Capitalized: each capital starts a hump of lowercase
	// letters ("getSecretValue", "useToDecrypt", "Vault"). A hump without
	// one ("xY") or two short humps in a row ("AbCdEf", alternating case)
	// is not a word.
	run, prevShort := 0, false // lowercase letters in this hump; the previous hump had one
	for j := 0; j <= len(letters); j++ {
		if j < len(letters) && !isUpper(letters[j]) {
			run++
			continue
		}
		if j > 0 { // a hump (or the lowercase start) ends here
			if run == 0 && isUpper(letters[j-1]) {
				return false
			}
			short := run == 1
			if short && prevShort {
				return false
			}
			prevShort = short
		}
		run = 0
	}
	return true
}

// isUUIDAt: segs[i:i+5] are a UUID's hex groups (8-4-4-4-12), such as the
// key id in an AWS KMS key ARN.
func isUUIDAt(segs []string, i int) bool {
	if len(segs) < i+5 {
		return false
	}
	for j, n := range []int{8, 4, 4, 4, 12} {
		g := segs[i+j]
		if len(g) != n || strings.Trim(strings.ToLower(g), "0123456789abcdef") != "" {
			return false
		}
	}
	return true
}

// FirstLine returns s up to its first line break.
func FirstLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}

func isAlnum(c byte) bool {
	return isLetter(c) || (c >= '0' && c <= '9')
}

func isLetter(c byte) bool { return (c >= 'a' && c <= 'z') || isUpper(c) }

func isUpper(c byte) bool { return c >= 'A' && c <= 'Z' }
