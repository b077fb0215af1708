package events

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxIDLen bounds team ids, key ids and event ids.
const MaxIDLen = 128

// MaxAliasLen bounds key aliases.
const MaxAliasLen = 256

// ValidationError says which field of an event is wrong and why. It never
// contains a secret value.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return "invalid event: " + e.Reason
	}
	return fmt.Sprintf("invalid event: %s: %s", e.Field, e.Reason)
}

// ErrInvalid matches every *ValidationError with errors.Is.
var ErrInvalid = errors.New("invalid event")

// Is makes errors.Is(err, ErrInvalid) true for validation errors.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

func invalid(field, format string, args ...any) *ValidationError {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// ValidateID checks a team, key or event id. Ids become subject tokens and
// provider path segments, so only letters, digits and "_-@+=:" are allowed,
// the first character must be a letter or digit, and the length is bounded.
// Field names the id in the returned error.
func ValidateID(field, id string) error {
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
			var t Type
			if json.Unmarshal(m.raw, &t) == nil && t.IsSettings() {
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

// Validate checks the envelope and the type-specific payload.
func (ev *Event) Validate() error { return ev.validate(false) }

// validate is Validate; trusted says Data is part of a document Decode has
// already found to be valid JSON.
func (ev *Event) validate(trusted bool) error {
	if ev.SpecVersion == "" {
		return invalid("spec_version", "is required")
	}
	if ev.SpecVersion != SpecVersion {
		return invalid("spec_version", "is not supported (this build reads %q)", SpecVersion)
	}
	if err := ValidateID("id", ev.ID); err != nil {
		return err
	}
	if ev.Type == "" {
		return invalid("type", "is required")
	}
	if !ev.Type.Known() {
		return invalid("type", "is not a known event type")
	}
	if ev.Time.IsZero() {
		return invalid("time", "is required")
	}
	if err := ValidateID("team_id", ev.TeamID); err != nil {
		return err
	}
	if ev.Type.IsKey() {
		if err := ValidateID("key_id", ev.KeyID); err != nil {
			return err
		}
	} else if ev.KeyID != "" {
		return invalid("key_id", "must be absent for %s", ev.Type)
	}
	if err := validateText("key_alias", ev.KeyAlias, MaxAliasLen); err != nil {
		return err
	}
	if ev.JobID != "" {
		if !ev.Type.IsKey() {
			return invalid("job_id", "must be absent for %s", ev.Type)
		}
		if err := ValidateID("job_id", ev.JobID); err != nil {
			return err
		}
	}
	return ev.validateData(trusted)
}

func clip(s string) string {
	if len(s) > 40 {
		s = s[:40]
		for len(s) > 0 && !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		return s + "..."
	}
	return s
}

func strictUnmarshal(field string, raw json.RawMessage, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &ValidationError{Field: field, Reason: sanitizeJSONError(err)}
	}
	return nil
}

// isEmptyData reports whether raw is absent: empty, blank or JSON null.
func isEmptyData(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || string(t) == "null"
}

func (ev *Event) validateData(trusted bool) error {
	empty := isEmptyData(ev.Data)
	data := bytes.TrimSpace(ev.Data)
	switch ev.Type {
	case KeyCreated, KeyRotated:
		if empty {
			return invalid("data", "is required for %s", ev.Type)
		}
		shape := keyCreatedDataShape
		if ev.Type == KeyRotated {
			shape = keyRotatedDataShape
		}
		var members []jsonMember
		if trusted {
			var ok bool
			if members, ok = scanMembers(data); !ok {
				return invalid("data", "must be a JSON object")
			}
		} else {
			var err error
			if members, err = objectMembers("data", data); err != nil {
				return err
			}
		}
		if err := checkMembers("data", members, shape); err != nil {
			return err
		}
		var d KeyData
		if err := decodeKeyData(members, &d); err != nil {
			return err
		}
		if d.Value == nil {
			return invalid("data.value", "is required for %s", ev.Type)
		}
		if err := d.Value.validate("data.value"); err != nil {
			return err
		}
		if d.GracePeriodSeconds < 0 {
			return invalid("data.grace_period_seconds", "must not be negative")
		}
		if ev.Type == KeyCreated && d.GracePeriodSeconds != 0 {
			return invalid("data.grace_period_seconds", "is only valid for key.rotated")
		}
		if err := validateMetadata("data.metadata", d.Metadata); err != nil {
			return err
		}
		ev.remember(&d)
		return nil
	case KeyUpdated:
		if empty {
			return nil
		}
		if err := checkObject("data", data, keyUpdatedDataShape); err != nil {
			return err
		}
		var d UpdateData
		if err := strictUnmarshal("data", data, &d); err != nil {
			return err
		}
		if err := validateText("data.previous_alias", d.PreviousAlias, MaxAliasLen); err != nil {
			return err
		}
		if err := validateMetadata("data.metadata", d.Metadata); err != nil {
			return err
		}
		ev.remember(&d)
		return nil
	case KeyDeleted, TeamSettingsDeleted:
		if empty {
			return nil
		}
		return checkObject("data", data, &objectShape{closed: "must be empty for " + string(ev.Type)})
	case TeamSettingsUpdated:
		if empty {
			return invalid("data", "is required for %s", ev.Type)
		}
		if err := checkObject("data", data, settingsDataShape); err != nil {
			return err
		}
		var d SettingsData
		if err := strictUnmarshal("data", data, &d); err != nil {
			return err
		}
		if err := d.Settings.Validate("data.settings"); err != nil {
			return err
		}
		ev.remember(&d)
		return nil
	}
	return nil
}

// MaxMetadataEntries bounds metadata maps; provider tag limits are lower
// still (AWS allows 50 tags, Azure 15) and are enforced by each provider.
const MaxMetadataEntries = 32

func validateMetadata(field string, m map[string]string) error {
	if len(m) > MaxMetadataEntries {
		return invalid(field, "has %d entries, more than %d", len(m), MaxMetadataEntries)
	}
	for k, v := range m {
		if k == "" {
			return invalid(field, "has an empty key")
		}
		if err := validateText(field+" key", k, 128); err != nil {
			return err
		}
		if err := validateText(field+"."+clip(k), v, 256); err != nil {
			return err
		}
	}
	return nil
}

// Access modes, as LiteLLM names them.
const (
	AccessReadOnly     = "read_only"
	AccessWriteOnly    = "write_only"
	AccessReadAndWrite = "read_and_write"
)

// Validate checks team settings; field prefixes the field names in errors.
func (s *TeamSettings) Validate(field string) error {
	if s.Backend != "" {
		if err := validateText(field+".backend", s.Backend, 64); err != nil {
			return err
		}
	}
	switch s.AccessMode {
	case "", AccessReadOnly, AccessWriteOnly, AccessReadAndWrite:
	default:
		return invalid(field+".access_mode", "is not one of read_only, write_only, read_and_write")
	}
	if s.Prefix != nil {
		if err := validateText(field+".prefix", *s.Prefix, 128); err != nil {
			return err
		}
		if strings.Contains(*s.Prefix, "..") {
			return invalid(field+".prefix", `contains ".."`)
		}
	}
	if err := validateText(field+".name_template", s.NameTemplate, 256); err != nil {
		return err
	}
	if s.RetirePreviousAfter != "" {
		if _, _, err := ParseRetireAfter(s.RetirePreviousAfter); err != nil {
			return invalid(field+".retire_previous_after", "%s", err.Error())
		}
	}
	if err := validateText(field+".description", s.Description, 1024); err != nil {
		return err
	}
	if err := validateMetadata(field+".tags", s.Tags); err != nil {
		return err
	}
	return validateMetadata(field+".options", s.Options)
}

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

func joinField(path, name string) string {
	if path == "" {
		return name
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
	seen := make(map[string]bool, len(members))
	for _, m := range members {
		if shape.closed != "" {
			return invalid(path, "%s", shape.closed)
		}
		f, ok := shape.fields[m.name]
		if !ok {
			return unknownField(path, m.name, shape)
		}
		field := joinField(path, m.name)
		if seen[m.name] {
			return invalid(field, "appears more than once")
		}
		seen[m.name] = true
		if f.forbidden != "" {
			return invalid(field, "%s", f.forbidden)
		}
		if err := checkValue(field, m.raw, f); err != nil {
			return err
		}
	}
	for _, name := range shape.required {
		if !seen[name] {
			return invalid(joinField(path, name), "is required")
		}
	}
	return nil
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

func checkValue(field string, raw json.RawMessage, f fieldShape) error {
	if string(raw) == "null" {
		return invalid(field, "must not be null (omit the field instead)")
	}
	switch f.kind {
	case jString:
		if raw[0] != '"' {
			return invalid(field, "must be a string")
		}
	case jBool:
		if s := string(raw); s != "true" && s != "false" {
			return invalid(field, "must be true or false")
		}
	case jUint:
		if !isIntLiteral(raw, false) {
			return invalid(field, "must be an integer from 0 to 18446744073709551615, without fraction or exponent")
		}
	case jInt:
		if !isIntLiteral(raw, true) {
			return invalid(field, "must be a 64-bit integer, without fraction or exponent")
		}
	case jTime:
		s, ok := unquote(raw)
		if !ok || !isRFC3339(s) {
			return invalid(field, "must be an RFC 3339 date-time such as 2025-01-02T15:04:05Z")
		}
	case jBase64:
		s, ok := unquote(raw)
		if !ok || !isCanonicalBase64(s) {
			return invalid(field, "must be standard base64 with padding (RFC 4648 section 4)")
		}
	case jStringMap:
		members, ok := scanMembers(raw)
		if !ok {
			return invalid(field, "must be a JSON object")
		}
		seen := make(map[string]bool, len(members))
		for _, m := range members {
			if seen[m.name] {
				return invalid(field, "has a repeated key")
			}
			seen[m.name] = true
			if m.raw[0] != '"' {
				return invalid(field, "values must be strings")
			}
		}
	case jObject:
		if f.obj != nil {
			// raw is part of a document already found valid.
			members, ok := scanMembers(raw)
			if !ok {
				return invalid(field, "must be a JSON object")
			}
			return checkMembers(field, members, f.obj)
		}
		if raw[0] != '{' {
			return invalid(field, "must be a JSON object")
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
	if strings.ContainsAny(s, "\r\n") {
		return false
	}
	_, err := base64.StdEncoding.Strict().DecodeString(s)
	return err == nil
}
