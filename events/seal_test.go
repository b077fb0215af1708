package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestSealOpen(t *testing.T) {
	kr := exampleKeyring(t)
	b := Binding{TeamID: "team-a", KeyID: "key-1", Generation: 9}
	for name, value := range map[string][]byte{
		"key":     []byte("sk-1234"),
		"empty":   {},
		"unicode": []byte("sk-ü-秘密-🔑"),
		"max":     bytes.Repeat([]byte{0xff}, MaxValueBytes),
	} {
		t.Run(name, func(t *testing.T) {
			sv, err := kr.Seal(bg, value, b)
			if err != nil {
				t.Fatal(err)
			}
			if sv.Alg != AlgA256GCM || sv.KID != exampleKID2 || len(sv.Nonce) != 12 || len(sv.Ciphertext) != len(value)+16 {
				t.Errorf("sealed %s", sv)
			}
			if len(value) > 4 && bytes.Contains(sv.Ciphertext, value) {
				t.Errorf("ciphertext contains the value")
			}
			got, err := kr.Open(bg, sv, b)
			if err != nil || !bytes.Equal(got, value) {
				t.Fatalf("Open = %v", err)
			}
			if err := ValidateSchema(SchemaSealedValue, mustJSON(t, sv)); err != nil {
				t.Errorf("schema: %v", err)
			}
		})
	}
	if _, err := kr.Seal(bg, make([]byte, MaxValueBytes+1), b); err == nil {
		t.Error("Seal accepted a value over MaxValueBytes")
	}
	sv1, _ := kr.Seal(bg, []byte("x"), b)
	sv2, _ := kr.Seal(bg, []byte("x"), b)
	if bytes.Equal(sv1.Nonce, sv2.Nonce) || bytes.Equal(sv1.Ciphertext, sv2.Ciphertext) {
		t.Error("two seals of the same value share a nonce or ciphertext")
	}
}

