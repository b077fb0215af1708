package events

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// docs/events.md marks every example with an HTML comment right before
// its ```json block:
//
//	<!-- example: key.created value="sk-..." -->
//
// value is the plaintext a sealed example opens to with the example
// keyring. These tests check every example against its schema, Decode,
// Open and the subjects the document names.

type docExample struct {
	name  string
	value *string
	line  int
	// start and end delimit the JSON text in the document.
	start, end int
	json       []byte
}

var (
	exampleMarker = regexp.MustCompile("(?m)^<!-- example: ([a-z_.]+)(?: value=\"([^\"]*)\")? -->\n```json\n")
	anyMarker     = regexp.MustCompile(`(?m)^<!-- example:.*$`)
	aadMarker     = regexp.MustCompile("(?m)^<!-- aad: ([a-z_.]+) -->\n```text\n([0-9a-f]*)\n```")
)

func parseDocExamples(t testing.TB, doc []byte) []docExample {
	t.Helper()
	if n, m := len(anyMarker.FindAll(doc, -1)), len(exampleMarker.FindAll(doc, -1)); n != m {
		t.Fatalf("%d example markers but only %d are followed by a ```json block (or the marker is malformed)", n, m)
	}
	var out []docExample
	for _, m := range exampleMarker.FindAllSubmatchIndex(doc, -1) {
		ex := docExample{name: string(doc[m[2]:m[3]]), line: bytes.Count(doc[:m[0]], []byte("\n")) + 1, start: m[1]}
		if m[4] >= 0 {
			v := string(doc[m[4]:m[5]])
			ex.value = &v
		}
		end := bytes.Index(doc[ex.start:], []byte("\n```"))
		if end < 0 {
			t.Fatalf("line %d: example %s has no closing ```", ex.line, ex.name)
		}
		ex.end = ex.start + end + 1
		ex.json = doc[ex.start:ex.end]
		out = append(out, ex)
	}
	return out
}

func TestDocsExamples(t *testing.T) {
	doc := readFile(t, docsPath)
	examples := parseDocExamples(t, doc)
	kr := exampleKeyring(t)
	count := map[string]int{}
	for _, ex := range examples {
		count[ex.name]++
		t.Run(fmt.Sprintf("%s@line%d", ex.name, ex.line), func(t *testing.T) {
			if !json.Valid(ex.json) {
				t.Fatalf("not valid JSON")
			}
			switch {
			case Type(ex.name).Known():
				checkDocEvent(t, doc, ex, kr)
			case ex.name == SchemaConfirmation:
				if err := ValidateSchema(SchemaConfirmation, ex.json); err != nil {
					t.Errorf("schema: %v", err)
				}
				var c Confirmation
				dec := json.NewDecoder(bytes.NewReader(ex.json))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&c); err != nil {
					t.Fatalf("decode into Confirmation: %v", err)
				}
				if err := ValidateSchema(SchemaConfirmation, mustJSON(t, &c)); err != nil {
					t.Errorf("schema after a Go round trip: %v", err)
				}
			case ex.name == SchemaSealedValue:
				if err := ValidateSchema(SchemaSealedValue, ex.json); err != nil {
					t.Errorf("schema: %v", err)
				}
				var sv SealedValue
				if err := json.Unmarshal(ex.json, &sv); err != nil {
					t.Fatal(err)
				}
				if err := sv.validate("value"); err != nil {
					t.Error(err)
				}
				var compact1, compact2 bytes.Buffer
				_ = json.Compact(&compact1, ex.json)
				_ = json.Compact(&compact2, firstValue(t, examples, KeyCreated))
				if compact1.String() != compact2.String() {
					t.Errorf("the sealed_value example is not data.value of the first key.created example")
				}
			case ex.name == docKMSSealedValue:
				if err := ValidateSchema(SchemaSealedValue, ex.json); err != nil {
					t.Errorf("schema: %v", err)
				}
				var sv SealedValue
				if err := json.Unmarshal(ex.json, &sv); err != nil {
					t.Fatal(err)
				}
				if err := sv.validate("value"); err != nil {
					t.Error(err)
				}
				var compact1, compact2 bytes.Buffer
				_ = json.Compact(&compact1, ex.json)
				_ = json.Compact(&compact2, kmsDocValue(t))
				if compact1.String() != compact2.String() {
					t.Errorf("the %s example is not the sealed value of the kms-basic seal vector (regenerate with -update)", docKMSSealedValue)
				}
			case ex.name == SchemaKeyring:
				if err := ValidateSchema(SchemaKeyring, ex.json); err != nil {
					t.Errorf("schema: %v", err)
				}
				dk, err := ParseKeyring(ex.json)
				if err != nil {
					t.Fatal(err)
				}
				var f KeyringFile
				_ = json.Unmarshal(ex.json, &f)
				if dk.Active() != exampleKID2 || len(f.Keys) != 2 {
					t.Errorf("the documented keyring is not the test keyring (active %s, %d keys)", dk.Active(), len(f.Keys))
				}
				for kid, k := range exampleKeys() {
					if f.Keys[kid] != b64(k) {
						t.Errorf("documented key %s differs from the test key", kid)
					}
				}
			default:
				t.Errorf("unknown example name %q", ex.name)
			}
		})
	}
	for _, typ := range Types {
		if count[string(typ)] == 0 {
			t.Errorf("no example for %s", typ)
		}
	}
	for _, name := range []string{SchemaConfirmation, SchemaSealedValue, SchemaKeyring, docKMSSealedValue} {
		if count[name] == 0 {
			t.Errorf("no %s example", name)
		}
	}
	if count[SchemaKeyring] != 1 {
		t.Errorf("%d keyring examples, want exactly 1 (the one sealed examples open with)", count[SchemaKeyring])
	}
}

