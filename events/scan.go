package events

import (
	"encoding/json"
	"unicode/utf8"
)

// scanMembers splits a JSON object into its members, in order, without the
// allocation-heavy token API. The input must already be known to be valid
// JSON (json.Valid or a successful decode); ok is false when raw is not an
// object. Member names are unescaped exactly as encoding/json would.
func scanMembers(raw []byte) (members []jsonMember, ok bool) {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return nil, false
	}
	i = skipSpace(raw, i+1)
	if i < len(raw) && raw[i] == '}' {
		return nil, true
	}
	members = make([]jsonMember, 0, 8)
	for i < len(raw) {
		if raw[i] != '"' {
			return nil, false
		}
		end, escaped := stringEnd(raw, i)
		if end < 0 {
			return nil, false
		}
		var name string
		if escaped {
			if json.Unmarshal(raw[i:end], &name) != nil {
				return nil, false
			}
		} else {
			name = string(raw[i+1 : end-1])
		}
		i = skipSpace(raw, end)
		if i >= len(raw) || raw[i] != ':' {
			return nil, false
		}
		i = skipSpace(raw, i+1)
		vend := valueEnd(raw, i)
		if vend < 0 {
			return nil, false
		}
		members = append(members, jsonMember{name: name, raw: raw[i:vend]})
		i = skipSpace(raw, vend)
		if i >= len(raw) {
			return nil, false
		}
		switch raw[i] {
		case ',':
			i = skipSpace(raw, i+1)
		case '}':
			return members, true
		default:
			return nil, false
		}
	}
	return nil, false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index just past the string starting at b[i] == '"',
// and whether it contains escapes.
func stringEnd(b []byte, i int) (int, bool) {
	escaped := false
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			escaped = true
			j++
		case '"':
			return j + 1, escaped
		}
	}
	return -1, false
}

// valueEnd returns the index just past the value starting at b[i].
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		end, _ := stringEnd(b, i)
		return end
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, _ := stringEnd(b, j)
				if end < 0 {
					return -1
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	default:
		j := i
		for j < len(b) {
			c := b[j]
			if c == ',' || c == '}' || c == ']' || c == ' ' || c == '\t' || c == '\n' || c == '\r' {
				break
			}
			if c >= utf8.RuneSelf {
				return -1
			}
			j++
		}
		if j == i {
			return -1
		}
		return j
	}
}
