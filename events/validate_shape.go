package events

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"
)

// The JSON shape of an event, checked member by member before the event is
// decoded into Go structs. encoding/json matches member names
// case-insensitively, lets a repeated member silently win, treats null as
// "absent" and ignores CR/LF inside base64; a publisher validating with the
// JSON Schemas (or a consumer in another language) would read such a
// document differently, so Decode refuses all of them.

type jsonKind uint8

const (
	jString    jsonKind = iota + 1 // any JSON string
	jBool                          // true or false
	jUint                          // integer literal in [0, 2^64)
	jInt                           // integer literal in int64
	jTime                          // RFC 3339 date-time string
	jBase64                        // canonical padded standard base64 string
	jStringMap                     // object whose member values are strings
	jObject                        // object; with obj, its members are checked too
)

type fieldShape struct {
	kind jsonKind
	obj  *objectShape
	// forbidden, when set, is the reason the member must be absent.
	forbidden string
}

type objectShape struct {
	fields   map[string]fieldShape
	required []string
	// closed, when set, is the reason the object must have no members.
	closed string
}

var (
	envelopeFields = map[string]fieldShape{
		"spec_version": {kind: jString},
		"id":           {kind: jString},
		"type":         {kind: jString},
		"time":         {kind: jTime},
		"team_id":      {kind: jString},
		"key_id":       {kind: jString},
		"generation":   {kind: jUint},
		"key_alias":    {kind: jString},
		"job_id":       {kind: jString},
		"data":         {kind: jObject},
	}
	envelopeShape         = &objectShape{fields: envelopeFields}
	settingsEnvelopeShape = &objectShape{fields: with(with(envelopeFields, "key_id",
		fieldShape{forbidden: "must be absent for team.settings.* events"}), "job_id",
		fieldShape{forbidden: "must be absent for team.settings.* events"})}

	sealedValueShape = &objectShape{fields: map[string]fieldShape{
		"alg":   {kind: jString},
		"kid":   {kind: jString},
		"edk":   {kind: jBase64},
		"nonce": {kind: jBase64},
		"ct":    {kind: jBase64},
	}, required: []string{"ct"}}

	keyRotatedDataShape = &objectShape{fields: map[string]fieldShape{
		"value":                {kind: jObject, obj: sealedValueShape},
		"metadata":             {kind: jStringMap},
		"grace_period_seconds": {kind: jInt},
	}}
	keyCreatedDataShape = &objectShape{fields: with(keyRotatedDataShape.fields, "grace_period_seconds",
		fieldShape{forbidden: "is only valid for key.rotated"})}

	keyUpdatedDataShape = &objectShape{fields: map[string]fieldShape{
		"previous_alias": {kind: jString},
		"metadata":       {kind: jStringMap},
	}}

	teamSettingsShape = &objectShape{fields: map[string]fieldShape{
		"backend":               {kind: jString},
		"store_virtual_keys":    {kind: jBool},
		"prefix":                {kind: jString},
		"access_mode":           {kind: jString},
		"name_template":         {kind: jString},
		"description":           {kind: jString},
		"tags":                  {kind: jStringMap},
		"options":               {kind: jStringMap},
		"retire_previous_after": {kind: jString},
	}}
	settingsDataShape = &objectShape{fields: map[string]fieldShape{
		"settings": {kind: jObject, obj: teamSettingsShape},
	}, required: []string{"settings"}}
)

// with returns a copy of m with m[k] = v.
func with(m map[string]fieldShape, k string, v fieldShape) map[string]fieldShape {
	out := make(map[string]fieldShape, len(m))
	for name, f := range m {
		out[name] = f
	}
	out[k] = v
	return out
}

type jsonMember struct {
	name string
	raw  json.RawMessage
}

// fieldName is a member's dotted name, built only when it is printed.
type fieldName struct{ path, name string }

func (f fieldName) String() string { return joinField(f.path, f.name) }

func joinField(path, name string) string {
	switch {
	case path == "":
		return name
	case path == "data" && name == "value":
		return "data.value" // every sealed key event checks it: not built each time
	}
	return path + "." + name
}

