package events

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
	"unicode/utf8"
)

// envelopeVector is one positive vector of an envelope algorithm other
// than A256GCM-KMS (package seal's wrappers: A256GCM-KEYRING,
// A256GCM-VAULT, A256GCM-AZKV, and A256GCM-GCPKMS). The value is sealed
// exactly as an A256GCM-KMS value; what differs is how edk wraps the data
// key, which the vector describes for each wrapper.
type envelopeVector struct {
	Name string `json:"name"`
	// Wrapper is keyring, google_kms, vault_transit or
	// azure_key_vault_keys.
	Wrapper string `json:"wrapper"`
	Alg     string `json:"alg"`
	// DataKey is the 32-byte data key; KID and EDK what the value carries.
	DataKey string `json:"data_key"`
	KID     string `json:"kid"`
	EDK     string `json:"edk"`
	// WrapAADHex is the additional data the key-encryption key binds the
	// data key to, in hex: "keyrelay:alg=" alg 0x00 "keyrelay:team_id="
	// team_id (Cloud KMS, Vault Transit associated_data, the keyring).
	// Absent for Azure (RSA-OAEP takes none).
	WrapAADHex string `json:"wrap_aad_hex,omitempty"`
	// Keyring, for the keyring wrapper only, holds the key-encryption keys:
	// edk = len(member) || member || nonce(12) || AES-256-GCM(keyring key
	// member, data key, wrap aad), so an implementation can unwrap it.
	Keyring *KeyringFile `json:"keyring,omitempty"`
	// EDKVersion is the key version edk records, where the format shows it
	// (vault_transit: "vault:vN:" prefix; azure: len || version prefix;
	// keyring: the member key id).
	EDKVersion   string      `json:"edk_version,omitempty"`
	Nonce        string      `json:"nonce"`
	Binding      vecBinding  `json:"binding"`
	AADHex       string      `json:"aad_hex"`
	Plaintext    *string     `json:"plaintext,omitempty"`
	PlaintextHex string      `json:"plaintext_hex"`
	Sealed       SealedValue `json:"sealed"`
}

// envelopeNegVector must not open with data_key (or, for the keyring, the
// keyring) under binding.
type envelopeNegVector struct {
	Name        string       `json:"name"`
	Description string       `json:"description"`
	DataKey     string       `json:"data_key"`
	Keyring     *KeyringFile `json:"keyring,omitempty"`
	Binding     vecBinding   `json:"binding"`
	Sealed      SealedValue  `json:"sealed"`
	// Error is open_failed or invalid.
	Error string `json:"error"`
}

// wrapAAD is seal.Context.AdditionalData (package seal imports events, so
// the test spells it out).
func wrapAAD(alg, team string) []byte {
	return []byte(KMSContextAlg + "=" + alg + "\x00" + KMSContextTeamID + "=" + team)
}

func envVectorKey(label string) []byte {
	k := sha256.Sum256([]byte("keyrelay envelope vector data key " + label))
	return k[:]
}

// keyringEDK wraps dk with member's key of kf under aad and nonce.
func keyringEDK(t testing.TB, kf *KeyringFile, member string, dk, aad, nonce []byte) []byte {
	t.Helper()
	block, err := aes.NewCipher(unb64(t, kf.Keys[member]))
	if err != nil {
		t.Fatal(err)
	}
	gcm, _ := cipher.NewGCM(block)
	out := append([]byte{byte(len(member))}, member...)
	out = append(out, nonce...)
	return gcm.Seal(out, nonce, dk, aad)
}