// A sealed value opens only for the event it was sealed for.
func TestSealedValueMovedToAnotherEvent(t *testing.T) {
	kr := exampleKeyring(t)
	ev, err := NewKeyEvent(bg, kr, KeyCreated, "team-a", "key-1", 5, []byte("sk-bound"), KeyData{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := ev.KeyData()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kr.Open(bg, d.Value, BindingOf(ev)); err != nil {
		t.Fatalf("own event: %v", err)
	}
	moves := map[string]func(e *Event){
		"another team":           func(e *Event) { e.TeamID = "team-b" },
		"another key":            func(e *Event) { e.KeyID = "key-2" },
		"another generation":     func(e *Event) { e.Generation = 6 },
		"generation removed":     func(e *Event) { e.Generation = 0 },
		"team and key swapped":   func(e *Event) { e.TeamID, e.KeyID = e.KeyID, e.TeamID },
		"key id moved into team": func(e *Event) { e.TeamID, e.KeyID = "team-a:key-1", "x" },
	}
	for name, move := range moves {
		t.Run(name, func(t *testing.T) {
			moved := *ev
			moved.ID = "evt-moved"
			move(&moved)
			// The moved event is well-formed: Decode cannot know; Open does.
			b, err := moved.Encode()
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			gd, _ := got.KeyData()
			if _, err := kr.Open(bg, gd.Value, BindingOf(got)); !errors.Is(err, ErrOpenFailed) {
				t.Errorf("Open = %v, want ErrOpenFailed", err)
			}
		})
	}
	t.Run("relabelled kid", func(t *testing.T) {
		sv := *d.Value
		sv.KID = exampleKID1
		if _, err := kr.Open(bg, &sv, BindingOf(ev)); !errors.Is(err, ErrOpenFailed) {
			t.Errorf("Open = %v, want ErrOpenFailed", err)
		}
	})
	t.Run("tampered", func(t *testing.T) {
		for i := range d.Value.Ciphertext {
			sv := *d.Value
			sv.Ciphertext = append([]byte(nil), sv.Ciphertext...)
			sv.Ciphertext[i] ^= 0x80
			if _, err := kr.Open(bg, &sv, BindingOf(ev)); !errors.Is(err, ErrOpenFailed) {
				t.Fatalf("byte %d flipped: Open = %v", i, err)
			}
		}
	})
}

// After a rotation new values use the new key and the old kid still opens
// retained history; dropping the old key makes it unknown.
func TestKeyringRotation(t *testing.T) {
	k1, k2 := seqBytes(0, 32), seqBytes(32, 32)
	before, err := NewKeyring("k1", map[string][]byte{"k1": k1})
	if err != nil {
		t.Fatal(err)
	}
	b := Binding{TeamID: "t", KeyID: "k", Generation: 1}
	old, err := before.Seal(bg, []byte("sk-old"), b)
	if err != nil {
		t.Fatal(err)
	}
	after, err := NewKeyring("k2", map[string][]byte{"k1": k1, "k2": k2})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := after.Open(bg, old, b); err != nil || string(got) != "sk-old" {
		t.Fatalf("old kid after rotation: %q, %v", got, err)
	}
	fresh, err := after.Seal(bg, []byte("sk-new"), b)
	if err != nil || fresh.KID != "k2" {
		t.Fatalf("new seal uses %s, %v", fresh, err)
	}
	if _, err := before.Open(bg, fresh, b); !errors.Is(err, ErrUnknownKeyID) {
		t.Errorf("the old keyring opening a k2 value = %v, want ErrUnknownKeyID", err)
	}
	retired, _ := NewKeyring("k2", map[string][]byte{"k2": k2})
	if _, err := retired.Open(bg, old, b); !errors.Is(err, ErrUnknownKeyID) {
		t.Errorf("k1 retired: Open = %v, want ErrUnknownKeyID", err)
	}
	if got := after.KeyIDs(); strings.Join(got, ",") != "k1,k2" || after.Active() != "k2" {
		t.Errorf("KeyIDs %v active %s", got, after.Active())
	}
}

func TestPlaintextValues(t *testing.T) {
	kr := exampleKeyring(t)
	b := Binding{TeamID: "t", KeyID: "k"}
	pv := PlaintextValue([]byte("sk-dev"))
	if _, err := kr.Open(bg, pv, b); !errors.Is(err, ErrPlaintextRefused) {
		t.Fatalf("default: Open = %v, want ErrPlaintextRefused", err)
	}
	kr.AllowPlaintext(true)
	got, err := kr.Open(bg, pv, b)
	if err != nil || string(got) != "sk-dev" {
		t.Fatalf("allowed: Open = %q, %v", got, err)
	}
	got[0] = 'X'
	if string(pv.Ciphertext) != "sk-dev" {
		t.Error("Open returned the sealed value's own buffer")
	}
	if got, err := kr.Open(bg, PlaintextValue(nil), b); err != nil || len(got) != 0 {
		t.Errorf("empty plaintext: %q, %v", got, err)
	}
	withKID := *pv
	withKID.KID = "k1"
	if _, err := kr.Open(bg, &withKID, b); !errors.Is(err, ErrInvalid) {
		t.Errorf("plaintext with kid: %v", err)
	}
	kr.AllowPlaintext(false)
	if _, err := kr.Open(bg, pv, b); !errors.Is(err, ErrPlaintextRefused) {
		t.Errorf("allowed then disallowed: Open = %v", err)
	}
	// The plaintext flag changes nothing for sealed values.
	sv, _ := kr.Seal(bg, []byte("sk"), b)
	if _, err := kr.Open(bg, sv, Binding{TeamID: "t", KeyID: "other"}); !errors.Is(err, ErrOpenFailed) {
		t.Errorf("sealed value under the wrong binding: %v", err)
	}
}

func TestOpenRefusesMalformedInput(t *testing.T) {
	kr := exampleKeyring(t)
	good, _ := kr.Seal(bg, []byte("sk"), Binding{TeamID: "t", KeyID: "k", Generation: 1})
	tests := map[string]struct {
		sv   *SealedValue
		b    Binding
		want error
	}{
		"nil value":            {nil, Binding{TeamID: "t", KeyID: "k"}, nil},
		"no alg":               {&SealedValue{Ciphertext: good.Ciphertext}, Binding{TeamID: "t"}, ErrInvalid},
		"unknown alg":          {&SealedValue{Alg: "A128GCM", KID: good.KID, Nonce: good.Nonce, Ciphertext: good.Ciphertext}, Binding{TeamID: "t"}, ErrInvalid},
		"short nonce":          {&SealedValue{Alg: AlgA256GCM, KID: good.KID, Nonce: good.Nonce[:8], Ciphertext: good.Ciphertext}, Binding{TeamID: "t"}, ErrInvalid},
		"no ciphertext":        {&SealedValue{Alg: AlgA256GCM, KID: good.KID, Nonce: good.Nonce}, Binding{TeamID: "t"}, ErrInvalid},
		"bad kid":              {&SealedValue{Alg: AlgA256GCM, KID: "k/1", Nonce: good.Nonce, Ciphertext: good.Ciphertext}, Binding{TeamID: "t"}, ErrInvalid},
		"unknown kid":          {&SealedValue{Alg: AlgA256GCM, KID: "nope", Nonce: good.Nonce, Ciphertext: good.Ciphertext}, Binding{TeamID: "t", KeyID: "k", Generation: 1}, ErrUnknownKeyID},
		"binding with NUL":     {good, Binding{TeamID: "t\x00k", KeyID: "", Generation: 1}, ErrInvalid},
		"binding without team": {good, Binding{KeyID: "k", Generation: 1}, ErrInvalid},
		"binding with dots":    {good, Binding{TeamID: "t", KeyID: "k.1", Generation: 1}, ErrInvalid},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			pt, err := kr.Open(bg, tc.sv, tc.b)
			if err == nil {
				t.Fatalf("Open succeeded: %q", pt)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Open = %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := kr.sealWithNonce([]byte("x"), Binding{TeamID: "t"}, make([]byte, 8)); err == nil {
		t.Error("sealWithNonce accepted an 8-byte nonce")
	}
	if _, err := kr.Seal(bg, []byte("x"), Binding{TeamID: "a\x00b"}); err == nil {
		t.Error("Seal accepted a binding the AAD cannot encode unambiguously")
	}
}

func TestBindingAAD(t *testing.T) {
	b := Binding{TeamID: "team-a", KeyID: "key-1", Generation: 42}
	want := "keyrelay-seal-v1\x00A256GCM\x00k1\x00team-a\x00key-1\x0042"
	if got := string(b.AAD(AlgA256GCM, "k1")); got != want {
		t.Errorf("AAD = %q, want %q", got, want)
	}
	if got := string(Binding{TeamID: "t"}.AAD(AlgA256GCM, "k")); got != "keyrelay-seal-v1\x00A256GCM\x00k\x00t\x00\x000" {
		t.Errorf("AAD without key and generation = %q", got)
	}
	if got := string(Binding{TeamID: "t", KeyID: "k", Generation: 1<<64 - 1}.AAD("A256GCM", "k")); !strings.HasSuffix(got, "\x0018446744073709551615") {
		t.Errorf("AAD of the max generation = %q", got)
	}
}

func TestKeyringFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keyring.json")
	if err := GenerateKeyringFile(path, "k-2025"); err != nil {
		t.Fatal(err)
	}
	if err := GenerateKeyringFile(path, "k-2025"); err == nil {
		t.Error("GenerateKeyringFile overwrote an existing file")
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	b := readFile(t, path)
	if err := ValidateSchema(SchemaKeyring, b); err != nil {
		t.Errorf("generated keyring vs schema: %v", err)
	}
	kr, err := LoadKeyring(path)
	if err != nil || kr.Active() != "k-2025" {
		t.Fatalf("LoadKeyring: %v", err)
	}

	tests := map[string]string{
		"not JSON":           `active: k1`,
		"no keys":            `{"active":"k1","keys":{}}`,
		"active not in keys": `{"active":"k2","keys":{"k1":"` + b64(seqBytes(0, 32)) + `"}}`,
		"short key":          `{"active":"k1","keys":{"k1":"` + b64(seqBytes(0, 16)) + `"}}`,
		"not base64":         `{"active":"k1","keys":{"k1":"not base64!"}}`,
		"bad kid":            `{"active":"k.1","keys":{"k.1":"` + b64(seqBytes(0, 32)) + `"}}`,
		"unknown field":      `{"active":"k1","activ":"k1","keys":{"k1":"` + b64(seqBytes(0, 32)) + `"}}`,
	}
	for name, doc := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseKeyring([]byte(doc)); err == nil {
				t.Error("ParseKeyring accepted it")
			} else if strings.Contains(err.Error(), b64(seqBytes(0, 32))) {
				t.Errorf("error echoes a key: %v", err)
			}
			if err := ValidateSchema(SchemaKeyring, []byte(doc)); err == nil && name != "active not in keys" {
				t.Error("the keyring schema accepts it")
			}
		})
	}
	if _, err := LoadKeyring(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("LoadKeyring of a missing file")
	}
	if _, err := NewKeyringFile("bad kid"); err == nil {
		t.Error("NewKeyringFile accepted a bad kid")
	}
	f, err := NewKeyringFile("k1")
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateSchema(SchemaKeyring, mustJSON(t, f)); err != nil {
		t.Errorf("NewKeyringFile vs schema: %v", err)
	}
}

func TestKeyringConcurrentUse(t *testing.T) {
	kr := exampleKeyring(t)
	b := Binding{TeamID: "t", KeyID: "k", Generation: 1}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				sv, err := kr.Seal(bg, []byte("sk"), b)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := kr.Open(bg, sv, b); err != nil {
					t.Error(err)
					return
				}
				kr.AllowPlaintext(j%2 == 0)
			}
		}()
	}
	wg.Wait()
}

func TestSealedValueString(t *testing.T) {
	sv := &SealedValue{Alg: AlgA256GCM, KID: "k1", Nonce: make([]byte, 12), Ciphertext: []byte("sk-visible?")}
	if s := sv.String(); strings.Contains(s, "sk-visible") || !strings.Contains(s, "k1") {
		t.Errorf("String() = %q", s)
	}
	var nilSV *SealedValue
	_ = nilSV.String()
	// JSON of a sealed value carries only base64, never raw bytes.
	if b := mustJSON(t, sv); bytes.Contains(b, []byte("sk-visible")) {
		t.Errorf("JSON %s", b)
	}
	var back SealedValue
	if err := json.Unmarshal(mustJSON(t, sv), &back); err != nil || !bytes.Equal(back.Ciphertext, sv.Ciphertext) {
		t.Errorf("round trip: %v", err)
	}
}
