package kms

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/grpc/codes"

	"github.com/keyrelay/keyrelay/providers"
)

// A value encrypted with the official client decrypts as LiteLLM's
// get_secret decrypts it.
func TestLiteLLMDecryptRoundTrip(t *testing.T) {
	e := startFake(t)
	d, err := NewDecrypterFromOptions(bg, e.opts(nil), func(k string) string {
		if k == EnvResourceName {
			return testKey
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	if d.ResourceName() != testKey {
		t.Fatalf("ResourceName = %q", d.ResourceName())
	}
	value := " " + sentinel + " \n"
	b64 := base64.StdEncoding.EncodeToString(e.encrypt(t, testKey, []byte(value)))
	got, err := d.Decrypt(bg, b64)
	if err != nil || string(got) != value {
		t.Fatalf("Decrypt = %q, %v; want the value unstripped", got, err)
	}
	env := map[string]string{"OPENAI_API_KEY": b64}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	if got, err := d.GetSecret(bg, "OPENAI_API_KEY", lookup); err != nil || string(got) != value {
		t.Fatalf("GetSecret = %q, %v", got, err)
	}
	if _, err := d.GetSecret(bg, "MISSING", lookup); !errors.Is(err, ErrNotInEnvironment) {
		t.Fatalf("GetSecret(missing) = %v", err)
	}
	reqs := e.fake.Requests("Decrypt")
	last := reqs[len(reqs)-1].(*kmspb.DecryptRequest)
	if last.GetName() != testKey || len(last.GetAdditionalAuthenticatedData()) != 0 || last.GetCiphertextCrc32C() == nil {
		t.Fatalf("Decrypt request: name %q, aad %d bytes, crc %v", last.GetName(), len(last.GetAdditionalAuthenticatedData()), last.GetCiphertextCrc32C())
	}
	if h := e.fake.RoutingHeaders("Decrypt"); !strings.Contains(h[len(h)-1], "name=") {
		t.Fatalf("routing header %q", h[len(h)-1])
	}

	// A value encrypted under an older version still decrypts after rotation.
	if _, err := e.fake.Rotate(testKey); err != nil {
		t.Fatal(err)
	}
	if got, err := d.Decrypt(bg, b64); err != nil || string(got) != value {
		t.Fatalf("Decrypt after rotation = %q, %v", got, err)
	}
}

// LiteLLM's _is_base64 is strict; anything else is refused without a call.
func TestLiteLLMBase64Rules(t *testing.T) {
	e := startFake(t)
	d := NewDecrypter(e.client, testKey)
	ct := e.encrypt(t, testKey, []byte(sentinel))
	good := base64.StdEncoding.EncodeToString(ct)
	before := e.fake.Calls("Decrypt")
	for name, v := range map[string]string{
		"newline":    good + "\n",
		"unpadded":   strings.TrimRight(base64.StdEncoding.EncodeToString(ct[:len(ct)-1]), "="),
		"url":        base64.URLEncoding.EncodeToString([]byte{0xfb, 0xff, 0xfe}),
		"stray bits": "QR==",
		"garbage":    sentinel,
	} {
		_, err := d.Decrypt(bg, v)
		if !errors.Is(err, ErrMalformedValue) || providers.IsRetryable(err) {
			t.Errorf("%s: %v, want permanent ErrMalformedValue", name, err)
		}
		if err != nil && strings.Contains(err.Error(), sentinel) {
			t.Errorf("%s: error contains the value", name)
		}
	}
	if n := e.fake.Calls("Decrypt"); n != before {
		t.Fatalf("%d Decrypt calls for malformed values", n-before)
	}
	// "" is base64 to LiteLLM; Cloud KMS refuses the empty ciphertext.
	if _, err := d.Decrypt(bg, ""); Code(err) != codes.InvalidArgument || providers.IsRetryable(err) {
		t.Fatalf("Decrypt(\"\") = %v", err)
	}
}

func TestLiteLLMDecryptErrors(t *testing.T) {
	e := startFake(t)
	ct := e.encrypt(t, testKey, []byte(sentinel))
	b64 := base64.StdEncoding.EncodeToString(ct)
	tampered := append([]byte{}, ct...)
	tampered[len(tampered)-1] ^= 1

	if _, err := NewDecrypter(e.client, otherKey).Decrypt(bg, b64); !errors.Is(err, ErrInvalidCiphertext) || providers.IsRetryable(err) {
		t.Errorf("another key: %v", err)
	}
	if _, err := NewDecrypter(e.client, testKey).Decrypt(bg, base64.StdEncoding.EncodeToString(tampered)); !errors.Is(err, ErrInvalidCiphertext) {
		t.Errorf("tampered: %v", err)
	}
	unknown := "projects/p1/locations/global/keyRings/keyrelay/cryptoKeys/nope"
	if _, err := NewDecrypter(e.client, unknown).Decrypt(bg, b64); !errors.Is(err, ErrKeyUnusable) || Code(err) != codes.NotFound {
		t.Errorf("unknown key: %v", err)
	}
	notUTF8 := base64.StdEncoding.EncodeToString(e.encrypt(t, testKey, []byte{0xff, 0xfe}))
	if _, err := NewDecrypter(e.client, testKey).Decrypt(bg, notUTF8); !errors.Is(err, providers.ErrInvalid) || !strings.Contains(err.Error(), "UTF-8") {
		t.Errorf("not UTF-8: %v", err)
	}
	if _, err := NewDecrypter(e.client, "").Decrypt(bg, b64); !errors.Is(err, ErrNoKey) {
		t.Errorf("no key: %v", err)
	}
	if _, err := NewDecrypterFromOptions(bg, e.opts(nil), func(string) string { return "" }); !errors.Is(err, ErrNoKey) {
		t.Errorf("no GOOGLE_KMS_RESOURCE_NAME: %v", err)
	}
	e.fake.FailNext("Decrypt", codes.PermissionDenied, "Permission 'cloudkms.cryptoKeyVersions.useToDecrypt' denied on resource '"+testKey+"'.", 1)
	_, err := NewDecrypter(e.client, testKey).Decrypt(bg, b64)
	if !errors.Is(err, providers.ErrAccessDenied) || providers.IsRetryable(err) || !strings.Contains(err.Error(), "useToDecrypt") {
		t.Errorf("permission denied: %v", err)
	}
	// A corrupted response fails its checksum: retryable.
	api := &tamperAPI{API: e.client, decrypt: func(r *kmspb.DecryptResponse) { r.Plaintext = append(r.Plaintext, 'x') }}
	if _, err := NewDecrypter(api, testKey).Decrypt(bg, b64); !errors.Is(err, ErrChecksum) || !providers.IsRetryable(err) {
		t.Errorf("corrupted response: %v", err)
	}
}
