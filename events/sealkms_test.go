package events

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// ---- A256GCM-KMS vectors (testdata/seal_vectors.json) ----

// kmsSealVector is one positive A256GCM-KMS vector. KMS itself is not
// needed to check one: data_key is what KMS Decrypt returns for edk.
type kmsSealVector struct {
	Name string `json:"name"`
	// DataKey is the 32-byte plaintext data key; EDK the opaque wrapped
	// form it stands for; KID the KMS key ARN.
	DataKey string `json:"data_key"`
	KID     string `json:"kid"`
	EDK     string `json:"edk"`
	// EncryptionContext is what KMS must be given to unwrap EDK.
	EncryptionContext map[string]string `json:"encryption_context"`
	Nonce             string            `json:"nonce"`
	Binding           vecBinding        `json:"binding"`
	// AADHex is Binding.AAD("A256GCM-KMS", KID) in hex.
	AADHex       string      `json:"aad_hex"`
	Plaintext    *string     `json:"plaintext,omitempty"`
	PlaintextHex string      `json:"plaintext_hex"`
	Sealed       SealedValue `json:"sealed"`
}

type kmsNegVector struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// The data key the opener holds (as if KMS had unwrapped EDK).
	DataKey string      `json:"data_key"`
	KID     string      `json:"kid"`
	EDK     string      `json:"edk"`
	Binding vecBinding  `json:"binding"`
	Sealed  SealedValue `json:"sealed"`
	// Error is open_failed or invalid.
	Error string `json:"error"`
}

const (
	kmsVectorKID1 = "arn:aws:kms:us-east-1:111122223333:key/0b7f4a52-9c3e-4d1a-8e6f-2a1b3c4d5e01"
	kmsVectorKID2 = "arn:aws:kms:eu-west-2:111122223333:key/mrk-5c2e8f0a1b3d4e6f8a9b0c1d2e3f4a5b"
)

// kmsVectorDataKey and kmsVectorEDK derive a vector's data key and its
// opaque "wrapped" form from a label: one label, one data key.
func kmsVectorDataKey(label string) []byte {
	k := sha256.Sum256([]byte("keyrelay kms vector data key " + label))
	return k[:]
}

func kmsVectorEDK(label string) []byte {
	var out []byte
	for i := 0; i < 3; i++ {
		s := sha256.Sum256([]byte(fmt.Sprintf("keyrelay kms vector edk %s %d", label, i)))
		out = append(out, s[:]...)
	}
	return out
}

func kmsVectorKey(t testing.TB, kid, label string) *DataKey {
	t.Helper()
	dk, err := NewDataKey(kid, kmsVectorDataKey(label), kmsVectorEDK(label))
	if err != nil {
		t.Fatal(err)
	}
	return dk
}

