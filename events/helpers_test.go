package events

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// update rewrites the committed vectors, the fuzz seed corpora and the
// sealed values of docs/events.md from the generators in generate_test.go:
//
//	go test ./events -run TestGenerate -update
//
// Every other test only reads what is committed.
var update = flag.Bool("update", false, "rewrite testdata/ and the sealed values in docs/events.md")

// The example keyring of docs/events.md. Its keys are public test keys:
// every byte is its own index (example-k1) or index+32 (example-k2).
const (
	exampleKID1 = "example-k1"
	exampleKID2 = "example-k2"
)

func seqBytes(start byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

func exampleKeys() map[string][]byte {
	return map[string][]byte{exampleKID1: seqBytes(0, 32), exampleKID2: seqBytes(32, 32)}
}

// exampleKeyring is the documented keyring: example-k2 active, example-k1
// kept to open older values.
func exampleKeyring(t testing.TB) *Keyring {
	t.Helper()
	kr, err := NewKeyring(exampleKID2, exampleKeys())
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// singleKeyring holds one key, active.
func singleKeyring(t testing.TB, kid string, key []byte) *Keyring {
	t.Helper()
	kr, err := NewKeyring(kid, map[string][]byte{kid: key})
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

var bg = context.Background()

const (
	testdataEvents  = "testdata/events"
	sealVectorsPath = "testdata/seal_vectors.json"
	docsPath        = "../docs/events.md"
)

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func unb64(t testing.TB, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		t.Fatalf("bad base64 %q: %v", s, err)
	}
	return b
}

// indentJSON pretty-prints b keeping member order and repeated members.
func indentJSON(t testing.TB, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		t.Fatalf("indent: %v", err)
	}
	out.WriteByte('\n')
	return out.Bytes()
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// validationField returns err's *ValidationError field, or fails.
func validationField(t testing.TB, err error) string {
	t.Helper()
	ve, ok := err.(*ValidationError)
	if !ok {
		t.Fatalf("error %v (%T) is not a *ValidationError", err, err)
	}
	return ve.Field
}

func eventFiles(t testing.TB, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(testdataEvents, dir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		if !strings.HasSuffix(f, ".expect.json") {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no vectors in %s/%s", testdataEvents, dir)
	}
	return out
}
