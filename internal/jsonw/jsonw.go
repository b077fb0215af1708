// Package jsonw appends JSON for the few records written on every event (a
// ledger entry, a confirmation) without reflection, byte for byte as
// encoding/json.Marshal writes them: HTML-safe string escaping, base64 for
// []byte, RFC 3339 times, sorted map keys.
//
// It exists because those two records were the worker's largest CPU cost:
// a reflection-driven encoder grows each new goroutine's stack on its
// first call (most of its time went to copying stacks). Every record
// written with it has a differential test against encoding/json.
package jsonw

import (
	"encoding/base64"
	"errors"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// Object appends the members of one JSON object. The zero value is not
// usable; start with Begin.
type Object struct {
	B     []byte
	first bool
	err   error
}

// Begin starts an object at the end of b.
func Begin(b []byte) Object { return Object{B: append(b, '{'), first: true} }

// End closes the object and returns the bytes, or the first error (a time
// encoding/json would refuse).
func (o *Object) End() ([]byte, error) {
	if o.err != nil {
		return nil, o.err
	}
	return append(o.B, '}'), nil
}

// Key appends a member name (a literal without characters to escape) and
// its colon.
func (o *Object) Key(name string) {
	if !o.first {
		o.B = append(o.B, ',')
	}
	o.first = false
	o.B = append(o.B, '"')
	o.B = append(o.B, name...)
	o.B = append(o.B, '"', ':')
}

// String appends a string member.
func (o *Object) String(name, v string) {
	o.Key(name)
	o.B = AppendString(o.B, v)
}

// StringOmit appends a string member unless v is empty (omitempty).
func (o *Object) StringOmit(name, v string) {
	if v != "" {
		o.String(name, v)
	}
}

// Uint appends an unsigned integer member.
func (o *Object) Uint(name string, v uint64) {
	o.Key(name)
	o.B = strconv.AppendUint(o.B, v, 10)
}

// UintOmit appends an unsigned integer member unless v is 0.
func (o *Object) UintOmit(name string, v uint64) {
	if v != 0 {
		o.Uint(name, v)
	}
}

// Int appends an integer member.
func (o *Object) Int(name string, v int64) {
	o.Key(name)
	o.B = strconv.AppendInt(o.B, v, 10)
}

// BoolOmit appends true, or nothing for false (omitempty).
func (o *Object) BoolOmit(name string, v bool) {
	if v {
		o.Key(name)
		o.B = append(o.B, "true"...)
	}
}

// Time appends a time member as encoding/json does (RFC 3339 with
// nanoseconds, refused outside years 0-9999).
func (o *Object) Time(name string, t time.Time) {
	o.Key(name)
	var err error
	if o.B, err = AppendTime(o.B, t); err != nil && o.err == nil {
		o.err = err
	}
}

// Bytes appends a []byte member as base64 (null for nil).
func (o *Object) Bytes(name string, v []byte) {
	o.Key(name)
	if v == nil {
		o.B = append(o.B, "null"...)
		return
	}
	o.B = append(o.B, '"')
	o.B = base64.StdEncoding.AppendEncode(o.B, v)
	o.B = append(o.B, '"')
}

// BytesOmit appends a []byte member unless it is empty.
func (o *Object) BytesOmit(name string, v []byte) {
	if len(v) > 0 {
		o.Bytes(name, v)
	}
}

// StringMapOmit appends a map[string]string member with its keys sorted,
// unless it is empty.
func (o *Object) StringMapOmit(name string, m map[string]string) {
	if len(m) == 0 {
		return
	}
	o.Key(name)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	o.B = append(o.B, '{')
	for i, k := range keys {
		if i > 0 {
			o.B = append(o.B, ',')
		}
		o.B = AppendString(o.B, k)
		o.B = append(o.B, ':')
		o.B = AppendString(o.B, m[k])
	}
	o.B = append(o.B, '}')
}

// Nested appends a member whose value another appender writes.
func (o *Object) Nested(name string, fn func(b []byte) ([]byte, error)) {
	o.Key(name)
	b, err := fn(o.B)
	if err != nil {
		if o.err == nil {
			o.err = err
		}
		return
	}
	o.B = b
}

var errTimeRange = errors.New("jsonw: time outside of the years 0-9999 that RFC 3339 allows")

// AppendTime appends t quoted, as time.Time.MarshalJSON writes it.
func AppendTime(b []byte, t time.Time) ([]byte, error) {
	if y := t.Year(); y < 0 || y > 9999 {
		return b, errTimeRange
	}
	if _, off := t.Zone(); off%60 != 0 || off <= -24*3600 || off >= 24*3600 {
		// An offset RFC 3339 cannot write exactly: do what MarshalJSON does.
		j, err := t.MarshalJSON()
		if err != nil {
			return b, err
		}
		return append(b, j...), nil
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), nil
}

const hex = "0123456789abcdef"

// safe[c] is true for the ASCII bytes encoding/json writes as they are
// (HTML-safe: <, > and & are escaped).
var safe = func() (s [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		s[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return s
}()

// AppendString appends s as a JSON string exactly as encoding/json does:
// \n \r \t \b \f and \" \\ by name, other control bytes and <, >, & as
// \u00XX, U+2028 and U+2029 escaped, invalid UTF-8 as U+FFFD.
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if safe[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
