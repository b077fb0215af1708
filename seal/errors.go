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
// replaces every run of 20 or more base64 characters (a ciphertext, a key,
// a token) by "[redacted]" and bounds the length. With paths, "/" ends a
// run, so resource names ("projects/p/locations/l/...") survive; without,
// "/" is a base64 character like any other.
func Sanitize(s string, paths bool) string {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return "[message withheld: not printable]"
		}
	}
	var b strings.Builder
	run := 0
	flush := func(end int) {
		if run >= 20 {
			b.WriteString("[redacted]")
		} else {
			b.WriteString(s[end-run : end])
		}
		run = 0
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAlnum(c) || c == '+' || c == '=' || (c == '/' && !paths) {
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

// FirstLine returns s up to its first line break.
func FirstLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}

func isAlnum(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}
