package kms

import (
	"errors"
	"testing"
	"time"

	kmsapi "cloud.google.com/go/kms/apiv1"
	"cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/grpc/codes"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/seal"
	"github.com/keyrelay/keyrelay/seal/sealtest"
)

// TestConformance runs the wrapper suite against the in-process gRPC fake
// through the official client: outages are UNAVAILABLE, throttling
// RESOURCE_EXHAUSTED, rotation a new primary CryptoKeyVersion.
func TestConformance(t *testing.T) {
	env := startFake(t)
	env.client.CallOptions = &kmsapi.KeyManagementCallOptions{} // no client retries: the Sealer's policy decides, as with NewClient
	sealtest.Run(t, sealtest.Options{
		New: func(t *testing.T) seal.Wrapper {
			w, err := NewWrapper(env.client, testKey)
			if err != nil {
				t.Fatal(err)
			}
			return w
		},
		Outage: func(t *testing.T, n int) {
			env.fake.FailNext("Encrypt", codes.Unavailable, "service unavailable", n)
			env.fake.FailNext("Decrypt", codes.Unavailable, "service unavailable", n)
		},
		Throttle: func(t *testing.T, n int, _ time.Duration) {
			env.fake.FailNext("Encrypt", codes.ResourceExhausted, "quota exceeded", n)
			env.fake.FailNext("Decrypt", codes.ResourceExhausted, "quota exceeded", n)
		},
		Rotate: func(t *testing.T) {
			if _, err := env.fake.Rotate(testKey); err != nil {
				t.Fatal(err)
			}
		},
		Features: sealtest.Features{BindsContext: true},
	})
}

// TestLegacyValuesOpen: an A256GCM-GCPKMS value sealed the way the code
// before the envelope sealer did (a random data key wrapped by Encrypt
// with GCPKMSAdditionalData) opens, and New still seals that format.
func TestLegacyValuesOpen(t *testing.T) {
	env := startFake(t)
	b := events.Binding{TeamID: "team-a", KeyID: "key-1", Generation: 2}
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i * 7)
	}
	resp, err := env.client.Encrypt(bg, &kmspb.EncryptRequest{Name: testKey, Plaintext: key, AdditionalAuthenticatedData: b.GCPKMSAdditionalData()})
	if err != nil {
		t.Fatal(err)
	}
	dk, err := events.NewGCPKMSDataKey(testKey, key, resp.Ciphertext)
	if err != nil {
		t.Fatal(err)
	}
	sv, err := dk.Seal([]byte(sentinel), b)
	if err != nil {
		t.Fatal(err)
	}
	s := env.sealer(t, nil)
	if got, err := s.Open(bg, sv, b); err != nil || string(got) != sentinel {
		t.Fatalf("legacy value: %v", err)
	}
	nv, err := s.Seal(bg, []byte(sentinel), b)
	if err != nil || nv.Alg != events.AlgA256GCMGCPKMS || nv.KID != testKey {
		t.Fatalf("sealed %s, %v", nv, err)
	}
	if seal.Context(seal.Context{Alg: events.AlgA256GCMGCPKMS, TeamID: b.TeamID}).AdditionalData() == nil ||
		string(seal.Context{Alg: events.AlgA256GCMGCPKMS, TeamID: b.TeamID}.AdditionalData()) != string(b.GCPKMSAdditionalData()) {
		t.Error("the wrap context differs from the documented additional data")
	}
}

// TestChecksums: a response whose CRC32C does not match is a retryable
// ErrChecksum, never a data key.
func TestChecksums(t *testing.T) {
	env := startFake(t)
	api := &tamperAPI{API: env.client, encrypt: func(r *kmspb.EncryptResponse) { r.Ciphertext[0] ^= 1 }}
	s, err := NewSealer(api, testKey, seal.Config{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Seal(bg, []byte(sentinel), events.Binding{TeamID: "t", KeyID: "k"})
	if !errors.Is(err, ErrChecksum) || !providers.IsRetryable(err) {
		t.Fatalf("tampered Encrypt response: %v", err)
	}
	api = &tamperAPI{API: env.client, decrypt: func(r *kmspb.DecryptResponse) { r.Plaintext[0] ^= 1 }}
	sv, err := env.sealer(t, nil).Seal(bg, []byte(sentinel), events.Binding{TeamID: "t", KeyID: "k"})
	if err != nil {
		t.Fatal(err)
	}
	s, _ = NewSealer(api, "", seal.Config{MaxAttempts: 1})
	if _, err := s.Open(bg, sv, events.Binding{TeamID: "t", KeyID: "k"}); !errors.Is(err, ErrChecksum) || !providers.IsRetryable(err) {
		t.Fatalf("tampered Decrypt response: %v", err)
	}
}