func generateEnvelopeVectors(t *testing.T) ([]envelopeVector, []envelopeNegVector) {
	ring := &KeyringFile{Active: "kek-2", Keys: map[string]string{"kek-1": b64(vectorKey("kek-1")), "kek-2": b64(vectorKey("kek-2"))}}
	type ecase struct {
		name, wrapper, alg, kid, label, version, team, key string
		gen                                                uint64
		value                                              []byte
	}
	cases := []ecase{
		{"keyring-basic", "keyring", "A256GCM-KEYRING", "keyring", "kr-1", "kek-2", "team-a", "key-1", 1, []byte("sk-1234567890abcdef")},
		{"keyring-rotated-out-kek", "keyring", "A256GCM-KEYRING", "keyring", "kr-2", "kek-1", "team-b", "key-9", 4, []byte("sk-wrapped-by-the-older-kek")},
		{"vault-basic", "vault_transit", "A256GCM-VAULT", "transit/keyrelay", "vt-1", "v3", "team-a", "key-1", 1, []byte("sk-1234567890abcdef")},
		{"vault-unicode", "vault_transit", "A256GCM-VAULT", "kv-prod/transit/keyrelay-kek", "vt-2", "v1", "t:acme@corp", "k_x-y+z=1", 18446744073709551615, []byte("sk-ü-秘密-🔑")},
		{"azure-basic", "azure_key_vault_keys", "A256GCM-AZKV", "keyrelay-kek", "az-1", "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "team-a", "key-1", 1, []byte("sk-1234567890abcdef")},
		{"azure-empty-value", "azure_key_vault_keys", "A256GCM-AZKV", "keyrelay-kek", "az-1", "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "team-a", "key-2", 0, []byte{}},
		{"gcpkms-basic", "google_kms", AlgA256GCMGCPKMS, "projects/p1/locations/global/keyRings/keyrelay/cryptoKeys/events", "gc-1", "", "team-a", "key-1", 1, []byte("sk-1234567890abcdef")},
	}
	var vecs []envelopeVector
	for i, c := range cases {
		b := Binding{TeamID: c.team, KeyID: c.key, Generation: c.gen}
		dk := envVectorKey(c.label)
		aad := wrapAAD(c.alg, c.team)
		var edk []byte
		v := envelopeVector{Name: c.name, Wrapper: c.wrapper, Alg: c.alg, DataKey: b64(dk), KID: c.kid, EDKVersion: c.version,
			WrapAADHex: hex.EncodeToString(aad)}
		switch c.wrapper {
		case "keyring":
			edk = keyringEDK(t, ring, c.version, dk, aad, vectorNonce(200+i))
			v.Keyring = ring
		case "vault_transit":
			// Opaque: what Transit returns, "vault:vN:" and its base64.
			edk = []byte("vault:" + c.version + ":" + b64(kmsVectorEDK(c.label)))
		case "azure_key_vault_keys":
			// len(version) || version || the RSA-OAEP-256 ciphertext (opaque).
			edk = append(append([]byte{byte(len(c.version))}, c.version...), bytes.Repeat(kmsVectorEDK(c.label), 3)[:256]...)
			v.WrapAADHex = ""
		default:
			edk = kmsVectorEDK(c.label)
		}
		dkey, err := NewEnvelopeDataKey(c.alg, c.kid, dk, edk)
		if err != nil {
			t.Fatal(err)
		}
		nonce := vectorNonce(150 + i)
		sv, err := dkey.sealWithNonce(c.value, b, nonce)
		if err != nil {
			t.Fatal(err)
		}
		v.EDK, v.Nonce, v.Binding, v.Sealed = b64(edk), b64(nonce), vecBinding{c.team, c.key, c.gen}, *sv
		v.AADHex, v.PlaintextHex = hex.EncodeToString(b.AAD(c.alg, c.kid)), hex.EncodeToString(c.value)
		if utf8.Valid(c.value) {
			s := string(c.value)
			v.Plaintext = &s
		}
		vecs = append(vecs, v)
	}
	kb := vecs[0]
	vb := vecs[2]
	alter := func(base envelopeVector, change func(*SealedValue)) SealedValue {
		s := base.Sealed
		s.Nonce, s.Ciphertext, s.EDK = bytes.Clone(s.Nonce), bytes.Clone(s.Ciphertext), bytes.Clone(s.EDK)
		change(&s)
		return s
	}
	negs := []envelopeNegVector{
		{Name: "keyring-tampered-edk", Description: "last byte of the wrapped key flipped: the keyring refuses to unwrap it", Keyring: kb.Keyring,
			Binding: kb.Binding, Sealed: alter(kb, func(s *SealedValue) { s.EDK[len(s.EDK)-1] ^= 1 }), Error: "open_failed"},
		{Name: "keyring-moved-to-team-b", Description: "the wrap aad names team-a: the keyring refuses to unwrap under team-b", Keyring: kb.Keyring,
			Binding: vecBinding{"team-b", kb.Binding.KeyID, kb.Binding.Generation}, Sealed: kb.Sealed, Error: "open_failed"},
		{Name: "vault-wrong-generation", Description: "opened as generation 2", DataKey: vb.DataKey,
			Binding: vecBinding{vb.Binding.TeamID, vb.Binding.KeyID, 2}, Sealed: vb.Sealed, Error: "open_failed"},
		{Name: "vault-relabelled-kid", Description: "kid replaced: the AAD names the kid", DataKey: vb.DataKey, Binding: vb.Binding,
			Sealed: alter(vb, func(s *SealedValue) { s.KID = "transit/other" }), Error: "open_failed"},
		{Name: "vault-relabelled-alg", Description: "alg replaced by another wrapper's: the AAD names the alg", DataKey: vb.DataKey, Binding: vb.Binding,
			Sealed: alter(vb, func(s *SealedValue) { s.Alg = "A256GCM-AZKV" }), Error: "open_failed"},
		{Name: "vault-tampered-ct", Description: "first ciphertext byte flipped", DataKey: vb.DataKey, Binding: vb.Binding,
			Sealed: alter(vb, func(s *SealedValue) { s.Ciphertext[0] ^= 1 }), Error: "open_failed"},
		{Name: "lowercase-wrapper-name", Description: "A256GCM-vault is not an envelope algorithm", DataKey: vb.DataKey, Binding: vb.Binding,
			Sealed: alter(vb, func(s *SealedValue) { s.Alg = "A256GCM-vault" }), Error: "invalid"},
		{Name: "envelope-without-edk", Description: "an envelope value must carry edk", DataKey: vb.DataKey, Binding: vb.Binding,
			Sealed: alter(vb, func(s *SealedValue) { s.EDK = nil }), Error: "invalid"},
	}
	return vecs, negs
}

// openEnvelopeVector opens sv as an implementation would: with the data key
// given, or (keyring) by unwrapping edk with the keyring first.
func openEnvelopeVector(t *testing.T, dataKey string, kf *KeyringFile, sv *SealedValue, b Binding) ([]byte, error) {
	t.Helper()
	if err := sv.Validate(); err != nil {
		return nil, err
	}
	var dk []byte
	if kf != nil {
		kr, err := ParseKeyring(mustJSON(t, kf))
		if err != nil {
			t.Fatal(err)
		}
		n := int(sv.EDK[0])
		dk, err = kr.UnwrapKey(string(sv.EDK[1:1+n]), sv.EDK[1+n:], wrapAAD(sv.Alg, b.TeamID))
		if err != nil {
			return nil, err
		}
	} else {
		dk = unb64(t, dataKey)
	}
	key, err := NewEnvelopeDataKey(sv.Alg, sv.KID, dk, sv.EDK)
	if err != nil {
		return nil, err
	}
	return key.Open(sv, b)
}

func TestEnvelopeSealVectors(t *testing.T) {
	f := loadSealVectors(t)
	wrappers := map[string]bool{}
	for _, v := range f.EnvelopeVectors {
		t.Run(v.Name, func(t *testing.T) {
			wrappers[v.Wrapper] = true
			b := v.Binding.binding()
			if !IsEnvelopeAlg(v.Alg) || v.Sealed.Alg != v.Alg || v.Sealed.KID != v.KID || b64(v.Sealed.EDK) != v.EDK {
				t.Fatalf("sealed %s does not carry the vector's alg, kid and edk", &v.Sealed)
			}
			if got := hex.EncodeToString(b.AAD(v.Alg, v.KID)); got != v.AADHex {
				t.Errorf("aad_hex:\n got %s\nwant %s", got, v.AADHex)
			}
			if v.WrapAADHex != "" && v.WrapAADHex != hex.EncodeToString(wrapAAD(v.Alg, b.TeamID)) {
				t.Errorf("wrap_aad_hex is not the documented wrap context")
			}
			if v.Alg == AlgA256GCMGCPKMS && v.WrapAADHex != hex.EncodeToString(b.GCPKMSAdditionalData()) {
				t.Errorf("the Cloud KMS wrap aad differs from GCPKMSAdditionalData")
			}
			pt, _ := hex.DecodeString(v.PlaintextHex)
			dk, err := NewEnvelopeDataKey(v.Alg, v.KID, unb64(t, v.DataKey), unb64(t, v.EDK))
			if err != nil {
				t.Fatal(err)
			}
			sv, err := dk.sealWithNonce(pt, b, unb64(t, v.Nonce))
			if err != nil || !bytes.Equal(sv.Ciphertext, v.Sealed.Ciphertext) {
				t.Fatalf("sealWithNonce does not reproduce sealed.ct: %v", err)
			}
			if err := ValidateSchema(SchemaSealedValue, mustJSON(t, &v.Sealed)); err != nil {
				t.Errorf("schema: %v", err)
			}
			got, err := openEnvelopeVector(t, v.DataKey, v.Keyring, &v.Sealed, b)
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("open: %v", err)
			}
			if v.Keyring != nil && (v.EDKVersion == "" || !bytes.HasPrefix(v.Sealed.EDK[1:], []byte(v.EDKVersion))) {
				t.Errorf("edk does not record the keyring key %q", v.EDKVersion)
			}
		})
	}
	for _, w := range []string{"keyring", "vault_transit", "azure_key_vault_keys", "google_kms"} {
		if !wrappers[w] {
			t.Errorf("no envelope vector for %s", w)
		}
	}
	kinds := map[string]error{"open_failed": ErrOpenFailed, "invalid": ErrInvalid}
	for _, v := range f.EnvelopeNegative {
		t.Run("negative/"+v.Name, func(t *testing.T) {
			got, err := openEnvelopeVector(t, v.DataKey, v.Keyring, &v.Sealed, v.Binding.binding())
			if err == nil {
				t.Fatalf("opened (%d bytes); want %s", len(got), v.Error)
			}
			if !errors.Is(err, kinds[v.Error]) {
				t.Errorf("error %v, want %s", err, v.Error)
			}
		})
	}
}
