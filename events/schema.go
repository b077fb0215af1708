package events

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// The JSON Schemas (draft 2020-12) of the wire contract, one file per
// document type, for publishers and consumers written in other languages.
// Decode is at least as strict as these schemas; docs/events.md lists the
// few rules a schema cannot express (sizes in bytes, the event size limit,
// repeated members).
//
//go:embed schema/*.json
var schemaFiles embed.FS

// SchemaBaseURI is the prefix of every schema's $id; a schema file named
// "<name>.json" has the $id SchemaBaseURI + "<name>.json", and relative
// $refs between the files resolve against it.
const SchemaBaseURI = "https://github.com/keyrelay/keyrelay/events/schema/"

// Schema names besides the event types (each event type, such as
// "key.created", is also a schema name).
const (
	// SchemaEvent accepts an event of any type, dispatching on "type".
	SchemaEvent = "event"
	// SchemaConfirmation is the confirmation keyrelay publishes.
	SchemaConfirmation = "confirmation"
	// SchemaSealedValue is the sealed-value envelope (data.value).
	SchemaSealedValue = "sealed_value"
	// SchemaKeyring is the keyring file (KeyringFile).
	SchemaKeyring = "keyring"
)

// SchemaFS returns the schema files (schema/<name>.json, plus
// schema/common.json holding the shared definitions).
func SchemaFS() fs.FS {
	sub, err := fs.Sub(schemaFiles, "schema")
	if err != nil {
		panic(err) // the embedded directory always exists
	}
	return sub
}

// SchemaNames lists the names ValidateSchema accepts, sorted.
func SchemaNames() []string {
	names := []string{SchemaEvent, SchemaConfirmation, SchemaSealedValue, SchemaKeyring}
	for _, t := range Types {
		names = append(names, string(t))
	}
	sort.Strings(names)
	return names
}

var compiled struct {
	once    sync.Once
	schemas map[string]*jsonschema.Schema
	err     error
}

func compileSchemas() (map[string]*jsonschema.Schema, error) {
	compiled.once.Do(func() {
		c := jsonschema.NewCompiler()
		c.DefaultDraft(jsonschema.Draft2020)
		c.AssertFormat()
		files, err := fs.Glob(schemaFiles, "schema/*.json")
		if err != nil {
			compiled.err = err
			return
		}
		for _, f := range files {
			b, err := schemaFiles.ReadFile(f)
			if err != nil {
				compiled.err = err
				return
			}
			doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
			if err != nil {
				compiled.err = fmt.Errorf("schema %s: %w", f, err)
				return
			}
			if err := c.AddResource(SchemaBaseURI+path.Base(f), doc); err != nil {
				compiled.err = fmt.Errorf("schema %s: %w", f, err)
				return
			}
		}
		out := make(map[string]*jsonschema.Schema)
		for _, name := range SchemaNames() {
			sch, err := c.Compile(SchemaBaseURI + name + ".json")
			if err != nil {
				compiled.err = fmt.Errorf("schema %s: %w", name, err)
				return
			}
			out[name] = sch
		}
		compiled.schemas = out
	})
	return compiled.schemas, compiled.err
}

// SchemaViolation is one failed schema keyword.
type SchemaViolation struct {
	// Location is the JSON pointer of the offending value in the document
	// ("" for the document itself). Tokens that are not field names (map
	// keys chosen by the publisher) are shown as "*".
	Location string
	// Keyword is the path of the failed keyword, e.g. "pattern",
	// "required" or "additionalProperties".
	Keyword string
}

// SchemaError says that a document does not match a schema. Like
// ValidationError it never contains a value from the document.
type SchemaError struct {
	Schema     string
	Violations []SchemaViolation
	// Reason is set instead of Violations when the document is not JSON.
	Reason string
}

func (e *SchemaError) Error() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "document does not match schema %s", e.Schema)
	if e.Reason != "" {
		sb.WriteString(": " + e.Reason)
	}
	for i, v := range e.Violations {
		if i == 0 {
			sb.WriteString(": ")
		} else {
			sb.WriteString("; ")
		}
		loc := v.Location
		if loc == "" {
			loc = "(document)"
		}
		sb.WriteString(loc + ": " + v.Keyword)
	}
	return sb.String()
}

// ValidateSchema checks the JSON document doc against the named schema:
// an event type ("key.created", ...) or one of SchemaEvent,
// SchemaConfirmation, SchemaSealedValue and SchemaKeyring. The schemas are
// compiled once. A mismatch is reported as a *SchemaError.
func ValidateSchema(name string, doc []byte) error {
	schemas, err := compileSchemas()
	if err != nil {
		return err
	}
	sch, ok := schemas[name]
	if !ok {
		return fmt.Errorf("events: no schema named %q", name)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		reason := "not valid JSON"
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			reason = fmt.Sprintf("not valid JSON (syntax error at offset %d)", syn.Offset)
		}
		return &SchemaError{Schema: name, Reason: reason}
	}
	err = sch.Validate(v)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return &SchemaError{Schema: name, Reason: "validation failed"}
	}
	se := &SchemaError{Schema: name}
	collectViolations(ve, se)
	if len(se.Violations) == 0 {
		se.Reason = "validation failed"
	}
	return se
}

// collectViolations keeps the leaves of the error tree: the keywords that
// actually failed. ErrorKind's message is not used because it may quote the
// offending value.
func collectViolations(ve *jsonschema.ValidationError, se *SchemaError) {
	if len(ve.Causes) == 0 {
		loc := ""
		for _, tok := range ve.InstanceLocation {
			if !isFieldName(tok) && strings.Trim(tok, "0123456789") != "" {
				tok = "*" // a map key from the document: not echoed
			}
			loc += "/" + tok
		}
		kw := ""
		if ve.ErrorKind != nil {
			kw = strings.Join(ve.ErrorKind.KeywordPath(), "/")
		}
		se.Violations = append(se.Violations, SchemaViolation{Location: loc, Keyword: kw})
		return
	}
	for _, c := range ve.Causes {
		collectViolations(c, se)
	}
}
