package kms

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/seal"
	"github.com/keyrelay/keyrelay/seal/sealtest"
)

// TestConformance runs the wrapper suite against local-kms, with a proxy
// in front staging outages (503) and throttling (ThrottlingException);
// rotation moves key_id to a new KMS key, as an operator does.
func TestConformance(t *testing.T) {
	env := startKMS(t)
	proxy := sealtest.NewProxy(t, env.srv.URL)
	cfg := env.srv.AWSConfig()
	cfg.BaseEndpoint = aws.String(proxy.URL)
	client := awskms.NewFromConfig(cfg)
	keyID := env.alias
	awsErr := func(code, msg string) string { return `{"__type":"` + code + `","message":"` + msg + `"}` }
	jsonHdr := http.Header{"Content-Type": {"application/x-amz-json-1.1"}}
	sealtest.Run(t, sealtest.Options{
		New: func(t *testing.T) seal.Wrapper {
			w, err := NewWrapper(client, keyID)
			if err != nil {
				t.Fatal(err)
			}
			return w
		},
		Outage: func(t *testing.T, n int) {
			proxy.Fail(n, http.StatusServiceUnavailable, jsonHdr, awsErr("KMSInternalException", "internal error"))
		},
		Throttle: func(t *testing.T, n int, _ time.Duration) {
			proxy.Fail(n, http.StatusBadRequest, jsonHdr, awsErr("ThrottlingException", "Rate exceeded"))
		},
		Rotate: func(t *testing.T) {
			keyID = env.srv.CreateKey(t, "")
		},
		Features: sealtest.Features{BindsContext: true},
	})
}

// TestLegacyValuesOpen: A256GCM-KMS values sealed by the code before the
// envelope sealer (GenerateDataKey, the same encryption context and AAD)
// still open, and what the wrapper seals is that same format.
func TestLegacyValuesOpen(t *testing.T) {
	env := startKMS(t)
	b := events.Binding{TeamID: "team-a", KeyID: "key-1", Generation: 3}
	// Seal as the old Sealer did, by hand.
	out, err := env.client.GenerateDataKey(bg, &awskms.GenerateDataKeyInput{KeyId: aws.String(env.alias),
		KeySpec: "AES_256", EncryptionContext: b.KMSEncryptionContext()})
	if err != nil {
		t.Fatal(err)
	}
	dk, err := events.NewDataKey(aws.ToString(out.KeyId), out.Plaintext, out.CiphertextBlob)
	if err != nil {
		t.Fatal(err)
	}
	sv, err := dk.Seal([]byte(sentinel), b)
	if err != nil {
		t.Fatal(err)
	}
	s := testSealer(t, env.client, "")
	if got, err := s.Open(bg, sv, b); err != nil || string(got) != sentinel {
		t.Fatalf("legacy value: %v", err)
	}
	nv, err := testSealer(t, env.client, env.alias).Seal(bg, []byte(sentinel), b)
	if err != nil {
		t.Fatal(err)
	}
	if nv.Alg != events.AlgA256GCMKMS || nv.KID != env.keyARN {
		t.Fatalf("sealed %s", nv)
	}
	// The old opener (events.DataKey with KMS Decrypt) opens new values.
	dec, err := env.client.Decrypt(bg, &awskms.DecryptInput{CiphertextBlob: nv.EDK, KeyId: aws.String(nv.KID), EncryptionContext: b.KMSEncryptionContext()})
	if err != nil {
		t.Fatal(err)
	}
	odk, _ := events.NewDataKey(nv.KID, dec.Plaintext, nv.EDK)
	if got, err := odk.Open(nv, b); err != nil || !bytes.Equal(got, []byte(sentinel)) {
		t.Fatalf("old opener: %v", err)
	}
}