func generateKMSSealVectors(t *testing.T) ([]kmsSealVector, []kmsNegVector) {
	type kcase struct {
		name, kid, label, team, key string
		gen                         uint64
		value                       []byte
	}
	cases := []kcase{
		{"kms-basic", kmsVectorKID1, "dk-1", "team-a", "key-1", 1, []byte("sk-1234567890abcdef")},
		{"kms-same-data-key-other-event", kmsVectorKID1, "dk-1", "team-a", "key-2", 7, []byte("sk-second-event-same-data-key")},
		{"kms-other-team", kmsVectorKID1, "dk-2", "team-b", "key-1", 1, []byte("sk-1234567890abcdef")},
		{"kms-generation-max-uint64", kmsVectorKID1, "dk-1", "team-a", "k_x-y+z=1", 18446744073709551615, []byte("sk-max")},
		{"kms-empty-value", kmsVectorKID1, "dk-1", "team-a", "key-3", 2, []byte{}},
		{"kms-unicode-value", kmsVectorKID1, "dk-1", "team-a", "key-4", 3, []byte("sk-ü-秘密-🔑")},
		{"kms-multi-region-key", kmsVectorKID2, "dk-3", "t:acme@corp", "key-1", 1735787045123456, []byte("sk-mrk")},
	}
	var vecs []kmsSealVector
	for i, c := range cases {
		b := Binding{TeamID: c.team, KeyID: c.key, Generation: c.gen}
		nonce := vectorNonce(100 + i)
		sv, err := kmsVectorKey(t, c.kid, c.label).sealWithNonce(c.value, b, nonce)
		if err != nil {
			t.Fatal(err)
		}
		v := kmsSealVector{Name: c.name, DataKey: b64(kmsVectorDataKey(c.label)), KID: c.kid, EDK: b64(kmsVectorEDK(c.label)),
			EncryptionContext: b.KMSEncryptionContext(), Nonce: b64(nonce), Binding: vecBinding{c.team, c.key, c.gen},
			AADHex: hex.EncodeToString(b.AAD(AlgA256GCMKMS, c.kid)), PlaintextHex: hex.EncodeToString(c.value), Sealed: *sv}
		if utf8.Valid(c.value) {
			s := string(c.value)
			v.Plaintext = &s
		}
		vecs = append(vecs, v)
	}

	basic := vecs[0]
	bb := basic.Binding
	alter := func(change func(*SealedValue)) SealedValue {
		s := basic.Sealed
		s.Nonce = bytes.Clone(s.Nonce)
		s.Ciphertext = bytes.Clone(s.Ciphertext)
		s.EDK = bytes.Clone(s.EDK)
		change(&s)
		return s
	}
	flip := func(b []byte, i int) { b[i] ^= 0x01 }
	neg := func(name, desc string, b vecBinding, sv SealedValue, errKind string) kmsNegVector {
		return kmsNegVector{Name: name, Description: desc, DataKey: basic.DataKey, KID: basic.KID, EDK: basic.EDK,
			Binding: b, Sealed: sv, Error: errKind}
	}
	other := neg("wrong-data-key", "the opener's data key for this kid and edk is another key", bb, basic.Sealed, "open_failed")
	other.DataKey = b64(kmsVectorDataKey("not-dk-1"))
	negs := []kmsNegVector{
		neg("tampered-ct", "first ciphertext byte flipped", bb, alter(func(s *SealedValue) { flip(s.Ciphertext, 0) }), "open_failed"),
		neg("tampered-tag", "last tag byte flipped", bb, alter(func(s *SealedValue) { flip(s.Ciphertext, len(s.Ciphertext)-1) }), "open_failed"),
		neg("tampered-nonce", "nonce byte flipped", bb, alter(func(s *SealedValue) { flip(s.Nonce, 5) }), "open_failed"),
		neg("tampered-edk", "edk byte flipped (KMS would refuse to unwrap it)", bb, alter(func(s *SealedValue) { flip(s.EDK, 40) }), "open_failed"),
		neg("relabelled-kid", "kid replaced by another KMS key's ARN", bb, alter(func(s *SealedValue) { s.KID = kmsVectorKID2 }), "open_failed"),
		neg("wrong-generation", "opened as generation 2", vecBinding{bb.TeamID, bb.KeyID, 2}, basic.Sealed, "open_failed"),
		neg("wrong-key-id", "moved to key-2 (same team, so KMS would unwrap; the AAD refuses)", vecBinding{bb.TeamID, "key-2", bb.Generation}, basic.Sealed, "open_failed"),
		neg("wrong-team", "moved to team-b (KMS would refuse the encryption context; the AAD refuses too)", vecBinding{"team-b", bb.KeyID, bb.Generation}, basic.Sealed, "open_failed"),
		other,
		neg("edk-missing", "A256GCM-KMS without edk", bb, alter(func(s *SealedValue) { s.EDK = nil }), "invalid"),
		neg("kid-not-an-arn", "kid with a space", bb, alter(func(s *SealedValue) { s.KID = "alias/my key" }), "invalid"),
		neg("keyring-alg", "alg relabelled A256GCM (a keyring value may not carry edk)", bb, alter(func(s *SealedValue) { s.Alg = AlgA256GCM }), "invalid"),
	}
	return vecs, negs
}