func checkDocEvent(t *testing.T, doc []byte, ex docExample, kr *Keyring) {
	if err := ValidateSchema(ex.name, ex.json); err != nil {
		t.Errorf("schema %s: %v", ex.name, err)
	}
	if err := ValidateSchema(SchemaEvent, ex.json); err != nil {
		t.Errorf("schema event: %v", err)
	}
	ev, err := Decode(ex.json)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if string(ev.Type) != ex.name {
		t.Errorf("marked %s but the type is %s", ex.name, ev.Type)
	}
	if subj := ev.Subject(); !bytes.Contains(doc, []byte("`"+subj+"`")) {
		t.Errorf("the document never names this example's subject `%s`", subj)
	}
	if ev.Type != KeyCreated && ev.Type != KeyRotated {
		if ex.value != nil {
			t.Errorf("value attribute on an example without a value")
		}
		return
	}
	if ex.value == nil {
		t.Fatalf("sealed example without value=\"...\" in its marker")
	}
	if !bytes.Contains(doc, []byte("`"+*ex.value+"`")) {
		t.Errorf("the document never shows the plaintext `%s` to readers", *ex.value)
	}
	d, err := ev.KeyData()
	if err != nil {
		t.Fatal(err)
	}
	pt, err := kr.Open(bg, d.Value, BindingOf(ev))
	if err != nil {
		t.Fatalf("Open with the documented keyring: %v (regenerate with -update)", err)
	}
	if string(pt) != *ex.value {
		t.Errorf("opens to another value than documented")
	}
	// The same value moved to another event does not open.
	moved := BindingOf(ev)
	moved.Generation++
	if _, err := kr.Open(bg, d.Value, moved); err == nil {
		t.Errorf("the value opens under another generation")
	}
}

// The worked AAD example matches Binding.AAD for the first example of its
// type.
func TestDocsAAD(t *testing.T) {
	doc := readFile(t, docsPath)
	m := aadMarker.FindAllSubmatch(doc, -1)
	if len(m) == 0 {
		t.Fatal("no <!-- aad: ... --> block")
	}
	examples := parseDocExamples(t, doc)
	for _, am := range m {
		want, err := docAAD(examples, string(am[1]))
		if err != nil {
			t.Fatal(err)
		}
		if string(am[2]) != want {
			t.Errorf("aad block for %s:\n got %s\nwant %s", am[1], am[2], want)
		}
	}
}

func docAAD(examples []docExample, name string) (string, error) {
	for _, ex := range examples {
		if ex.name != name {
			continue
		}
		ev, err := Decode(ex.json)
		if err != nil {
			return "", err
		}
		d, err := ev.KeyData()
		if err != nil {
			return "", err
		}
		return hex.EncodeToString(BindingOf(ev).AAD(d.Value.Alg, d.Value.KID)), nil
	}
	return "", fmt.Errorf("no %s example", name)
}

// The document names every status, subject prefix and limit it describes.
func TestDocsMentions(t *testing.T) {
	doc := string(readFile(t, docsPath))
	want := []string{EventsPrefix, SettingsPrefix, ConfirmationsPrefix, DLQPrefix, AlgA256GCM, AlgPlaintext, AlgA256GCMKMS,
		KMSContextAlg, KMSContextTeamID, "kms_vectors", "kms_negative_vectors", "edk",
		"keyrelay-seal-v1", "Nats-Msg-Id", "allow_plaintext_values", "-update", "seal_vectors.json",
		fmt.Sprint(MaxEventBytes), fmt.Sprint(MaxValueBytes), fmt.Sprint(MaxIDLen), fmt.Sprint(MaxAliasLen), fmt.Sprint(MaxMetadataEntries)}
	for _, s := range []Status{StatusStored, StatusRotated, StatusDeleted, StatusSkipped, StatusSuperseded, StatusRejected, StatusFailed} {
		want = append(want, "`"+string(s)+"`")
	}
	for _, name := range SchemaNames() {
		want = append(want, "schema/"+name+".json")
	}
	for _, s := range want {
		if !strings.Contains(doc, s) {
			t.Errorf("docs/events.md does not mention %q", s)
		}
	}
}