// objectMembers splits the JSON object raw into its members, in order.
func objectMembers(path string, raw []byte) ([]jsonMember, error) {
	if !json.Valid(raw) {
		return nil, invalid(path, "is not valid JSON")
	}
	members, ok := scanMembers(raw)
	if !ok {
		return nil, invalid(path, "must be a JSON object")
	}
	return members, nil
}

func checkObject(path string, raw []byte, shape *objectShape) error {
	members, err := objectMembers(path, raw)
	if err != nil {
		return err
	}
	return checkMembers(path, members, shape)
}

func checkMembers(path string, members []jsonMember, shape *objectShape) error {
	for i, m := range members {
		if shape.closed != "" {
			return invalid(path, "%s", shape.closed)
		}
		f, ok := shape.fields[m.name]
		if !ok {
			return unknownField(path, m.name, shape)
		}
		if repeated(members, i) {
			return invalid(joinField(path, m.name), "appears more than once")
		}
		if f.forbidden != "" {
			return invalid(joinField(path, m.name), "%s", f.forbidden)
		}
		if err := checkValue(path, m.name, m.raw, f); err != nil {
			return err
		}
	}
	for _, name := range shape.required {
		if !slices.ContainsFunc(members, func(m jsonMember) bool { return m.name == name }) {
			return invalid(joinField(path, name), "is required")
		}
	}
	return nil
}

// repeated reports whether members[i]'s name appears before i. Objects
// are small (a shape's members, a few metadata keys): comparing with the
// members before is cheaper than a map, and stays linear per member up
// to the event size limit.
func repeated(members []jsonMember, i int) bool {
	name := members[i].name
	for _, m := range members[:i] {
		if m.name == name {
			return true
		}
	}
	return false
}

// unknownField names the unknown member only when its name looks like a
// field name, so a value pasted as a name is never echoed.
func unknownField(path, name string, shape *objectShape) error {
	hint := ""
	for known, f := range shape.fields {
		if f.forbidden == "" && strings.EqualFold(known, name) {
			hint = fmt.Sprintf(" (names are case-sensitive: did you mean %q?)", known)
		}
	}
	if isFieldName(name) {
		return invalid(joinField(path, name), "is not a known field%s", hint)
	}
	return invalid(path, "has an unknown field%s", hint)
}

func isFieldName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// checkValue checks one member's value; path and name make its field name
// (joined only for an error).
func checkValue(path, name string, raw json.RawMessage, f fieldShape) error {
	field := fieldName{path, name}
	if string(raw) == "null" {
		return invalid(field.String(), "must not be null (omit the field instead)")
	}
	switch f.kind {
	case jString:
		if raw[0] != '"' {
			return invalid(field.String(), "must be a string")
		}
	case jBool:
		if s := string(raw); s != "true" && s != "false" {
			return invalid(field.String(), "must be true or false")
		}
	case jUint:
		if !isIntLiteral(raw, false) {
			return invalid(field.String(), "must be an integer from 0 to 18446744073709551615, without fraction or exponent")
		}
	case jInt:
		if !isIntLiteral(raw, true) {
			return invalid(field.String(), "must be a 64-bit integer, without fraction or exponent")
		}
	case jTime:
		b, ok := unquoteBytes(raw)
		if !ok || !isRFC3339(unsafe.String(unsafe.SliceData(b), len(b))) { // only read
			return invalid(field.String(), "must be an RFC 3339 date-time such as 2025-01-02T15:04:05Z")
		}
	case jBase64:
		b, ok := unquoteBytes(raw)
		if !ok || !isCanonicalBase64Bytes(b) {
			return invalid(field.String(), "must be standard base64 with padding (RFC 4648 section 4)")
		}
	case jStringMap:
		members, ok := scanMembers(raw)
		if !ok {
			return invalid(field.String(), "must be a JSON object")
		}
		if len(members) > 16 {
			seen := make(map[string]bool, len(members))
			for _, m := range members {
				if seen[m.name] {
					return invalid(field.String(), "has a repeated key")
				}
				seen[m.name] = true
			}
		}
		for i, m := range members {
			if len(members) <= 16 && repeated(members, i) {
				return invalid(field.String(), "has a repeated key")
			}
			if m.raw[0] != '"' {
				return invalid(field.String(), "values must be strings")
			}
		}
	case jObject:
		if f.obj != nil {
			// raw is part of a document already found valid.
			members, ok := scanMembers(raw)
			if !ok {
				return invalid(field.String(), "must be a JSON object")
			}
			return checkMembers(field.String(), members, f.obj)
		}
		if raw[0] != '{' {
			return invalid(field.String(), "must be a JSON object")
		}
	}
	return nil
}