func TestKMSSealVectors(t *testing.T) {
	f := loadSealVectors(t)
	if len(f.KMSVectors) == 0 {
		t.Fatal("no kms_vectors")
	}
	kr := exampleKeyring(t)
	teams, keys, kids, edks := map[string]bool{}, map[string]bool{}, map[string]bool{}, map[string]int{}
	for _, v := range f.KMSVectors {
		t.Run(v.Name, func(t *testing.T) {
			b := v.Binding.binding()
			teams[b.TeamID], keys[b.KeyID], kids[v.KID] = true, true, true
			edks[v.EDK]++
			if got := hex.EncodeToString(b.AAD(AlgA256GCMKMS, v.KID)); got != v.AADHex {
				t.Errorf("aad_hex:\n got %s\nwant %s", got, v.AADHex)
			}
			if !reflect.DeepEqual(b.KMSEncryptionContext(), v.EncryptionContext) {
				t.Errorf("encryption_context %v, want %v", v.EncryptionContext, b.KMSEncryptionContext())
			}
			if v.Sealed.Alg != AlgA256GCMKMS || v.Sealed.KID != v.KID || b64(v.Sealed.EDK) != v.EDK {
				t.Errorf("sealed %s does not carry the vector's kid and edk", &v.Sealed)
			}
			pt, err := hex.DecodeString(v.PlaintextHex)
			if err != nil {
				t.Fatal(err)
			}
			if v.Plaintext != nil && *v.Plaintext != string(pt) {
				t.Errorf("plaintext and plaintext_hex differ")
			}
			dk, err := NewDataKey(v.KID, unb64(t, v.DataKey), unb64(t, v.EDK))
			if err != nil {
				t.Fatal(err)
			}
			sv, err := dk.sealWithNonce(pt, b, unb64(t, v.Nonce))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(sv, &v.Sealed) {
				t.Errorf("sealWithNonce = %s ct=%s, want the committed %s ct=%s", sv, b64(sv.Ciphertext), &v.Sealed, b64(v.Sealed.Ciphertext))
			}
			if err := ValidateSchema(SchemaSealedValue, mustJSON(t, &v.Sealed)); err != nil {
				t.Errorf("sealed value vs schema: %v", err)
			}
			got, err := dk.Open(&v.Sealed, b)
			if err != nil || !bytes.Equal(got, pt) {
				t.Errorf("Open = %v", err)
			}
			if _, err := kr.Open(bg, &v.Sealed, b); !errors.Is(err, ErrUnsupportedAlg) {
				t.Errorf("Keyring.Open = %v, want ErrUnsupportedAlg", err)
			}
			got, err = Multi{kr, dataKeyOpener{dk}}.Open(bg, &v.Sealed, b)
			if err != nil || !bytes.Equal(got, pt) {
				t.Errorf("Multi.Open = %v", err)
			}
		})
	}
	shared := false
	for _, n := range edks {
		shared = shared || n > 1
	}
	if len(teams) < 2 || len(keys) < 2 || len(kids) < 2 || !shared {
		t.Errorf("kms vectors do not cover enough: teams=%d keys=%d kids=%d shared data key=%v", len(teams), len(keys), len(kids), shared)
	}

	kinds := map[string]error{"open_failed": ErrOpenFailed, "invalid": ErrInvalid}
	names := map[string]bool{}
	for _, v := range f.KMSNegative {
		names[v.Name] = true
		t.Run("negative/"+v.Name, func(t *testing.T) {
			want, ok := kinds[v.Error]
			if !ok {
				t.Fatalf("unknown error kind %q", v.Error)
			}
			dk, err := NewDataKey(v.KID, unb64(t, v.DataKey), unb64(t, v.EDK))
			if err != nil {
				t.Fatal(err)
			}
			got, err := dk.Open(&v.Sealed, v.Binding.binding())
			if err == nil {
				t.Fatalf("Open succeeded (%d bytes); want %s", len(got), v.Error)
			}
			if !errors.Is(err, want) {
				t.Errorf("Open error = %v; want %s", err, v.Error)
			}
			if v.Error == "invalid" && ValidateSchema(SchemaSealedValue, mustJSON(t, &v.Sealed)) == nil {
				t.Errorf("the schema accepts an invalid sealed value")
			}
		})
	}
	for _, n := range []string{"tampered-ct", "tampered-tag", "tampered-nonce", "tampered-edk", "relabelled-kid",
		"wrong-generation", "wrong-key-id", "wrong-team", "wrong-data-key", "edk-missing"} {
		if !names[n] {
			t.Errorf("kms negative vector %q missing", n)
		}
	}
}

// dataKeyOpener opens with one data key, as a KMS opener would after
// unwrapping it.
type dataKeyOpener struct{ dk *DataKey }

func (o dataKeyOpener) Open(_ context.Context, sv *SealedValue, b Binding) ([]byte, error) {
	return o.dk.Open(sv, b)
}

