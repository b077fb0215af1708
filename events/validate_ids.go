package events

import (
	"strings"
	"unicode/utf8"
)

// MaxIDLen bounds team ids, key ids and event ids.
const MaxIDLen = 128

// MaxAliasLen bounds key aliases.
const MaxAliasLen = 256

// ValidateID checks a team, key or event id. Ids become subject tokens and
// provider path segments, so only letters, digits and "_-@+=:" are allowed,
// the first character must be a letter or digit, and the length is bounded.
// Field names the id in the returned error.
func ValidateID(field, id string) error {
	// Nearly every id is valid: one pass over its bytes with a table says
	// so. Anything else (including every non-ASCII byte, which the table
	// refuses) takes the rune-by-rune check, which names the fault.
	if n := len(id); n > 0 && n <= MaxIDLen && isAlnum(rune(id[0])) {
		i := 1
		for i < n && idByte[id[i]] {
			i++
		}
		if i == n {
			return nil
		}
	}
	return validateIDSlow(field, id)
}

// idByte is true for the bytes an id may hold: ASCII letters, digits and
// "_-@+=:" (isIDRune).
var idByte = func() (t [256]bool) {
	for c := range 128 {
		t[c] = isIDRune(rune(c))
	}
	return t
}()

// validateIDSlow is ValidateID rune by rune: it finds the first fault.
func validateIDSlow(field, id string) error {
	switch {
	case id == "":
		return invalid(field, "is required")
	case len(id) > MaxIDLen:
		return invalid(field, "is %d bytes, longer than %d", len(id), MaxIDLen)
	case strings.Contains(id, ".."):
		return invalid(field, `contains ".."`)
	}
	for i, r := range id {
		switch {
		case r == utf8.RuneError:
			return invalid(field, "is not valid UTF-8")
		case r < 0x20 || r == 0x7f:
			return invalid(field, "contains control character %U at byte %d", r, i)
		case r == '.':
			return invalid(field, "contains '.' at byte %d (dots separate subject tokens)", i)
		case r == '*' || r == '>':
			return invalid(field, "contains wildcard %q at byte %d", r, i)
		case r == ' ' || r == '\t':
			return invalid(field, "contains whitespace at byte %d", i)
		case r == '/' || r == '\\':
			return invalid(field, "contains path separator %q at byte %d", r, i)
		case isIDRune(r):
			if i == 0 && !isAlnum(r) {
				return invalid(field, "must start with a letter or digit")
			}
		default:
			return invalid(field, "contains %q at byte %d; allowed are letters, digits and _-@+=:", r, i)
		}
	}
	return nil
}

func isAlnum(r rune) bool {
	return (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
}

func isIDRune(r rune) bool {
	return isAlnum(r) || strings.ContainsRune("_-@+=:", r)
}

// validateText checks free text that is stored as metadata: valid UTF-8, no
// control characters (nor U+2028/U+2029, the Unicode line and paragraph
// separators), bounded.
func validateText(field, s string, max int) error {
	if len(s) > max {
		return invalid(field, "is %d bytes, longer than %d", len(s), max)
	}
	if !utf8.ValidString(s) {
		return invalid(field, "is not valid UTF-8")
	}
	for i, r := range s {
		if r < 0x20 || r == 0x7f {
			return invalid(field, "contains control character %U at byte %d", r, i)
		}
		if r == 0x2028 || r == 0x2029 {
			return invalid(field, "contains line or paragraph separator %U at byte %d", r, i)
		}
	}
	return nil
}
