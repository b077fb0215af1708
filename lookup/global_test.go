package lookup_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"cloud.google.com/go/kms/apiv1/kmspb"
	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/lookup"
	"github.com/keyrelay/keyrelay/providers/google/kms/kmsfake"
	"github.com/keyrelay/keyrelay/settings"
)

// TestGlobalScope follows LiteLLM's get_secret: hosted_keys sends names to
// the secret manager, others come from the environment only when listed,
// primary_secret_name reads members of one JSON secret, and aws_kms/
// values are decrypted (against the real local-kms) before caching.
func TestGlobalScope(t *testing.T) {
	lk := testenv.StartLocalKMS(t)
	keyARN := lk.CreateKey(t, "lookup-test")
	out, err := lk.Client().Encrypt(context.Background(), &awskms.EncryptInput{KeyId: aws.String(keyARN), Plaintext: []byte("sk-decrypted-by-kms")})
	if err != nil {
		t.Fatal(err)
	}
	kmsValue := "aws_kms/" + base64.StdEncoding.EncodeToString(out.CiphertextBlob)
	env := map[string]string{"ALLOWED_ONE": "env-value-1", "SECRET_NOT_LISTED": "never-served", "ALLOWED_KMS": kmsValue}
	f := newFixture(t, fixtureOptions{noWorker: true, mutate: func(c *settings.Config) {
		c.KeyManagement.HostedKeys = []string{"OPENAI_API_KEY", "KMS_KEY", "litellm/shared/key"}
		c.Keyrelay.Lookup.Environment = []string{"ALLOWED_*"}
		c.Keyrelay.Providers = map[string]map[string]string{"aws_kms": lk.Options()}
		c.Getenv = func(k string) string { return env[k] }
	}})
	for name, v := range map[string]string{"OPENAI_API_KEY": "sk-openai", "KMS_KEY": kmsValue, "litellm/shared/key": "sk-shared", "NOT_HOSTED": "hidden"} {
		if _, err := f.store.Put(f.ctx, putReq(name, v)); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name, path string
		code       int
		value      string
		source     string
		reason     string
	}{
		{"hosted", "/v1/secrets/OPENAI_API_KEY", 200, "sk-openai", "local", ""},
		{"hosted with os.environ/ prefix", "/v1/secrets/os.environ/OPENAI_API_KEY", 200, "sk-openai", "local", ""},
		{"hosted path name", "/v1/secrets/litellm/shared/key", 200, "sk-shared", "local", ""},
		{"aws_kms value decrypted", "/v1/secrets/KMS_KEY", 200, "sk-decrypted-by-kms", "local", ""},
		{"not hosted, in the backend", "/v1/secrets/NOT_HOSTED", 404, "", "", "not in hosted_keys"},
		{"environment, listed", "/v1/secrets/ALLOWED_ONE", 200, "env-value-1", "environment", ""},
		{"environment, listed, aws_kms", "/v1/secrets/ALLOWED_KMS", 200, "sk-decrypted-by-kms", "aws_kms", ""},
		{"environment, not listed", "/v1/secrets/SECRET_NOT_LISTED", 404, "", "", "keyrelay.lookup.environment"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := f.get(tokenGlobal, tc.path)
			if code != tc.code {
				t.Fatalf("%d %v", code, body)
			}
			if tc.code == 200 && (body["value"] != tc.value || body["source"] != tc.source || body["scope"] != "global") {
				t.Fatalf("%v", body)
			}
			reason := fmt.Sprint(body["reason"])
			if tc.reason != "" && !strings.Contains(reason, tc.reason) {
				t.Fatalf("reason %q", reason)
			}
			if strings.Contains(reason, "never-served") || strings.Contains(reason, "hidden") {
				t.Fatalf("reason leaks a value: %v", body)
			}
		})
	}
	// A team token never reaches the global scope.
	if code, _ := f.get(tokenA, "/v1/secrets/OPENAI_API_KEY"); code != 404 {
		t.Fatalf("team token on a global name: %d", code)
	}
}

func TestPrimarySecretName(t *testing.T) {
	f := newFixture(t, fixtureOptions{noWorker: true, mutate: func(c *settings.Config) {
		c.KeyManagement.PrimarySecretName = "litellm-primary"
	}})
	if _, err := f.store.Put(f.ctx, putReq("litellm-primary", `{"OPENAI_API_KEY":"sk-from-primary","PORT":8080}`)); err != nil {
		t.Fatal(err)
	}
	if code, body := f.get(tokenGlobal, "/v1/secrets/OPENAI_API_KEY"); code != 200 || body["value"] != "sk-from-primary" {
		t.Fatalf("%d %v", code, body)
	}
	if code, body := f.get(tokenGlobal, "/v1/secrets/PORT"); code != 200 || body["value"] != "8080" {
		t.Fatalf("%d %v", code, body)
	}
	if code, body := f.get(tokenGlobal, "/v1/secrets/MISSING"); code != 404 || !strings.Contains(body["reason"].(string), "litellm-primary") {
		t.Fatalf("%d %v", code, body)
	}
}