func (o dataKeyOpener) OpensAlg(alg string) bool { return alg == AlgA256GCMKMS }

// ---- DataKey, Multi, validation ----

func TestDataKeySealOpen(t *testing.T) {
	key := seqBytes(7, 32)
	dk, err := NewDataKey(kmsVectorKID1, key, []byte("opaque-edk"))
	if err != nil {
		t.Fatal(err)
	}
	clear(key) // the caller wipes the key; the DataKey keeps working
	b := Binding{TeamID: "team-a", KeyID: "key-1", Generation: 9}
	for name, value := range map[string][]byte{
		"key":     []byte("sk-1234"),
		"empty":   {},
		"unicode": []byte("sk-ü-秘密-🔑"),
		"max":     bytes.Repeat([]byte{0xff}, MaxValueBytes),
	} {
		t.Run(name, func(t *testing.T) {
			sv, err := dk.Seal(value, b)
			if err != nil {
				t.Fatal(err)
			}
			if sv.Alg != AlgA256GCMKMS || sv.KID != kmsVectorKID1 || string(sv.EDK) != "opaque-edk" || len(sv.Nonce) != 12 || len(sv.Ciphertext) != len(value)+16 {
				t.Errorf("sealed %s", sv)
			}
			got, err := dk.Open(sv, b)
			if err != nil || !bytes.Equal(got, value) {
				t.Fatalf("Open = %v", err)
			}
			if err := ValidateSchema(SchemaSealedValue, mustJSON(t, sv)); err != nil {
				t.Errorf("schema: %v", err)
			}
		})
	}
	sv, _ := dk.Seal([]byte("sk-x"), b)
	sv.EDK[0] ^= 1 // the returned EDK is a copy
	if !bytes.Equal(dk.EDK(), []byte("opaque-edk")) {
		t.Error("mutating a sealed value's edk changed the data key")
	}
	if _, err := dk.Seal(make([]byte, MaxValueBytes+1), b); err == nil {
		t.Error("Seal accepted a value over MaxValueBytes")
	}
	if _, err := dk.Seal([]byte("x"), Binding{TeamID: "a.b"}); err == nil {
		t.Error("Seal accepted an invalid binding")
	}
	// A keyring value is not a data key's to open, and the reverse.
	kr := exampleKeyring(t)
	ksv, _ := kr.Seal(bg, []byte("sk-k"), b)
	if _, err := dk.Open(ksv, b); !errors.Is(err, ErrUnsupportedAlg) {
		t.Errorf("DataKey.Open(A256GCM) = %v, want ErrUnsupportedAlg", err)
	}
	good, _ := dk.Seal([]byte("sk-k"), b)
	_, err = kr.Open(bg, good, b)
	if !errors.Is(err, ErrUnsupportedAlg) || errors.Is(err, ErrOpenFailed) || !strings.Contains(err.Error(), "KMS") {
		t.Errorf("Keyring.Open(A256GCM-KMS) = %v, want a clear ErrUnsupportedAlg", err)
	}

	for name, args := range map[string]struct {
		kid      string
		key, edk []byte
	}{
		"short key":   {kmsVectorKID1, make([]byte, 16), []byte("e")},
		"no edk":      {kmsVectorKID1, make([]byte, 32), nil},
		"huge edk":    {kmsVectorKID1, make([]byte, 32), make([]byte, MaxEDKBytes+1)},
		"empty kid":   {"", make([]byte, 32), []byte("e")},
		"kid with ws": {"alias/a b", make([]byte, 32), []byte("e")},
	} {
		if _, err := NewDataKey(args.kid, args.key, args.edk); err == nil {
			t.Errorf("NewDataKey accepted %s", name)
		}
	}
}