// generateDocs reseals the value of every sealed example in
// docs/events.md with the example keyring (keeping a valid nonce) and
// rewrites the AAD blocks (-update).
func generateDocs(t *testing.T) {
	doc := readFile(t, docsPath)
	examples := parseDocExamples(t, doc)
	// Work backwards so earlier offsets stay valid.
	for i := len(examples) - 1; i >= 0; i-- {
		ex := examples[i]
		if ex.value == nil {
			continue
		}
		var raw struct {
			TeamID     string `json:"team_id"`
			KeyID      string `json:"key_id"`
			Generation uint64 `json:"generation"`
			Data       struct {
				Value struct {
					KID   string `json:"kid"`
					Nonce string `json:"nonce"`
					CT    string `json:"ct"`
				} `json:"value"`
			} `json:"data"`
		}
		if err := json.Unmarshal(ex.json, &raw); err != nil {
			t.Fatalf("line %d: %v", ex.line, err)
		}
		v := raw.Data.Value
		key, ok := exampleKeys()[v.KID]
		if !ok {
			t.Fatalf("line %d: kid %q is not in the example keyring", ex.line, v.KID)
		}
		nonce, err := b64Decode(v.Nonce)
		if err != nil || len(nonce) != 12 || bytes.Equal(nonce, make([]byte, 12)) {
			sum := sha256.Sum256([]byte(fmt.Sprintf("docs nonce %s %d", ex.name, i)))
			nonce = sum[:12]
		}
		sv, err := singleKeyring(t, v.KID, key).sealWithNonce([]byte(*ex.value),
			Binding{TeamID: raw.TeamID, KeyID: raw.KeyID, Generation: raw.Generation}, nonce)
		if err != nil {
			t.Fatal(err)
		}
		block := string(ex.json)
		block = strings.Replace(block, `"nonce": "`+v.Nonce+`"`, `"nonce": "`+b64(sv.Nonce)+`"`, 1)
		block = strings.Replace(block, `"ct": "`+v.CT+`"`, `"ct": "`+b64(sv.Ciphertext)+`"`, 1)
		doc = append(doc[:ex.start:ex.start], append([]byte(block), doc[ex.end:]...)...)
	}
	examples = parseDocExamples(t, doc)
	for i := len(examples) - 1; i >= 0; i-- {
		if ex := examples[i]; ex.name == SchemaSealedValue {
			doc = append(doc[:ex.start:ex.start], append(firstValue(t, examples, KeyCreated), doc[ex.end:]...)...)
		}
	}
	examples = parseDocExamples(t, doc)
	for i := len(examples) - 1; i >= 0; i-- {
		if ex := examples[i]; ex.name == docKMSSealedValue {
			doc = append(doc[:ex.start:ex.start], append(kmsDocValue(t), doc[ex.end:]...)...)
		}
	}
	examples = parseDocExamples(t, doc)
	doc = aadMarker.ReplaceAllFunc(doc, func(m []byte) []byte {
		name := string(aadMarker.FindSubmatch(m)[1])
		h, err := docAAD(examples, name)
		if err != nil {
			t.Fatal(err)
		}
		return []byte("<!-- aad: " + name + " -->\n```text\n" + h + "\n```")
	})
	writeFile(t, docsPath, doc)
}

func b64Decode(s string) ([]byte, error) { return base64.StdEncoding.Strict().DecodeString(s) }

// firstValue returns data.value of the first example of typ, indented as
// the document shows it.
func firstValue(t testing.TB, examples []docExample, typ Type) []byte {
	t.Helper()
	for _, ex := range examples {
		if ex.name == string(typ) {
			var raw struct {
				Data struct {
					Value json.RawMessage `json:"value"`
				} `json:"data"`
			}
			if err := json.Unmarshal(ex.json, &raw); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := json.Indent(&out, raw.Data.Value, "", "  "); err != nil {
				t.Fatal(err)
			}
			out.WriteByte('\n')
			return out.Bytes()
		}
	}
	t.Fatalf("no %s example", typ)
	return nil
}

// docKMSSealedValue marks the A256GCM-KMS example of docs/events.md: the
// sealed value of the kms-basic seal vector.
const docKMSSealedValue = "sealed_value_kms"

// kmsDocValue returns the kms-basic seal vector's sealed value, indented
// as the document shows it.
func kmsDocValue(t testing.TB) []byte {
	t.Helper()
	for _, v := range loadSealVectors(t).KMSVectors {
		if v.Name == "kms-basic" {
			return indentJSON(t, mustJSON(t, &v.Sealed))
		}
	}
	t.Fatal("no kms-basic seal vector")
	return nil
}
