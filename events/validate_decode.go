package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Decode parses and validates one event. Beyond Validate it checks the JSON
// shape the way the JSON Schemas in schema/ do: member names match exactly
// (encoding/json alone would accept "ID" for "id"), no member appears twice,
// no member is null (omit it instead), numbers are plain integers, times are
// RFC 3339, byte fields are canonical padded base64, team.settings.* events
// have no key_id member at all, and the whole event is valid UTF-8.
func Decode(b []byte) (*Event, error) {
	if len(b) > MaxEventBytes {
		return nil, invalid("", "event is %d bytes, larger than %d", len(b), MaxEventBytes)
	}
	if !utf8.Valid(b) {
		return nil, invalid("", "is not valid UTF-8")
	}
	raw := bytes.TrimSpace(b)
	if !json.Valid(raw) {
		// Slow path, for a precise error only.
		dec := json.NewDecoder(bytes.NewReader(b))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, &ValidationError{Reason: "malformed JSON: " + sanitizeJSONError(err)}
		}
		return nil, invalid("", "trailing data after the event object")
	}
	members, ok := scanMembers(raw)
	if !ok {
		return nil, invalid("", "must be a JSON object")
	}
	shape := envelopeShape
	for _, m := range members {
		if m.name == "type" {
			if t, ok := unquote(m.raw); ok && Type(t).IsSettings() {
				shape = settingsEnvelopeShape
			}
			break
		}
	}
	if err := checkMembers("", members, shape); err != nil {
		return nil, err
	}
	var ev Event
	if err := decodeEnvelope(members, &ev); err != nil {
		return nil, err
	}
	if err := ev.validate(true); err != nil {
		return nil, err
	}
	return &ev, nil
}

// sanitizeJSONError keeps the position and kind of a JSON error but drops
// any echo of the input, which could contain a plaintext value.
func sanitizeJSONError(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax error at offset %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q has the wrong type (want %s)", typ.Field, typ.Type)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of input"
	default:
		return "cannot decode"
	}
}