func TestDataKeyMovedToAnotherEvent(t *testing.T) {
	dk := kmsVectorKey(t, kmsVectorKID1, "move")
	other := kmsVectorKey(t, kmsVectorKID1, "other")
	b := Binding{TeamID: "team-a", KeyID: "key-1", Generation: 5}
	sv, err := dk.Seal([]byte("sk-bound"), b)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		b      Binding
		change func(*SealedValue)
		with   *DataKey
	}{
		"another team":       {b: Binding{TeamID: "team-b", KeyID: "key-1", Generation: 5}},
		"another key":        {b: Binding{TeamID: "team-a", KeyID: "key-2", Generation: 5}},
		"another generation": {b: Binding{TeamID: "team-a", KeyID: "key-1", Generation: 6}},
		"generation removed": {b: Binding{TeamID: "team-a", KeyID: "key-1"}},
		"relabelled kid":     {b: b, change: func(s *SealedValue) { s.KID = kmsVectorKID2 }},
		"swapped edk":        {b: b, change: func(s *SealedValue) { s.EDK = other.EDK() }, with: other},
		"other data key":     {b: b, change: func(s *SealedValue) { s.EDK = other.EDK() }},
	} {
		t.Run(name, func(t *testing.T) {
			moved := *sv
			moved.EDK = bytes.Clone(sv.EDK)
			if c.change != nil {
				c.change(&moved)
			}
			with := dk
			if c.with != nil {
				with = c.with
			}
			if _, err := with.Open(&moved, c.b); !errors.Is(err, ErrOpenFailed) {
				t.Errorf("Open = %v, want ErrOpenFailed", err)
			}
		})
	}
}

func TestKMSEncryptionContext(t *testing.T) {
	b := Binding{TeamID: "team-a", KeyID: "key-1", Generation: 3}
	want := map[string]string{"keyrelay:alg": "A256GCM-KMS", "keyrelay:team_id": "team-a"}
	if got := b.KMSEncryptionContext(); !reflect.DeepEqual(got, want) {
		t.Errorf("context %v, want %v", got, want)
	}
	// Same team, another key or generation: the same context (one data key
	// may seal both); another team: another context.
	if !reflect.DeepEqual(b.KMSEncryptionContext(), Binding{TeamID: "team-a", KeyID: "key-9", Generation: 99}.KMSEncryptionContext()) {
		t.Error("the context depends on more than the team")
	}
	if reflect.DeepEqual(b.KMSEncryptionContext(), Binding{TeamID: "team-b", KeyID: "key-1", Generation: 3}.KMSEncryptionContext()) {
		t.Error("two teams share a context")
	}
}

// recordingOpener opens everything it is given and records the alg.
type recordingOpener struct {
	name string
	algs []string
	got  *[]string
}

func (r recordingOpener) Open(_ context.Context, sv *SealedValue, _ Binding) ([]byte, error) {
	*r.got = append(*r.got, r.name)
	return []byte(r.name), nil
}

func (r recordingOpener) OpensAlg(alg string) bool {
	for _, a := range r.algs {
		if a == alg {
			return true
		}
	}
	return false
}

type catchAll struct{ got *[]string }

func (c catchAll) Open(context.Context, *SealedValue, Binding) ([]byte, error) {
	*c.got = append(*c.got, "catch-all")
	return []byte("catch-all"), nil
}

func TestMulti(t *testing.T) {
	kr := exampleKeyring(t)
	dk := kmsVectorKey(t, kmsVectorKID1, "multi")
	b := Binding{TeamID: "team-a", KeyID: "key-1", Generation: 1}
	local, _ := kr.Seal(bg, []byte("sk-local"), b)
	remote, _ := dk.Seal([]byte("sk-kms"), b)
	m := Multi{kr, nil, dataKeyOpener{dk}}
	for name, c := range map[string]struct {
		sv   *SealedValue
		want string
		err  error
	}{
		"keyring value": {sv: local, want: "sk-local"},
		"kms value":     {sv: remote, want: "sk-kms"},
		"plaintext":     {sv: PlaintextValue([]byte("sk-p")), err: ErrPlaintextRefused},
		"unknown alg":   {sv: &SealedValue{Alg: "A128GCM", KID: "k", Nonce: make([]byte, 12), Ciphertext: make([]byte, 16)}, err: ErrInvalid},
		"malformed":     {sv: &SealedValue{Alg: AlgA256GCMKMS, KID: kmsVectorKID1, Nonce: make([]byte, 12), Ciphertext: make([]byte, 16)}, err: ErrInvalid},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := m.Open(bg, c.sv, b)
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Errorf("Open = %v, want %v", err, c.err)
				}
				return
			}
			if err != nil || string(got) != c.want {
				t.Errorf("Open = %q, %v", got, err)
			}
		})
	}
	if _, err := m.Open(bg, nil, b); err == nil {
		t.Error("Open(nil) succeeded")
	}
	// Without a KMS opener a KMS value is unsupported, not a failed
	// authentication.
	if _, err := (Multi{kr}).Open(bg, remote, b); !errors.Is(err, ErrUnsupportedAlg) || errors.Is(err, ErrOpenFailed) {
		t.Errorf("Multi{keyring}.Open(kms value) = %v, want ErrUnsupportedAlg", err)
	}
	if !m.OpensAlg(AlgA256GCMKMS) || !m.OpensAlg(AlgA256GCM) || m.OpensAlg("A128GCM") {
		t.Error("OpensAlg")
	}
	// First AlgOpener that claims the alg wins; a catch-all only when none
	// does.
	var got []string
	m2 := Multi{catchAll{&got}, recordingOpener{"a", []string{AlgA256GCM}, &got}, recordingOpener{"b", []string{AlgA256GCM, AlgA256GCMKMS}, &got}}
	_, _ = m2.Open(bg, local, b)
	_, _ = m2.Open(bg, remote, b)
	_, _ = m2.Open(bg, PlaintextValue([]byte("x")), b)
	if want := []string{"a", "b", "catch-all"}; !reflect.DeepEqual(got, want) {
		t.Errorf("dispatch %v, want %v", got, want)
	}
}

