package events

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io/fs"
	"sort"
	"strings"
	"testing"
	"time"
)

func TestSchemaFiles(t *testing.T) {
	files, err := fs.Glob(SchemaFS(), "*.json")
	if err != nil {
		t.Fatal(err)
	}
	want := append(SchemaNames(), "common")
	sort.Strings(want)
	var got []string
	for _, f := range files {
		got = append(got, strings.TrimSuffix(f, ".json"))
		b, err := fs.ReadFile(SchemaFS(), f)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Schema string `json:"$schema"`
			ID     string `json:"$id"`
			Title  string `json:"title"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if doc.Schema != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("%s: $schema %q", f, doc.Schema)
		}
		if doc.ID != SchemaBaseURI+f {
			t.Errorf("%s: $id %q, want %q", f, doc.ID, SchemaBaseURI+f)
		}
		if doc.Title == "" {
			t.Errorf("%s: no title", f)
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("schema files %v, want %v", got, want)
	}
	if _, err := compileSchemas(); err != nil {
		t.Fatalf("compile: %v", err)
	}
	if err := ValidateSchema("key.exploded", []byte(`{}`)); err == nil {
		t.Error("ValidateSchema of an unknown schema name")
	}
	var se *SchemaError
	if err := ValidateSchema(SchemaEvent, []byte(`{`)); !errors.As(err, &se) || se.Reason == "" {
		t.Errorf("invalid JSON: %v", err)
	}
}

func TestSchemaErrorsNameLocations(t *testing.T) {
	d := baseEvent(t, KeyCreated)
	d["team_id"] = "team." + sentinel
	d.value()["kid"] = sentinel + "*"
	d.data()["metadata"] = map[string]any{sentinel + " key\n": "v"}
	err := ValidateSchema(SchemaEvent, d.bytes(t))
	var se *SchemaError
	if !errors.As(err, &se) {
		t.Fatalf("ValidateSchema = %v", err)
	}
	msg := err.Error()
	for _, want := range []string{"/team_id: pattern", "/data/value/kid"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if strings.Contains(msg, sentinel) {
		t.Errorf("schema error echoes a value: %s", msg)
	}
}

// Everything keyrelay's Go code produces matches the schemas.
func TestGoOutputMatchesSchemas(t *testing.T) {
	kr := exampleKeyring(t)
	for _, typ := range []Type{KeyCreated, KeyRotated, KeyDeleted} {
		ev, err := NewKeyEvent(bg, kr, typ, "team-a", "key-1", 1, []byte("sk"), KeyData{Metadata: map[string]string{"a": "b"}})
		if err != nil {
			t.Fatal(err)
		}
		b, err := ev.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if err := ValidateSchema(string(typ), b); err != nil {
			t.Errorf("%s: %v", typ, err)
		}
	}
	now := time.Now().UTC()
	for _, st := range []Status{StatusStored, StatusRotated, StatusDeleted, StatusSkipped, StatusSuperseded, StatusRejected, StatusFailed} {
		c := Confirmation{SpecVersion: SpecVersion, EventID: "evt-1", EventType: KeyCreated, TeamID: "team-a", KeyID: "key-1",
			Generation: 3, Status: st, Duplicate: st == StatusSuperseded, Provider: "hashicorp_vault", SecretRef: "secret/x",
			ProviderVersion: "2", Reason: "why", Attempts: 1, StreamSeq: 10, Time: now}
		if err := ValidateSchema(SchemaConfirmation, mustJSON(t, c)); err != nil {
			t.Errorf("%s: %v", st, err)
		}
	}
	// A rejected message whose id could not be read: empty event_id, zero time.
	if err := ValidateSchema(SchemaConfirmation, mustJSON(t, Confirmation{SpecVersion: SpecVersion, Status: StatusRejected})); err != nil {
		t.Errorf("minimal confirmation: %v", err)
	}
	for name, c := range map[string]Confirmation{
		"unknown status":  {SpecVersion: SpecVersion, EventID: "e", Status: "done", Time: now},
		"bad event id":    {SpecVersion: SpecVersion, EventID: "e.1", Status: StatusStored, Time: now},
		"no spec version": {EventID: "e", Status: StatusStored, Time: now},
	} {
		if err := ValidateSchema(SchemaConfirmation, mustJSON(t, c)); err == nil {
			t.Errorf("confirmation schema accepts %s", name)
		}
	}
}

// The sealed-value schema's size rules agree with SealedValue.validate at
// every boundary.
func TestSealedValueSchemaBoundaries(t *testing.T) {
	nonce := make([]byte, 12)
	var sizes []int
	for _, n := range []int{0, 1, 2, 3, 14, 15, 16, 17, 18, 19, MaxValueBytes - 2, MaxValueBytes - 1, MaxValueBytes,
		MaxValueBytes + 1, MaxValueBytes + 2, MaxValueBytes + 14, MaxValueBytes + 15, MaxValueBytes + 16,
		MaxValueBytes + 17, MaxValueBytes + 18, MaxValueBytes + 19} {
		sizes = append(sizes, n)
	}
	for _, alg := range []string{AlgA256GCM, AlgPlaintext} {
		for _, n := range sizes {
			sv := &SealedValue{Alg: alg, Ciphertext: make([]byte, n)}
			if alg == AlgA256GCM {
				sv.KID, sv.Nonce = "k1", nonce
			}
			goErr := sv.validate("value")
			schemaErr := ValidateSchema(SchemaSealedValue, mustJSON(t, sv))
			if (goErr == nil) != (schemaErr == nil) {
				t.Errorf("%s with %d bytes: Go says %v, schema says %v", alg, n, goErr, schemaErr)
			}
		}
	}
	// Non-canonical base64 is refused by both Decode and the schema.
	for _, ct := range []string{"AAAAAAAAAAAAAAAAAAAAAAB=", "AAAAAAAAAAAAAAAAAAAAAA==", "AAAAAAAAAAAAAAAAAAAAAA", "AAAA\nAAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAA-_"} {
		doc := `{"alg":"A256GCM","kid":"k1","nonce":"AAAAAAAAAAAAAAAA","ct":` + string(mustJSON(t, ct)) + `}`
		if ValidateSchema(SchemaSealedValue, []byte(doc)) == nil && !isCanonicalBase64(ct) {
			t.Errorf("schema accepts non-canonical %q", ct)
		}
		if isCanonicalBase64(ct) {
			if _, err := base64.StdEncoding.Strict().DecodeString(ct); err != nil {
				t.Errorf("%q", ct)
			}
		}
	}
}

func TestSchemaNames(t *testing.T) {
	names := SchemaNames()
	if !sort.StringsAreSorted(names) {
		t.Errorf("not sorted: %v", names)
	}
	for _, typ := range Types {
		found := false
		for _, n := range names {
			found = found || n == string(typ)
		}
		if !found {
			t.Errorf("no schema for %s", typ)
		}
	}
}