// TestGoogleKMS: with key_management_system google_kms, LiteLLM reads the
// name's environment variable and decrypts it with Cloud KMS (here the
// gRPC fake, through the official client).
func TestGoogleKMS(t *testing.T) {
	fake, err := kmsfake.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	key := "projects/p/locations/global/keyRings/r/cryptoKeys/lookup"
	if _, err := fake.CreateKey(key); err != nil {
		t.Fatal(err)
	}
	enc, err := fake.Encrypt(context.Background(), &kmspb.EncryptRequest{Name: key, Plaintext: []byte("sk-google-kms")})
	if err != nil {
		t.Fatal(err)
	}
	ciphertext := base64.StdEncoding.EncodeToString(enc.Ciphertext)
	env := map[string]string{"GOOGLE_SECRET": ciphertext, "NOT_LISTED": ciphertext}
	f := newFixture(t, fixtureOptions{noWorker: true, mutate: func(c *settings.Config) {
		c.KeyManagementSystem = "google_kms"
		c.Keyrelay.Providers = map[string]map[string]string{"google_kms": {"endpoint": fake.Addr(), "insecure": "true", "resource_name": key}}
		c.Keyrelay.Lookup.Environment = []string{"GOOGLE_*", "UNSET_VAR"}
		c.Getenv = func(k string) string { return env[k] }
	}})
	if code, body := f.get(tokenGlobal, "/v1/secrets/GOOGLE_SECRET"); code != 200 || body["value"] != "sk-google-kms" || body["source"] != "google_kms" {
		t.Fatalf("%d %v", code, body)
	}
	if code, _ := f.get(tokenGlobal, "/v1/secrets/UNSET_VAR"); code != 404 {
		t.Fatalf("unset variable: %d", code)
	}
	// A variable keyrelay.lookup.environment does not list is not read,
	// though it holds a ciphertext Cloud KMS would decrypt.
	if code, body := f.get(tokenGlobal, "/v1/secrets/NOT_LISTED"); code != 404 ||
		!strings.Contains(fmt.Sprint(body["reason"]), "keyrelay.lookup.environment") {
		t.Fatalf("unlisted variable: %d %v", code, body)
	}
}

// countingDecrypter decrypts base64 as the KMS decrypters decode their
// input, and records what it was asked.
type countingDecrypter struct {
	mu    sync.Mutex
	calls []string
}

func (d *countingDecrypter) Decrypt(_ context.Context, v string) ([]byte, error) {
	d.mu.Lock()
	d.calls = append(d.calls, v)
	d.mu.Unlock()
	return base64.StdEncoding.DecodeString(v)
}

// TestGoogleKMSEnvironmentAllowList: under google_kms a global lookup
// reads a variable only when keyrelay.lookup.environment lists it, as
// under aws_kms (the name is LiteLLM's, the variable keyrelay's own
// environment). An unlisted name is not found, and neither the environment
// nor the decrypter is asked for it.
func TestGoogleKMSEnvironmentAllowList(t *testing.T) {
	const name = "AWS_SECRET_ACCESS_KEY"
	tests := map[string]struct {
		environment []string
		found       bool
	}{
		"no list":            {environment: nil},
		"other names listed": {environment: []string{"GOOGLE_*", "OPENAI_API_KEY"}},
		"listed":             {environment: []string{name}, found: true},
		"listed by pattern":  {environment: []string{"AWS_*"}, found: true},
	}
	for tn, tc := range tests {
		t.Run(tn, func(t *testing.T) {
			c := settings.Default()
			c.KeyManagementSystem = "google_kms"
			c.Keyrelay.Lookup.Environment = tc.environment
			var mu sync.Mutex
			read := 0
			c.Getenv = func(k string) string {
				if k != name {
					return ""
				}
				mu.Lock()
				read++
				mu.Unlock()
				return "QUJD" // base64 of "ABC"
			}
			dec := &countingDecrypter{}
			b := &lookup.Backend{Config: c, GoogleKMS: dec, Logger: zap.NewNop()}
			s, err := b.Load(context.Background(), lookup.Scope{Global: true}, name)
			if !tc.found {
				if !errors.Is(err, lookup.ErrNotFound) || !strings.Contains(err.Error(), "keyrelay.lookup.environment") {
					t.Fatalf("Load = %v, %v; want not found naming keyrelay.lookup.environment", s, err)
				}
				if read != 0 || len(dec.calls) != 0 {
					t.Fatalf("an unlisted name read the environment %d times and the decrypter %d times", read, len(dec.calls))
				}
				return
			}
			if err != nil || string(s.Value) != "ABC" || s.Source != "google_kms" {
				t.Fatalf("Load = %+v, %v", s, err)
			}
			if len(dec.calls) != 1 || dec.calls[0] != "QUJD" {
				t.Fatalf("decrypter asked %q", dec.calls)
			}
		})
	}
}