// The sealed-value schema and SealedValue.validate agree on A256GCM-KMS
// values at every boundary.
func TestKMSSealedValueSchemaBoundaries(t *testing.T) {
	base := func() *SealedValue {
		return &SealedValue{Alg: AlgA256GCMKMS, KID: kmsVectorKID1, EDK: make([]byte, 100), Nonce: make([]byte, 12), Ciphertext: make([]byte, 16)}
	}
	cases := map[string]*SealedValue{}
	for _, n := range []int{0, 1, 2, 3, 4, MaxEDKBytes - 2, MaxEDKBytes - 1, MaxEDKBytes, MaxEDKBytes + 1, MaxEDKBytes + 2, MaxEDKBytes + 3} {
		sv := base()
		sv.EDK = make([]byte, n)
		cases[fmt.Sprintf("edk %d bytes", n)] = sv
	}
	for _, n := range []int{0, 15, 16, MaxValueBytes + 16, MaxValueBytes + 17} {
		sv := base()
		sv.Ciphertext = make([]byte, n)
		cases[fmt.Sprintf("ct %d bytes", n)] = sv
	}
	for _, kid := range []string{"", "a", strings.Repeat("a", MaxKMSKeyIDLen), strings.Repeat("a", MaxKMSKeyIDLen+1),
		"alias/keyrelay", "arn:aws:kms:us-east-1:111122223333:alias/key_relay-1", "1234abcd-12ab-34cd-56ef-1234567890ab",
		"/alias", "-x", "alias/a b", "alias/a.b", "alias/ü", "k\x00", "arn:aws:kms:us-east-1:1:key/x\n"} {
		sv := base()
		sv.KID = kid
		cases[fmt.Sprintf("kid %q", kid)] = sv
	}
	for _, n := range []int{0, 11, 12, 13} {
		sv := base()
		sv.Nonce = make([]byte, n)
		cases[fmt.Sprintf("nonce %d bytes", n)] = sv
	}
	for _, alg := range []string{AlgA256GCM, AlgPlaintext} {
		sv := &SealedValue{Alg: alg, EDK: []byte("e"), Ciphertext: make([]byte, 16)}
		if alg == AlgA256GCM {
			sv.KID, sv.Nonce = "k1", make([]byte, 12)
		}
		cases[alg+" with edk"] = sv
	}
	accepted := 0
	for name, sv := range cases {
		goErr := sv.validate("value")
		schemaErr := ValidateSchema(SchemaSealedValue, mustJSON(t, sv))
		if (goErr == nil) != (schemaErr == nil) {
			t.Errorf("%s: Go says %v, schema says %v", name, goErr, schemaErr)
		}
		if goErr == nil {
			accepted++
		}
		if goErr != nil && strings.Contains(goErr.Error(), "\x00") {
			t.Errorf("%s: error echoes a control character", name)
		}
	}
	if accepted < 8 || accepted == len(cases) {
		t.Errorf("%d of %d cases accepted: the table does not test both sides", accepted, len(cases))
	}
}
