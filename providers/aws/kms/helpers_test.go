package kms

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/seal"
)

var bg = context.Background()

// sentinel is planted in values; it must never appear in an error.
const sentinel = "sk-SENTINEL-4b1d7c-never-in-errors"

// kmsEnv is one local-kms server with a key (and alias) for the test.
type kmsEnv struct {
	srv    *testenv.LocalKMS
	client *awskms.Client
	keyARN string
	alias  string
}

func startKMS(t *testing.T) *kmsEnv {
	t.Helper()
	srv := testenv.StartLocalKMS(t)
	alias := "alias/keyrelay-test"
	arn := srv.CreateKey(t, alias)
	return &kmsEnv{srv: srv, client: srv.Client(), keyARN: arn, alias: alias}
}

// countingAPI counts calls and can hold or fail them.
type countingAPI struct {
	API
	generate, decrypt atomic.Int64
	// gate, when set, is received from before each call goes through.
	gate chan struct{}
	// fail, when set, replaces the call's outcome.
	fail func(op string) error
}

func (c *countingAPI) GenerateDataKey(ctx context.Context, in *awskms.GenerateDataKeyInput, optFns ...func(*awskms.Options)) (*awskms.GenerateDataKeyOutput, error) {
	c.generate.Add(1)
	if err := c.wait(ctx, "GenerateDataKey"); err != nil {
		return nil, err
	}
	return c.API.GenerateDataKey(ctx, in, optFns...)
}

func (c *countingAPI) Decrypt(ctx context.Context, in *awskms.DecryptInput, optFns ...func(*awskms.Options)) (*awskms.DecryptOutput, error) {
	c.decrypt.Add(1)
	if err := c.wait(ctx, "Decrypt"); err != nil {
		return nil, err
	}
	return c.API.Decrypt(ctx, in, optFns...)
}

func (c *countingAPI) wait(ctx context.Context, op string) error {
	if c.gate != nil {
		select {
		case <-c.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if c.fail != nil {
		return c.fail(op)
	}
	return nil
}

// testSealer builds an envelope Sealer over api sealing under keyID.
func testSealer(t testing.TB, api API, keyID string, cfg ...seal.Config) *seal.Sealer {
	t.Helper()
	c := seal.Config{}
	if len(cfg) > 0 {
		c = cfg[0]
	}
	s, err := NewSealer(api, keyID, c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// encryptLiteLLM encrypts v as a LiteLLM user does (aws kms encrypt, no
// encryption context) and returns the base64 ciphertext.
func encryptLiteLLM(t testing.TB, c *awskms.Client, keyID string, v []byte, ec map[string]string) string {
	t.Helper()
	out, err := c.Encrypt(bg, &awskms.EncryptInput{KeyId: aws.String(keyID), Plaintext: v, EncryptionContext: ec})
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	return base64.StdEncoding.EncodeToString(out.CiphertextBlob)
}

// assertClean fails when err's text (or its %+v / %#v forms) contains the
// sentinel or any of the secrets, raw, base64 or hex.
func assertClean(t testing.TB, err error, secrets ...[]byte) {
	t.Helper()
	if err == nil {
		return
	}
	texts := []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%v", err)}
	secrets = append(secrets, []byte(sentinel))
	for _, s := range secrets {
		if len(s) == 0 {
			continue
		}
		forms := []string{string(s), base64.StdEncoding.EncodeToString(s), hex.EncodeToString(s)}
		for _, text := range texts {
			for _, f := range forms {
				if len(f) >= 8 && strings.Contains(text, f) {
					t.Errorf("error leaks a secret: %q", text)
				}
			}
		}
	}
	for _, text := range texts {
		if strings.Contains(text, "RequestID") || strings.Contains(text, "request id") {
			t.Errorf("error carries request noise: %q", text)
		}
	}
}

func flip(b []byte, i int) []byte {
	out := bytes.Clone(b)
	out[i] ^= 0x01
	return out
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
