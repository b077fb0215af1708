package seal_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/seal"
)

// vectorWrapper unwraps exactly the vector's edk to its data key, as the
// vector says the KMS would.
type vectorWrapper struct {
	alg, kid string
	edk, dk  []byte
}

func (v *vectorWrapper) Name() string  { return "vector" }
func (v *vectorWrapper) Alg() string   { return v.alg }
func (v *vectorWrapper) KeyID() string { return "" }
func (v *vectorWrapper) Wrap(context.Context, []byte, seal.Context) (seal.Wrapped, error) {
	return seal.Wrapped{}, providers.NewError("vector", "Wrap", "", providers.Permanent, seal.ErrNoKey)
}
func (v *vectorWrapper) Unwrap(_ context.Context, kid string, edk []byte, _ seal.Context) ([]byte, error) {
	if kid != v.kid || !bytes.Equal(edk, v.edk) {
		return nil, providers.NewError("vector", "Unwrap", kid, providers.Permanent, events.ErrOpenFailed)
	}
	return bytes.Clone(v.dk), nil
}
func (v *vectorWrapper) Classify(err error) seal.Class {
	c := seal.ClassifyProviderError(err)
	c.Refused = true
	return c
}

// TestSealVectors opens the envelope vectors of
// events/testdata/seal_vectors.json through the Sealer: the keyring ones
// with KeyringWrapper over the vector's keyring, the others with a wrapper
// that returns the vector's data key.
func TestSealVectors(t *testing.T) {
	raw, err := os.ReadFile("../events/testdata/seal_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Envelope []struct {
			Name, Wrapper, Alg, KID, EDK string
			DataKey                      string              `json:"data_key"`
			Keyring                      *events.KeyringFile `json:"keyring"`
			PlaintextHex                 string              `json:"plaintext_hex"`
			Binding                      struct {
				TeamID     string `json:"team_id"`
				KeyID      string `json:"key_id"`
				Generation uint64 `json:"generation"`
			} `json:"binding"`
			Sealed events.SealedValue `json:"sealed"`
		} `json:"envelope_vectors"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Envelope) == 0 {
		t.Fatal("no envelope vectors")
	}
	for _, v := range f.Envelope {
		t.Run(v.Name, func(t *testing.T) {
			var w seal.Wrapper
			if v.Keyring != nil {
				kb, _ := json.Marshal(v.Keyring)
				kr, err := events.ParseKeyring(kb)
				if err != nil {
					t.Fatal(err)
				}
				if w, err = seal.NewKeyringWrapper(kr, v.KID); err != nil {
					t.Fatal(err)
				}
			} else {
				dk, _ := base64.StdEncoding.DecodeString(v.DataKey)
				edk, _ := base64.StdEncoding.DecodeString(v.EDK)
				w = &vectorWrapper{alg: v.Alg, kid: v.KID, edk: edk, dk: dk}
			}
			s, err := seal.New(w, seal.Config{})
			if err != nil {
				t.Fatal(err)
			}
			b := events.Binding{TeamID: v.Binding.TeamID, KeyID: v.Binding.KeyID, Generation: v.Binding.Generation}
			want, _ := hex.DecodeString(v.PlaintextHex)
			got, err := s.Open(context.Background(), &v.Sealed, b)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("Open: %v", err)
			}
		})
	}
}
