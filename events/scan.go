package events

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"
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
	// About one member per 32 bytes in events (4 to 16): one allocation
	// for nearly every object, none wasted on small ones.
	members = make([]jsonMember, 0, min(max(len(raw)/32, 4), 16))
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
			if name = unescapeName(raw[i:end]); name == "" {
				return nil, false
			}
		} else {
			name = memberName(raw[i+1 : end-1])
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

// unescapeName decodes the quoted JSON string q with escapes in it ("" if
// it is invalid; an escaped name is never empty). Kept apart so that only
// escaped names put a string on the heap for json.Unmarshal.
func unescapeName(q []byte) string {
	var name string
	if json.Unmarshal(q, &name) != nil {
		return ""
	}
	return name
}

// memberName returns b as a string, without allocating when it is a
// field name of the event's shapes (nearly every name an event has).
func memberName(b []byte) string {
	if s, ok := knownNames[string(b)]; ok {
		return s
	}
	return string(b)
}

// knownNames holds every field name of the shapes in validate_shape.go.
var knownNames = func() map[string]string {
	m := map[string]string{}
	for _, sh := range []*objectShape{envelopeShape, settingsEnvelopeShape, sealedValueShape, keyRotatedDataShape,
		keyCreatedDataShape, keyUpdatedDataShape, teamSettingsShape, settingsDataShape} {
		for name := range sh.fields {
			m[name] = name
		}
	}
	return m
}()

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

// unquoteBytes returns the bytes a JSON string literal denotes: raw's own
// bytes (no copy) when it has no escapes, for values that are parsed and
// not kept.
func unquoteBytes(raw []byte) ([]byte, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return nil, false
	}
	inner := raw[1 : len(raw)-1]
	for _, c := range inner {
		if c == '\\' || c < 0x20 {
			s, ok := unquote(raw)
			return []byte(s), ok
		}
	}
	return inner, true
}

// unquoteKnown is unquote for members whose value is nearly always one of
// known (spec_version, type, alg): such a value is not allocated again.
func unquoteKnown(raw []byte, known ...string) (string, bool) {
	if b, ok := unquoteBytes(raw); ok {
		for _, k := range known {
			if string(b) == k {
				return k, true
			}
		}
	}
	return unquote(raw)
}

// decodeBase64 decodes a JSON string literal holding standard base64.
func decodeBase64(raw []byte) ([]byte, bool) {
	b, ok := unquoteBytes(raw)
	if !ok {
		return nil, false
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(b)))
	n, err := base64.StdEncoding.Decode(out, b)
	if err != nil {
		return nil, false
	}
	return out[:n], true
}

// unquote returns the string a JSON string literal denotes, without
// reflection when it has no escapes.
func unquote(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	inner := raw[1 : len(raw)-1]
	for _, c := range inner {
		if c == '\\' || c < 0x20 {
			var s string
			if json.Unmarshal(raw, &s) != nil {
				return "", false
			}
			return s, true
		}
	}
	return string(inner), true
}

// decodeEnvelope fills ev from members that checkMembers has accepted
// (names known, kinds right), without reflection.
func decodeEnvelope(members []jsonMember, ev *Event) error {
	for _, m := range members {
		var ok bool
		switch m.name {
		case "spec_version":
			ev.SpecVersion, ok = unquoteKnown(m.raw, SpecVersion)
		case "id":
			ev.ID, ok = unquote(m.raw)
		case "type":
			var s string
			s, ok = unquoteKnown(m.raw, string(KeyCreated), string(KeyRotated), string(KeyUpdated), string(KeyDeleted),
				string(TeamSettingsUpdated), string(TeamSettingsDeleted))
			ev.Type = Type(s)
		case "time":
			var b []byte
			if b, ok = unquoteBytes(m.raw); ok {
				// The bytes are only parsed: neither the time nor a
				// discarded error outlives them.
				t, err := time.Parse(time.RFC3339Nano, unsafe.String(unsafe.SliceData(b), len(b)))
				ev.Time, ok = t, err == nil
			}
		case "team_id":
			ev.TeamID, ok = unquote(m.raw)
		case "key_id":
			ev.KeyID, ok = unquote(m.raw)
		case "generation":
			g, err := strconv.ParseUint(string(m.raw), 10, 64)
			ev.Generation, ok = g, err == nil
		case "key_alias":
			ev.KeyAlias, ok = unquote(m.raw)
		case "job_id":
			if ev.JobID, ok = unquote(m.raw); ok && ev.JobID == "" {
				return invalid("job_id", "must not be empty (leave it out)")
			}
		case "data":
			ev.Data, ok = m.raw, true
		}
		if !ok {
			return invalid(m.name, "cannot be decoded")
		}
	}
	return nil
}

// decodeKeyData fills d from the members of a key.created/key.rotated
// payload that checkMembers has accepted.
func decodeKeyData(members []jsonMember, d *KeyData) error {
	for _, m := range members {
		switch m.name {
		case "value":
			vm, ok := scanMembers(m.raw)
			if !ok {
				return invalid("data.value", "must be a JSON object")
			}
			sv := &SealedValue{}
			for _, f := range vm {
				switch f.name {
				case "alg":
					sv.Alg, ok = unquoteKnown(f.raw, AlgA256GCM)
				case "kid":
					sv.KID, ok = unquote(f.raw)
				case "nonce", "ct", "edk":
					var b []byte
					if b, ok = decodeBase64(f.raw); ok {
						switch f.name {
						case "nonce":
							sv.Nonce = b
						case "edk":
							sv.EDK = b
						default:
							sv.Ciphertext = b
						}
					}
				}
				if !ok {
					return invalid("data.value."+f.name, "cannot be decoded")
				}
			}
			d.Value = sv
		case "metadata":
			if err := json.Unmarshal(m.raw, &d.Metadata); err != nil {
				return invalid("data.metadata", "cannot be decoded")
			}
		case "grace_period_seconds":
			g, err := strconv.ParseInt(string(m.raw), 10, 64)
			if err != nil {
				return invalid("data.grace_period_seconds", "cannot be decoded")
			}
			d.GracePeriodSeconds = g
		}
	}
	return nil
}
