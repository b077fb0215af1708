package kms

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"cloud.google.com/go/kms/apiv1/kmspb"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/seal"
)

// OptionResourceName overrides GOOGLE_KMS_RESOURCE_NAME for
// NewDecrypterFromOptions.
const OptionResourceName = "resource_name"

// Decrypter decrypts values the way LiteLLM reads secrets with
// key_management_system "google_kms": the secret's environment variable
// holds the base64 Cloud KMS ciphertext, decrypted with the CryptoKey
// named by GOOGLE_KMS_RESOURCE_NAME. It is safe for concurrent use and
// caches nothing.
type Decrypter struct {
	api          API
	resourceName string
	timeout      time.Duration
}

// NewDecrypter returns a Decrypter over api for the CryptoKey resourceName
// (LiteLLM's GOOGLE_KMS_RESOURCE_NAME).
func NewDecrypter(api API, resourceName string) *Decrypter {
	return &Decrypter{api: api, resourceName: resourceName, timeout: seal.CallTimeoutDefault}
}

// NewDecrypterFromOptions builds a Decrypter from the connection options
// of NewClient and the key in option "resource_name" or, as LiteLLM reads
// it, the environment variable GOOGLE_KMS_RESOURCE_NAME (getenv nil means
// os.Getenv).
func NewDecrypterFromOptions(ctx context.Context, opts map[string]string, getenv func(string) string) (*Decrypter, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	name := strings.TrimSpace(opts[OptionResourceName])
	if name == "" {
		name = strings.TrimSpace(getenv(EnvResourceName))
	}
	if name == "" {
		return nil, fmt.Errorf("google_kms: %w", ErrNoKey)
	}
	client, err := NewClient(ctx, opts)
	if err != nil {
		return nil, err
	}
	return NewDecrypter(client, name), nil
}

// ResourceName returns the CryptoKey values are decrypted with.
func (d *Decrypter) ResourceName() string { return d.resourceName }

// isLiteLLMBase64 is LiteLLM's _is_base64:
// base64.b64encode(base64.b64decode(s)).decode() == s, i.e. s is canonical
// standard base64 with padding (no whitespace, no URL alphabet, no stray
// bits). The empty string counts as base64.
func isLiteLLMBase64(s string) ([]byte, bool) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || base64.StdEncoding.EncodeToString(b) != s {
		return nil, false
	}
	return b, true
}

// Decrypt decrypts one value as LiteLLM's get_secret does for google_kms:
// the value must be canonical base64 (LiteLLM's _is_base64; anything else
// is refused, the fix for huntr ae623c2f), Cloud KMS Decrypt gets name =
// the resource name and the ciphertext (plus its CRC32C, which LiteLLM
// does not send; the response's plaintext checksum is verified), and the
// plaintext must be UTF-8; it is returned as is (no stripping, unlike AWS
// KMS). Errors never contain the value.
func (d *Decrypter) Decrypt(ctx context.Context, value string) ([]byte, error) {
	if d.resourceName == "" {
		return nil, permanent("Decrypt", "", ErrNoKey.Error(), ErrNoKey, providers.ErrInvalid)
	}
	ct, ok := isLiteLLMBase64(value)
	if !ok {
		return nil, permanent("Decrypt", d.resourceName, "Google KMS requires the encrypted secret to be encoded in base64",
			ErrMalformedValue, providers.ErrInvalid)
	}
	cctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	resp, err := d.api.Decrypt(cctx, &kmspb.DecryptRequest{Name: d.resourceName, Ciphertext: ct, CiphertextCrc32C: crc32c(ct)})
	if err != nil {
		return nil, wrapErr("Decrypt", d.resourceName, err)
	}
	pt := resp.GetPlaintext()
	if resp.GetPlaintextCrc32C() == nil || resp.GetPlaintextCrc32C().GetValue() != crc32c(pt).GetValue() {
		clear(pt)
		return nil, providers.NewError(Provider, "Decrypt", d.resourceName, providers.Retryable,
			&callError{msg: "the Decrypt response failed its CRC32C check", causes: []error{ErrChecksum, providers.ErrUnavailable}})
	}
	if !utf8.Valid(pt) {
		clear(pt)
		return nil, permanent("Decrypt", d.resourceName, "decrypted value is not UTF-8", providers.ErrInvalid)
	}
	return pt, nil
}

// ErrNotInEnvironment: GetSecret found no variable of that name (LiteLLM:
// "Google KMS requires the encrypted secret to be in the environment!").
var ErrNotInEnvironment = errors.New("Google KMS requires the encrypted secret to be in the environment")

// GetSecret is LiteLLM's get_secret(name) for google_kms: the variable
// name must be set (lookup nil means os.LookupEnv) and its value is
// decrypted with Decrypt. Errors name the variable, never its value.
func (d *Decrypter) GetSecret(ctx context.Context, name string, lookup func(string) (string, bool)) ([]byte, error) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	v, ok := lookup(name)
	if !ok {
		return nil, fmt.Errorf("environment variable %s: %w", name, ErrNotInEnvironment)
	}
	pt, err := d.Decrypt(ctx, v)
	if err != nil {
		return nil, fmt.Errorf("environment variable %s: %w", name, err)
	}
	return pt, nil
}