func isIntLiteral(raw []byte, signed bool) bool {
	s := string(raw)
	digits := s
	if signed && strings.HasPrefix(s, "-") {
		digits = s[1:]
	}
	if digits == "" || (len(digits) > 1 && digits[0] == '0') {
		return false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return false
		}
	}
	var err error
	if signed {
		_, err = strconv.ParseInt(s, 10, 64)
	} else {
		_, err = strconv.ParseUint(s, 10, 64)
	}
	return err == nil
}

// isRFC3339 accepts the layout the schemas accept: upper-case T and Z, at
// most nine fraction digits (Go keeps nanoseconds), no leap second, offsets
// within ±23:59. time.Parse then rejects impossible dates.
func isRFC3339(s string) bool {
	// 2006-01-02T15:04:05[.fffffffff](Z|±hh:mm)
	if len(s) < 20 {
		return false
	}
	digits := func(i, n int) (int, bool) {
		v := 0
		for j := i; j < i+n; j++ {
			if s[j] < '0' || s[j] > '9' {
				return 0, false
			}
			v = v*10 + int(s[j]-'0')
		}
		return v, true
	}
	if s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return false
	}
	_, okY := digits(0, 4)
	mo, okM := digits(5, 2)
	d, okD := digits(8, 2)
	h, okH := digits(11, 2)
	mi, okMi := digits(14, 2)
	se, okS := digits(17, 2)
	if !(okY && okM && okD && okH && okMi && okS) || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 59 {
		return false
	}
	i := 19
	if s[i] == '.' {
		j := i + 1
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if n := j - i - 1; n < 1 || n > 9 {
			return false
		}
		i = j
	}
	switch rest := s[i:]; {
	case rest == "Z":
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
		oh, ok1 := digits(i+1, 2)
		om, ok2 := digits(i+4, 2)
		if !ok1 || !ok2 || oh > 23 || om > 59 {
			return false
		}
	default:
		return false
	}
	_, err := time.Parse(time.RFC3339Nano, s)
	return err == nil
}

// isCanonicalBase64 accepts exactly what EncodeToString of the standard
// padded encoding produces: no line breaks, no non-zero padding bits.
func isCanonicalBase64(s string) bool {
	return isCanonicalBase64Bytes(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// isCanonicalBase64Bytes is isCanonicalBase64 without decoding: standard
// alphabet, length a multiple of 4, padding only at the end, and the bits
// the padding leaves unused zero (base64.StdEncoding.Strict's rule).
func isCanonicalBase64Bytes(b []byte) bool {
	n := len(b)
	if n%4 != 0 {
		return false
	}
	pad := 0
	if n > 0 && b[n-1] == '=' {
		pad = 1
		if b[n-2] == '=' {
			pad = 2
		}
	}
	for _, c := range b[:n-pad] {
		if b64Value[c] < 0 {
			return false
		}
	}
	switch pad {
	case 1: // 3 characters carry 16 bits: the last one's low 2 bits unused
		return b64Value[b[n-2]]&0x03 == 0
	case 2: // 2 characters carry 8 bits: the last one's low 4 bits unused
		return b64Value[b[n-3]]&0x0F == 0
	}
	return true
}

// b64Value maps a byte to its value in the standard base64 alphabet, or -1.
var b64Value = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = int8(i)
	}
	return t
}()
