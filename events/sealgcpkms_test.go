package events

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

const gcpKMSKID = "projects/p1/locations/global/keyRings/keyrelay/cryptoKeys/events"

// GCPKMSAdditionalData is the documented byte string.
func TestGCPKMSAdditionalData(t *testing.T) {
	got := Binding{TeamID: "team-a", KeyID: "k", Generation: 3}.GCPKMSAdditionalData()
	want := []byte("keyrelay:alg=A256GCM-GCPKMS\x00keyrelay:team_id=team-a")
	if !bytes.Equal(got, want) {
		t.Fatalf("GCPKMSAdditionalData = %q, want %q", got, want)
	}
	if bytes.Equal(got, Binding{TeamID: "team-b"}.GCPKMSAdditionalData()) {
		t.Fatal("two teams share additional data")
	}
}

// A GCP data key seals A256GCM-GCPKMS values that only it opens, bound to
// the event; the AWS data key, the keyring and Multi dispatch correctly.
func TestGCPKMSDataKeyRoundTrip(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	dk, err := NewGCPKMSDataKey(gcpKMSKID, key, []byte("opaque-edk"))
	if err != nil {
		t.Fatal(err)
	}
	if dk.Alg() != AlgA256GCMGCPKMS {
		t.Fatalf("Alg = %s", dk.Alg())
	}
	b := Binding{TeamID: "team-a", KeyID: "key-1", Generation: 1}
	sv, err := dk.Seal([]byte("sk-secret"), b)
	if err != nil {
		t.Fatal(err)
	}
	if sv.Alg != AlgA256GCMGCPKMS || sv.KID != gcpKMSKID || string(sv.EDK) != "opaque-edk" {
		t.Fatalf("sealed %v", sv)
	}
	if err := ValidateSchema(SchemaSealedValue, mustJSON(t, sv)); err != nil {
		t.Fatalf("schema: %v", err)
	}
	if pt, err := dk.Open(sv, b); err != nil || string(pt) != "sk-secret" {
		t.Fatalf("Open = %q, %v", pt, err)
	}
	if _, err := dk.Open(sv, Binding{TeamID: "team-a", KeyID: "key-1", Generation: 2}); !errors.Is(err, ErrOpenFailed) {
		t.Fatalf("Open for another generation = %v, want ErrOpenFailed", err)
	}
	// The same key bytes as an AWS data key do not open it.
	awsKey, err := NewDataKey(gcpKMSKID, key, []byte("opaque-edk"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := awsKey.Open(sv, b); !errors.Is(err, ErrUnsupportedAlg) {
		t.Fatalf("AWS data key Open = %v, want ErrUnsupportedAlg", err)
	}
	awsSV, err := awsKey.Seal([]byte("x"), b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dk.Open(awsSV, b); !errors.Is(err, ErrUnsupportedAlg) {
		t.Fatalf("GCP data key opens an AWS value: %v", err)
	}
	// Relabelling an AWS value as GCP fails authentication (alg is in the AAD).
	awsSV.Alg = AlgA256GCMGCPKMS
	if _, err := dk.Open(awsSV, b); !errors.Is(err, ErrOpenFailed) {
		t.Fatalf("relabelled value = %v, want ErrOpenFailed", err)
	}
	kr, err := NewKeyring("k1", map[string][]byte{"k1": key})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kr.Open(bg, sv, b); !errors.Is(err, ErrUnsupportedAlg) {
		t.Fatalf("Keyring.Open = %v, want ErrUnsupportedAlg", err)
	}
	var got []string
	m := Multi{kr, recordingOpener{"aws", []string{AlgA256GCMKMS}, &got}, recordingOpener{"gcp", []string{AlgA256GCMGCPKMS}, &got}}
	_, _ = m.Open(bg, sv, b)
	if len(got) != 1 || got[0] != "gcp" {
		t.Fatalf("Multi dispatched to %v, want gcp", got)
	}
}

// The sealed-value schema and SealedValue.validate agree on A256GCM-GCPKMS
// values at every boundary.
func TestGCPKMSSealedValueSchemaBoundaries(t *testing.T) {
	base := func() *SealedValue {
		return &SealedValue{Alg: AlgA256GCMGCPKMS, KID: gcpKMSKID, EDK: make([]byte, 100), Nonce: make([]byte, 12), Ciphertext: make([]byte, 16)}
	}
	cases := map[string]*SealedValue{}
	for _, n := range []int{0, 1, 4, MaxEDKBytes, MaxEDKBytes + 1} {
		sv := base()
		sv.EDK = make([]byte, n)
		cases[fmt.Sprintf("edk %d bytes", n)] = sv
	}
	for _, n := range []int{0, 15, 16, MaxValueBytes + 16, MaxValueBytes + 17} {
		sv := base()
		sv.Ciphertext = make([]byte, n)
		cases[fmt.Sprintf("ct %d bytes", n)] = sv
	}
	for _, kid := range []string{"", gcpKMSKID, strings.Repeat("a", MaxKMSKeyIDLen), strings.Repeat("a", MaxKMSKeyIDLen+1),
		"/projects", "projects/a b", "projects/p.q", "k\x00"} {
		sv := base()
		sv.KID = kid
		cases[fmt.Sprintf("kid %q", kid)] = sv
	}
	for _, n := range []int{0, 11, 12, 13} {
		sv := base()
		sv.Nonce = make([]byte, n)
		cases[fmt.Sprintf("nonce %d bytes", n)] = sv
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
	}
	if accepted < 5 || accepted == len(cases) {
		t.Errorf("%d of %d cases accepted: the table does not test both sides", accepted, len(cases))
	}
}

// docs/events.md describes the Google Cloud KMS scheme.
func TestDocsMentionGCPKMS(t *testing.T) {
	doc := string(readFile(t, docsPath))
	for _, s := range []string{AlgA256GCMGCPKMS, "GCPKMSAdditionalData", "keyrelay:alg=A256GCM-GCPKMS"} {
		if !strings.Contains(doc, s) {
			t.Errorf("docs/events.md does not mention %q", s)
		}
	}
}
